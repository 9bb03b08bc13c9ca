"""Atomic, non-destructive file writing.

Nothing the user made is ever lost: an existing file is only replaced when
the caller asks for it (``overwrite=True``), and then the old content is first
kept as ``<name>.bak``. The new content is written to a temporary file in the
same folder and moved into place with :func:`os.replace`, so a crash or a full
disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def prepare_output(path: PathLike, overwrite: bool = False) -> Path:
    """Check that ``path`` may be written; return it as a :class:`Path`.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The parent folder does not exist.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (pass overwrite=True / --overwrite)")
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    return path


@contextlib.contextmanager
def atomic_write(path: PathLike, overwrite: bool = False, backup: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary path to write; moved to ``path`` on success.

    If the body raises, the temporary file is removed and ``path`` is untouched.
    With ``overwrite=True`` and ``backup=True`` an existing ``path`` is copied to
    ``path + '.bak'`` before it is replaced.
    """
    path = prepare_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp
        if path.exists() and backup:
            shutil.copy2(path, path.with_name(path.name + ".bak"))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
