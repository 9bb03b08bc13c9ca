"""Particle coordinate tables: CSV, RELION STAR and DeepETPicker/EMAN text.

In memory every format becomes one :class:`pandas.DataFrame` with the columns
of :data:`COORD_COLUMNS`:

* ``x, y, z`` (float64): voxel coordinates, x = fastest MRC axis, so a pick at
  ``(x, y, z)`` is array element ``volume[z, y, x]``;
* ``class_id`` (int64, 1..K; 1 when the file has no class);
* ``score`` (float64, NaN when the file has none).

Other columns a file carries (class names, angles, ...) are kept. Å columns are
only produced or consumed at the file boundary, with an explicit voxel size.

Formats (chosen by suffix)
--------------------------
``.csv``/``.tsv``
    Named columns ``x,y,z`` (voxels) or ``x_A,y_A,z_A`` (Å), optional
    ``class_id`` (also ``class``/``label``) and ``score``.
``.star``
    RELION: ``_rlnCoordinateX/Y/Z`` (voxels) or RELION 5's
    ``_rlnCenteredCoordinateX/Y/ZAngst`` (Å from the volume centre), optional
    ``_rlnClassNumber`` and ``_rlnAutopickFigureOfMerit``; read with ``starfile``.
``.coords``/``.txt``
    DeepETPicker/EMAN whitespace text: ``x y z``, ``class x y z`` or
    ``class x y z score`` per line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..errors import BioidInputError
from .atomic import PathLike, atomic_write

COORD_COLUMNS = ("x", "y", "z", "class_id", "score")
XYZ = ["x", "y", "z"]
XYZ_A = ["x_A", "y_A", "z_A"]
TEXT_SUFFIXES = (".coords", ".txt", ".box3d")

_CLASS_ALIASES = ("class_id", "class", "label", "classid", "class_number")
_SCORE_ALIASES = ("score", "confidence", "fom")


def empty_table() -> pd.DataFrame:
    """A coordinate table with no rows and the canonical columns."""
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "class_id" else "float64") for c in COORD_COLUMNS})


def make_table(zyx: np.ndarray, class_id=1, score=np.nan, **extra) -> pd.DataFrame:
    """Build a canonical table from an ``(n, 3)`` array of [z, y, x] voxel positions."""
    zyx = np.asarray(zyx, dtype=np.float64).reshape(-1, 3)
    n = len(zyx)
    table = pd.DataFrame(
        {
            "x": zyx[:, 2],
            "y": zyx[:, 1],
            "z": zyx[:, 0],
            "class_id": np.broadcast_to(np.asarray(class_id, dtype=np.int64), (n,)).copy(),
            "score": np.broadcast_to(np.asarray(score, dtype=np.float64), (n,)).copy(),
        }
    )
    for k, v in extra.items():
        table[k] = v
    return table


def table_zyx(table: pd.DataFrame) -> np.ndarray:
    """The ``(n, 3)`` float64 array of [z, y, x] voxel positions of a table."""
    return table[["z", "y", "x"]].to_numpy(dtype=np.float64)


def _finish(table: pd.DataFrame, path) -> pd.DataFrame:
    if len(table) == 0:
        raise BioidInputError(f"{path}: the coordinate table is empty")
    for c in XYZ:
        table[c] = pd.to_numeric(table[c], errors="coerce").astype(np.float64)
    bad = ~np.isfinite(table[XYZ].to_numpy()).all(axis=1)
    if bad.any():
        raise BioidInputError(f"{path}: {bad.sum()} row(s) have missing or non-numeric coordinates (first: row {int(np.argmax(bad)) + 1})")
    if "class_id" not in table:
        table["class_id"] = 1
    cls = pd.to_numeric(table["class_id"], errors="coerce")
    if cls.isna().any() or (cls < 0).any() or (cls != cls.round()).any():
        raise BioidInputError(f"{path}: class ids must be non-negative integers")
    table["class_id"] = cls.astype(np.int64)
    table["score"] = pd.to_numeric(table["score"], errors="coerce").astype(np.float64) if "score" in table else np.nan
    rest = [c for c in table.columns if c not in COORD_COLUMNS]
    return table[list(COORD_COLUMNS) + rest].reset_index(drop=True)


def _rename_aliases(df: pd.DataFrame) -> pd.DataFrame:
    lower = {c: str(c).strip() for c in df.columns}
    df = df.rename(columns=lower)
    mapping = {}
    for c in df.columns:
        key = c.lower().replace(" ", "_")
        if key in ("x", "y", "z"):
            mapping[c] = key
        elif key in ("x_a", "y_a", "z_a", "x_angst", "y_angst", "z_angst"):
            mapping[c] = key[0] + "_A"
        elif key in _CLASS_ALIASES and "class_id" not in mapping.values():
            mapping[c] = "class_id"
        elif key in _SCORE_ALIASES and "score" not in mapping.values():
            mapping[c] = "score"
    return df.rename(columns=mapping)


def _from_angstrom(df: pd.DataFrame, cols: Sequence[str], voxel_size: Optional[float], path) -> pd.DataFrame:
    if voxel_size is None or voxel_size <= 0:
        raise BioidInputError(f"{path}: coordinates are in Å ({', '.join(cols)}) but no voxel size was given to convert them to voxels")
    for c, a in zip(XYZ, cols):
        df[c] = pd.to_numeric(df[a], errors="coerce") / float(voxel_size)
    return df


def _read_csv(path: Path, voxel_size) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tsv" else None
    if not path.read_text(errors="replace").strip():
        raise BioidInputError(f"{path}: the coordinate table is empty")
    try:
        df = pd.read_csv(path, sep=sep, engine="python", comment="#")
    except pd.errors.EmptyDataError:
        raise BioidInputError(f"{path}: the coordinate table is empty") from None
    except Exception as exc:
        raise BioidInputError(f"{path}: not a readable CSV file ({exc})") from exc
    df = _rename_aliases(df)
    if all(c in df for c in XYZ):
        return df
    if all(c in df for c in XYZ_A):
        return _from_angstrom(df, XYZ_A, voxel_size, path)
    raise BioidInputError(
        f"{path}: cannot recognise the coordinate columns {list(df.columns)}; expected x,y,z (voxels) or x_A,y_A,z_A (Å)"
    )


def _read_star(path: Path, voxel_size, volume_shape) -> pd.DataFrame:
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise BioidInputError(f"{path}: not a readable STAR file ({exc})") from exc
    tables = [b for b in blocks.values() if isinstance(b, pd.DataFrame)]
    for df in tables:
        if all(f"rlnCoordinate{a}" in df for a in "XYZ"):
            out = pd.DataFrame({a.lower(): df[f"rlnCoordinate{a}"] for a in "XYZ"})
            break
        if all(f"rlnCenteredCoordinate{a}Angst" in df for a in "XYZ"):
            if volume_shape is None:
                raise BioidInputError(f"{path}: centred Å coordinates need the tomogram's shape to convert to voxels")
            out = _from_angstrom(df.copy(), [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"], voxel_size, path)
            centre = {"x": volume_shape[2] / 2.0, "y": volume_shape[1] / 2.0, "z": volume_shape[0] / 2.0}
            out = pd.DataFrame({c: out[c] + centre[c] for c in XYZ})
            break
    else:
        found = sorted({c for df in tables for c in df.columns})
        raise BioidInputError(f"{path}: no _rlnCoordinateX/Y/Z columns in any data block (found {found})")
    if "rlnClassNumber" in df:
        out["class_id"] = df["rlnClassNumber"].to_numpy()
    if "rlnAutopickFigureOfMerit" in df:
        out["score"] = df["rlnAutopickFigureOfMerit"].to_numpy()
    if "rlnTomoName" in df:
        out["tomo_name"] = df["rlnTomoName"].to_numpy()
    return out


def _read_text(path: Path) -> pd.DataFrame:
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                rows.append([float(v) for v in line.replace(",", " ").split()])
            except ValueError:
                raise BioidInputError(f"{path}, line {lineno}: expected numbers ('class x y z [score]'), got {line!r}") from None
    if not rows:
        raise BioidInputError(f"{path}: the coordinate table is empty")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or widths.pop() not in (3, 4, 5):
        raise BioidInputError(f"{path}: every line must hold 'x y z', 'class x y z' or 'class x y z score'")
    arr = np.asarray(rows)
    if arr.shape[1] == 3:
        return pd.DataFrame(arr, columns=XYZ)
    cols = ["class_id", "x", "y", "z", "score"][: arr.shape[1]]
    return pd.DataFrame(arr, columns=cols)


def read_coordinates(path: PathLike, voxel_size: Optional[float] = None, volume_shape: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """Read particle coordinates from CSV, STAR or DeepETPicker/EMAN text into one table.

    Parameters
    ----------
    path : str or Path
    voxel_size : float, optional
        Å per voxel; needed only when the file gives coordinates in Å.
    volume_shape : (Z, Y, X), optional
        Needed only for RELION 5 centred Å coordinates.

    Returns
    -------
    pandas.DataFrame
        Columns ``x, y, z`` (float64, voxels), ``class_id`` (int64), ``score``
        (float64, NaN if absent), then any other columns of the file.

    Raises
    ------
    BioidInputError
        Missing/unreadable file, unrecognised columns, empty table, non-numeric
        coordinates, Å coordinates without a voxel size.
    """
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        table = _read_csv(path, voxel_size)
    elif suffix == ".star":
        table = _read_star(path, voxel_size, volume_shape)
    elif suffix in TEXT_SUFFIXES:
        table = _read_text(path)
    else:
        raise BioidInputError(f"{path}: unknown coordinate format {suffix!r} (expected .csv, .star, .coords or .txt)")
    return _finish(table, path)


def validate_coordinates(table: pd.DataFrame, shape: Sequence[int], name: str = "coordinates") -> None:
    """Raise :class:`BioidInputError` if any pick lies outside a volume of ``shape`` (Z, Y, X).

    A coordinate is inside when ``-0.5 <= c <= size - 0.5`` along each axis.
    """
    if len(table) == 0:
        raise BioidInputError(f"{name}: the coordinate table is empty")
    zyx = table_zyx(table)
    upper = np.asarray(shape, dtype=np.float64) - 0.5
    outside = ((zyx < -0.5) | (zyx > upper)).any(axis=1)
    if outside.any():
        i = int(np.argmax(outside))
        z, y, x = zyx[i]
        raise BioidInputError(
            f"{name}: {int(outside.sum())} of {len(table)} coordinates lie outside the volume "
            f"(x, y, z sizes {shape[2]}, {shape[1]}, {shape[0]}); first: row {i + 1} at x={x:g}, y={y:g}, z={z:g}"
        )


def write_coordinates(
    table: pd.DataFrame,
    path: PathLike,
    voxel_size: Optional[float] = None,
    volume_shape: Optional[Sequence[int]] = None,
    overwrite: bool = False,
    tomo_name: Optional[str] = None,
) -> Path:
    """Write a coordinate table atomically; the format follows the suffix.

    * ``.csv``: ``x,y,z,class_id,score`` in voxels, then ``x_A,y_A,z_A`` when
      ``voxel_size`` (Å) is known, then any extra columns.
    * ``.star``: a RELION ``particles`` block with ``_rlnCoordinateX/Y/Z``
      (voxels), ``_rlnClassNumber``, ``_rlnAutopickFigureOfMerit``, and, when
      the voxel size and ``volume_shape`` are known, RELION 5's
      ``_rlnCenteredCoordinateX/Y/ZAngst``.
    * ``.coords``/``.txt``: DeepETPicker/EMAN ``class x y z score`` lines.

    Raises
    ------
    FileExistsError
        The file exists and ``overwrite`` is false (with ``overwrite`` the old
        file is kept as ``<name>.bak``).
    BioidInputError
        Unknown suffix or a table without x, y, z.
    """
    path = Path(path)
    missing = [c for c in XYZ if c not in table]
    if missing:
        raise BioidInputError(f"cannot write {path}: the table has no {missing} column(s)")
    table = table.copy()
    if "class_id" not in table:
        table["class_id"] = 1
    if "score" not in table:
        table["score"] = np.nan
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".star") + TEXT_SUFFIXES:
        raise BioidInputError(f"cannot write {path}: unknown coordinate format {suffix!r} (use .csv, .star or .coords)")
    with atomic_write(path, overwrite=overwrite) as tmp:
        if suffix == ".csv":
            out = table[list(COORD_COLUMNS)].copy()
            if voxel_size:
                for c, a in zip(XYZ, XYZ_A):
                    out[a] = table[c] * float(voxel_size)
            extra = [c for c in table.columns if c not in COORD_COLUMNS and c not in XYZ_A]
            for c in extra:
                out[c] = table[c]
            out.to_csv(tmp, index=False, float_format="%.6g")
        elif suffix == ".star":
            import starfile

            out = pd.DataFrame(
                {
                    "rlnCoordinateX": table["x"].to_numpy(np.float64),
                    "rlnCoordinateY": table["y"].to_numpy(np.float64),
                    "rlnCoordinateZ": table["z"].to_numpy(np.float64),
                    "rlnClassNumber": table["class_id"].to_numpy(np.int64),
                    "rlnAutopickFigureOfMerit": table["score"].fillna(0).to_numpy(np.float64),
                }
            )
            if voxel_size and volume_shape is not None:
                centre = {"X": volume_shape[2] / 2.0, "Y": volume_shape[1] / 2.0, "Z": volume_shape[0] / 2.0}
                for a in "XYZ":
                    out[f"rlnCenteredCoordinate{a}Angst"] = (out[f"rlnCoordinate{a}"] - centre[a]) * float(voxel_size)
            if tomo_name:
                out.insert(0, "rlnTomoName", tomo_name)
            starfile.write({"particles": out}, tmp, overwrite=True)
        else:
            score = table["score"].to_numpy(np.float64)
            with open(tmp, "w") as fh:
                for cls, x, y, z, s in zip(table["class_id"], table["x"], table["y"], table["z"], score):
                    fh.write(f"{int(cls)} {x:.3f} {y:.3f} {z:.3f}" + ("" if np.isnan(s) else f" {s:.5f}") + "\n")
    return path
