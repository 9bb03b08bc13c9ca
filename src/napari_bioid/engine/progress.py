"""Progress reporting and cancellation for long engine calls.

Every long call (training, sliding-window inference, picking) accepts

* ``progress``: a callable ``progress(done: int, total: int, message: str)``
  called from the worker thread, or ``None``;
* ``cancel``: any object with an ``is_set() -> bool`` method (for instance a
  :class:`threading.Event`), or ``None``. When it is set the call raises
  :class:`~napari_bioid.engine.errors.Cancelled` at the next check point and
  writes nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .errors import Cancelled

ProgressCallback = Callable[[int, int, str], None]


def report(progress: Optional[ProgressCallback], done: int, total: int, message: str = "") -> None:
    """Call ``progress(done, total, message)`` if a callback was given."""
    if progress is not None:
        progress(int(done), int(total), message)


def check_cancel(cancel: Optional[Any]) -> None:
    """Raise :class:`Cancelled` if ``cancel.is_set()`` is true."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled by the user")


class TqdmProgress:
    """A ``progress`` callback drawing a tqdm bar on the terminal (for the CLI)."""

    def __init__(self, desc: str = ""):
        self.desc = desc
        self._bar = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self._bar is None or self._bar.total != total:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=self.desc, unit="step", dynamic_ncols=True)
        self._bar.n = done
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
