"""Sequencing file formats: cycle stacks, CIF and Bustard intensities, FASTA, FASTQ, codebooks.

Arrays
------
* image stack: ``[cycle, channel, y, x]``, channels in the order A, C, G, T
  (an ISS stack may carry a fifth, anchor, channel). Pixel coordinates:
  ``x`` = column, ``y`` = row, in pixels of the stack.
* intensities: float32 ``[cluster, cycle, channel]``.

Formats
-------
* TIFF stacks are written with ``tifffile`` and the axes ``CCYX`` recorded
  in ImageJ-free OME-less metadata (``{"axes": "TCYX", "channels": "ACGT"}``);
  a 4D TIFF without metadata is read as ``[cycle, channel, y, x]`` when its
  second axis has 4 or 5 planes.
* CIF (Illumina cluster intensity files): ``b"CIF"``, version (u8), bytes per
  value (u8), first cycle (u16), number of cycles (u16), clusters (u32), then
  for each cycle and channel all clusters' values (int16 or int8/int32).
* Bustard ``_int.txt``: one cluster per line, ``lane tile x y`` then A C G T
  per cycle, whitespace separated.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write

BASES = "ACGT"
COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


# ------------------------------------------------------------------------------------------ stacks
def validate_stack(stack: np.ndarray, name: str = "stack", channels: Sequence[int] = (4,)) -> np.ndarray:
    """Check a cycle stack ``[cycle, channel, y, x]``; returns it as an array.

    Raises
    ------
    BioidInputError
        Not 4D, a channel count not in ``channels``, empty, or NaN/inf values.
    """
    arr = np.asarray(stack)
    if arr.ndim != 4:
        raise BioidInputError(f"{name}: expected an image stack [cycle, channel, y, x], got {arr.ndim} axes (shape {arr.shape})")
    if arr.shape[1] not in channels:
        raise BioidInputError(f"{name}: expected {' or '.join(map(str, channels))} channels (A, C, G, T) on axis 1, got {arr.shape[1]} "
                              f"(shape {arr.shape}); is the stack [cycle, channel, y, x]?")
    if min(arr.shape) == 0:
        raise BioidInputError(f"{name}: the stack is empty (shape {arr.shape})")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise BioidInputError(f"{name}: the stack holds NaN or infinite values")
    return arr


def write_stack(stack: np.ndarray, path: PathLike, overwrite: bool = False, channels: str = BASES, extra: Optional[dict] = None) -> Path:
    """Write a ``[cycle, channel, y, x]`` stack as TIFF with its axes in the metadata (atomic)."""
    import tifffile

    path = Path(path)
    meta = {"axes": "TCYX", "channels": channels, "shape": list(np.shape(stack)), **(extra or {})}
    with atomic_write(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, np.asarray(stack), description=json.dumps(meta), metadata=None, photometric="minisblack")
    return path


def read_stack(path: PathLike, channels: Sequence[int] = (4, 5)) -> Tuple[np.ndarray, dict]:
    """Read a cycle stack TIFF → (``[cycle, channel, y, x]`` array, metadata dict).

    Our own stacks carry ``{"axes": "TCYX", "channels": "ACGT"}``; other 4D
    TIFFs are taken as ``[cycle, channel, y, x]`` if axis 1 has a valid
    channel count. Raises :class:`BioidInputError` otherwise.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    try:
        with tifffile.TiffFile(path) as tif:
            arr = tif.asarray()
            desc = tif.pages[0].description if tif.pages else ""
    except Exception as exc:
        raise BioidInputError(f"{path}: not a readable TIFF ({exc})") from exc
    meta: dict = {}
    try:
        meta = json.loads(desc) if desc and desc.strip().startswith("{") else {}
    except json.JSONDecodeError:
        meta = {}
    shape = meta.get("shape")
    if shape and arr.ndim != len(shape) and int(np.prod(shape)) == arr.size:
        arr = arr.reshape(shape)
    axes = meta.get("axes")
    # TCYX (ours), CSYX (tifffile's shape metadata for cycle × channel planes)
    if axes and (len(axes) != 4 or axes[2:] != "YX"):
        raise BioidInputError(f"{path}: axes {axes!r}; expected a [cycle, channel, y, x] stack (TCYX)")
    validate_stack(arr, str(path), channels)
    meta.setdefault("channels", BASES if arr.shape[1] == 4 else BASES + "*")
    return arr, meta


