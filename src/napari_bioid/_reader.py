"""npe2 reader: tomograms (MRC/REC/MAP, OME-Zarr) and coordinate files (CSV/STAR/.coords)."""

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
    suffix = Path(str(path).rstrip("/")).suffix.lower()
    if suffix in MRC_SUFFIXES or suffix == ".zarr":
        return read_tomogram_layer
    if suffix in COORD_SUFFIXES:
        return read_coordinates_layer
    return None


def read_tomogram_layer(path):
    """MRC/REC/MAP or OME-Zarr → image layer; ``scale`` = voxel size in Å (1 if unknown), header in metadata.

    An OME-Zarr image opens lazily at its finest level (``metadata["levels"]`` lists them all).
    """
    from .engine.io import read_volume

    path = Path(str(path[0] if isinstance(path, list) else path).rstrip("/"))
    vol = read_volume(path, check_finite=not str(path).lower().endswith(".zarr"))
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

    The scale (Å per voxel) must match the tomogram's so the points overlay it.
    It comes, in this order, from the file (CSV with both voxel and Å columns;
    STAR with both voxel and centred Å columns, or a pixel-size column), else
    from the open tomogram the file belongs to (``_rlnTomoName`` or a file
    name starting with the layer's name, e.g. ``T_annotations.csv`` for
    ``T``), else from the only voxel size among the open tomograms. When none
    of these exists the points open at scale 1 (voxels) with a warning, never
    silently misplaced.
    """
    from ._layers import table_to_points
    from .engine.io import read_coordinates

    path = Path(path[0] if isinstance(path, list) else path)
    tomogram = _matching_tomogram(path)
    vs_guess = _voxel_size_of(tomogram) if tomogram is not None else None
    shape = tuple(tomogram.data.shape) if tomogram is not None else None
    table = read_coordinates(path, voxel_size=vs_guess, volume_shape=shape)
    voxel_size = _voxel_size_from_file(path, table) or vs_guess
    if voxel_size is None:
        import warnings

        warnings.warn(f"{path.name}: the file gives no voxel size and no open tomogram matches it; the points are shown "
                      "in voxels (scale 1). Open the tomogram first, then the points.", stacklevel=2)
    stem = path.stem.lower()
    role = "truth" if "truth" in stem else "annotations" if "annotation" in stem else "picks"
    data, kwargs, kind = table_to_points(table, voxel_size, name=path.stem, role=role)
    if tomogram is not None:
        kwargs["metadata"].update(tomogram=tomogram.name, shape=list(tomogram.data.shape))
    return [(data, kwargs, kind)]


def _voxel_size_of(layer) -> float | None:
    from ._layers import layer_voxel_size

    return layer_voxel_size(layer.metadata, layer.scale)


def _open_tomograms():
    try:
        import napari
        from napari.layers import Image

        viewer = napari.current_viewer()
    except Exception:
        return []
    if viewer is None:
        return []
    return [l for l in viewer.layers if isinstance(l, Image) and l.ndim == 3]


def _matching_tomogram(path: Path):
    """The open tomogram a point file belongs to: by ``_rlnTomoName``, by file name, or the only one."""
    tomos = _open_tomograms()
    if not tomos:
        return None
    names = set()
    if path.suffix.lower() == ".star":
        try:
            import starfile

            for block in starfile.read(path, always_dict=True).values():
                if hasattr(block, "columns") and "rlnTomoName" in block:
                    names |= set(map(str, block["rlnTomoName"].unique()))
        except Exception:
            pass
    for t in tomos:
        if t.name in names:
            return t
    by_stem = sorted((t for t in tomos if path.stem.startswith(t.name)), key=lambda t: -len(t.name))
    if by_stem:
        return by_stem[0]
    sizes = {_voxel_size_of(t) for t in tomos}
    return tomos[-1] if len(sizes) == 1 and None not in sizes else None


def _voxel_size_from_file(path: Path, table) -> float | None:
    """Å per voxel stated by the file itself, else None."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = pd.read_csv(path, nrows=1000)
        cols = {c.lower(): c for c in raw.columns}
        if "x_a" in cols and "x" in cols:
            x, xa = raw[cols["x"]].to_numpy(float), raw[cols["x_a"]].to_numpy(float)
            ok = x != 0
            if ok.any():
                return float(round((xa[ok] / x[ok]).mean(), 6))
        return None
    if suffix != ".star":
        return None
    import starfile

    for block in starfile.read(path, always_dict=True).values():
        if not hasattr(block, "columns"):
            continue
        for col in ("rlnTomoTiltSeriesPixelSize", "rlnImagePixelSize", "rlnPixelSize"):
            if col in block and len(block):
                return float(block[col].iloc[0])
        # our STAR (and RELION 5's) carries voxel and centred Å columns: Å = (voxel − centre) × size
        for a in "XYZ":
            v, c = f"rlnCoordinate{a}", f"rlnCenteredCoordinate{a}Angst"
            if v in block and c in block:
                x, xa = block[v].to_numpy(float), block[c].to_numpy(float)
                if np.ptp(x) > 0:
                    return float(round(np.polyfit(x, xa, 1)[0], 6))
    return None


__all__ = ["get_reader", "read_tomogram_layer", "read_coordinates_layer", "BioidInputError"]
