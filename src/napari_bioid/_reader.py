"""npe2 reader: tomograms (MRC/REC/MAP) and coordinate files (CSV/STAR/.coords)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .engine.errors import BioidInputError
from .engine.io.volumes import MRC_SUFFIXES

COORD_SUFFIXES = (".csv", ".star", ".coords")


def get_reader(path):
    """Return a reader for a single tomogram or coordinate file, else ``None``."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    suffix = Path(path).suffix.lower()
    if suffix in MRC_SUFFIXES:
        return read_tomogram_layer
    if suffix in COORD_SUFFIXES:
        return read_coordinates_layer
    return None


def read_tomogram_layer(path):
    """MRC/REC/MAP → image layer; ``scale`` = voxel size in Å (1 if unknown), header in metadata."""
    from .engine.io import read_volume

    path = Path(path[0] if isinstance(path, list) else path)
    vol = read_volume(path)
    vs = vol.voxel_size
    meta = dict(vol.metadata, voxel_size=vs, path=str(path))
    # contrast from the 0.5–99.5 percentiles of a strided subsample (cheap on memory-mapped tomograms)
    step = max(1, int(round((vol.data.size / 2e6) ** (1 / 3))))
    lo, hi = np.percentile(np.asarray(vol.data[::step, ::step, ::step], dtype=np.float32), [0.5, 99.5])
    kwargs = {"name": path.stem, "scale": (vs or 1.0,) * 3, "metadata": meta, "colormap": "gray"}
    if hi > lo:
        kwargs["contrast_limits"] = (float(lo), float(hi))
    return [(vol.data, kwargs, "image")]


def read_coordinates_layer(path):
    """CSV/STAR/.coords → points layer with ``class_id`` and ``score`` features.

    The scale (Å per voxel) comes from the file when it carries both voxel and
    Å columns, so the points overlay a tomogram read with its voxel size.
    """
    from ._layers import table_to_points
    from .engine.io import read_coordinates

    path = Path(path[0] if isinstance(path, list) else path)
    table = read_coordinates(path)
    voxel_size = _voxel_size_from_table(path, table)
    return [table_to_points(table, voxel_size, name=path.stem)]


def _voxel_size_from_table(path: Path, table) -> float | None:
    if path.suffix.lower() != ".csv":
        return None
    import pandas as pd

    raw = pd.read_csv(path, nrows=1000)
    cols = {c.lower(): c for c in raw.columns}
    if "x_a" in cols and "x" in cols:
        x, xa = raw[cols["x"]].to_numpy(float), raw[cols["x_a"]].to_numpy(float)
        ok = x != 0
        if ok.any():
            return float(round((xa[ok] / x[ok]).mean(), 6))
    return None


__all__ = ["get_reader", "read_tomogram_layer", "read_coordinates_layer", "BioidInputError"]