# ------------------------------------------------------------------------------------------ intensities
def read_cif(path: PathLike) -> np.ndarray:
    """One CIF file → float32 ``[cluster, cycle, channel]`` (channels A, C, G, T).

    Raises :class:`BioidInputError` on a wrong magic number or a truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    raw = path.read_bytes()
    if len(raw) < 13 or raw[:3] != b"CIF":
        raise BioidInputError(f"{path}: not a CIF file (no 'CIF' header)")
    width = raw[4]  # raw[3] is the format version
    _first, n_cycles = struct.unpack("<HH", raw[5:9])
    (n_clusters,) = struct.unpack("<I", raw[9:13])
    dtype = {1: "<i1", 2: "<i2", 4: "<i4"}.get(width)
    if dtype is None:
        raise BioidInputError(f"{path}: unsupported CIF value width {width}")
    need = 13 + n_cycles * 4 * n_clusters * width
    if len(raw) < need:
        raise BioidInputError(f"{path}: truncated CIF: {len(raw)} bytes, the header announces {need} "
                              f"({n_clusters} clusters × {n_cycles} cycles × 4 channels × {width} bytes)")
    data = np.frombuffer(raw, dtype=dtype, count=n_cycles * 4 * n_clusters, offset=13).reshape(n_cycles, 4, n_clusters)
    return np.ascontiguousarray(data.transpose(2, 0, 1), dtype=np.float32)


def read_cif_cycles(paths: Sequence[PathLike]) -> np.ndarray:
    """Several single-cycle CIF files (one per cycle, in order) → ``[cluster, cycle, channel]``."""
    parts = [read_cif(p) for p in paths]
    n = {p.shape[0] for p in parts}
    if len(n) != 1:
        raise BioidInputError(f"CIF files disagree on the number of clusters: {sorted(n)}")
    return np.concatenate(parts, axis=1)


def read_int_txt(path: PathLike) -> Tuple[np.ndarray, pd.DataFrame]:
    """Bustard ``_int.txt`` → (float32 ``[cluster, cycle, channel]``, table of lane, tile, x, y).

    Raises :class:`BioidInputError` on ragged lines or a column count that is not 4 + 4 × cycles.
    """
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise BioidInputError(f"{path}: no clusters")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or (widths.pop() - 4) % 4 or len(rows[0]) <= 4:
        raise BioidInputError(f"{path}: every line must hold lane tile x y and then 4 values (A C G T) per cycle")
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except ValueError:
        raise BioidInputError(f"{path}: non-numeric values") from None
    pos = pd.DataFrame(arr[:, :4], columns=["lane", "tile", "x", "y"]).astype({"lane": int, "tile": int})
    return arr[:, 4:].reshape(len(arr), -1, 4).astype(np.float32), pos


# ------------------------------------------------------------------------------------------ sequences
def read_fasta(path: PathLike) -> Dict[str, str]:
    """FASTA → {record name: upper-case sequence}. Raises on a missing, empty or sequence-less file."""
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    records: Dict[str, List[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            name = line[1:].split()[0] if len(line) > 1 else f"record{len(records) + 1}"
            records[name] = []
        elif name is None:
            raise BioidInputError(f"{path}: not FASTA (sequence before the first '>' header)")
        else:
            records[name].append(line.upper())
    seqs = {k: "".join(v) for k, v in records.items() if v}
    if not seqs:
        raise BioidInputError(f"{path}: no sequence in the FASTA file")
    return seqs


def reverse_complement(seq: str) -> str:
    return seq.translate(COMPLEMENT)[::-1]


def phred_string(q: np.ndarray) -> str:
    """Phred+33 characters of integer qualities (clipped to 0..93)."""
    return bytes(np.clip(np.asarray(q, dtype=np.int64), 0, 93).astype(np.uint8) + 33).decode("ascii")


def write_fastq(path: PathLike, names: Sequence[str], reads: Sequence[str], quals: np.ndarray, overwrite: bool = False) -> Path:
    """Write reads as FASTQ (Phred+33), atomically. ``quals``: int ``[read, cycle]``."""
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w") as fh:
            for n, r, q in zip(names, reads, quals):
                fh.write(f"@{n}\n{r}\n+\n{phred_string(q[: len(r)])}\n")
    return path


def read_fastq(path: PathLike) -> Tuple[List[str], List[str], List[np.ndarray]]:
    """FASTQ → (names, reads, integer Phred qualities per read)."""
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    lines = path.read_text().splitlines()
    if len(lines) % 4 or not lines:
        raise BioidInputError(f"{path}: not FASTQ (expected 4 lines per read)")
    names, reads, quals = [], [], []
    for i in range(0, len(lines), 4):
        if not lines[i].startswith("@") or not lines[i + 2].startswith("+"):
            raise BioidInputError(f"{path}, line {i + 1}: not a FASTQ record")
        names.append(lines[i][1:].split()[0])
        reads.append(lines[i + 1].strip().upper())
        quals.append(np.frombuffer(lines[i + 3].strip().encode(), np.uint8).astype(np.int64) - 33)
    return names, reads, quals


def read_codebook(path: PathLike) -> Dict[str, str]:
    """Codebook CSV (``Name,Code``; code = one base per cycle) → {barcode: gene}."""
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    df = pd.read_csv(path)
    cols = {c.lower(): c for c in df.columns}
    name, code = cols.get("name") or cols.get("gene"), cols.get("code") or cols.get("barcode")
    if name is None or code is None:
        raise BioidInputError(f"{path}: expected columns Name and Code, got {list(df.columns)}")
    book = {str(c).upper(): str(n) for n, c in zip(df[name], df[code])}
    lengths = {len(c) for c in book}
    if len(lengths) != 1 or not all(set(c) <= set(BASES) for c in book):
        raise BioidInputError(f"{path}: every code must be the same length and use A, C, G, T only")
    return book
