"""npe2 writers: a points layer → CSV or RELION STAR (x, y, z in voxels and Å)."""

from __future__ import annotations

from typing import List

from ._layers import points_to_table
from .engine.io import write_coordinates


def _voxel_size(attributes: dict):
    meta = attributes.get("metadata") or {}
    if meta.get("voxel_size"):
        return float(meta["voxel_size"])
    scale = attributes.get("scale")
    if scale is not None and float(scale[-1]) != 1.0:
        return float(scale[-1])
    return None


def write_points(path: str, data, attributes: dict) -> List[str]:
    """Write one points layer; the format follows the suffix (.csv or .star).

    napari asks before overwriting; an existing file is kept as ``<name>.bak``.
    """
    table = points_to_table(data, attributes.get("features"))
    write_coordinates(table, path, voxel_size=_voxel_size(attributes), overwrite=True)
    return [path]
