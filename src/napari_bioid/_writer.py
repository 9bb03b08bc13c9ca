"""npe2 writers: a points layer → CSV or RELION STAR (x, y, z in voxels and Å)."""

from __future__ import annotations

from typing import List

from ._layers import save_points_layer


def write_points(path: str, data, attributes: dict) -> List[str]:
    """Write one points layer; the format follows the suffix (.csv or .star; none → .csv).

    The columns are those of the picking widget's Export (class names, the
    tomogram name and RELION 5 centred Å coordinates come from the layer's
    metadata). napari asks before overwriting; an existing file is kept as
    ``<name>.bak``.
    """
    out = save_points_layer(path, data, attributes.get("features"), attributes.get("metadata"), attributes.get("scale"))
    return [str(out)]
