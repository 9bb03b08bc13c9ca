"""Conversions between engine tables/volumes and napari layer data (no Qt import).

A points layer of picks holds [z, y, x] voxel coordinates, ``scale`` = the
voxel size in Å on every axis (so it overlays an image layer read with the
same scale), and features ``class_id`` and ``score`` (plus ``source`` =
``model``/``manual`` and ``pick_id`` for picks). Its metadata names what it
belongs to: ``voxel_size`` (Å), ``tomogram`` (layer name), ``shape`` (the
tomogram's [z, y, x] size) and ``class_names``, so that every way of saving it
(the widget's Export, File ▸ Save) writes the same columns.

Roles are told apart by symbol: picks are rings, annotations (hand-clicked
training centres) diamonds, truth (reference coordinates) crosses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from .engine.io.coords import make_table

#: one colour per class id (1-based); background/unknown class 0 is grey
CLASS_COLOURS = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55", "#a2845e", "#8e8e93"]

#: marker symbol per role of a points layer
SYMBOLS = {"picks": "disc", "annotations": "diamond", "truth": "cross"}  # disc with a transparent face: a ring

#: the point-file suffixes the writer knows; a name without one gets ``.csv``
POINT_SUFFIXES = (".csv", ".star", ".coords")


def class_colour(class_id: int) -> str:
    return CLASS_COLOURS[(int(class_id) - 1) % (len(CLASS_COLOURS) - 1)] if class_id >= 1 else CLASS_COLOURS[-1]


def table_to_points(table: pd.DataFrame, voxel_size: Optional[float] = None, name: str = "picks",
                    diameters: Optional[Dict[int, float]] = None, default_diameter: float = 11.0,
                    role: str = "picks", extra_features=("source", "pick_id")) -> tuple:
    """A coordinate table → a napari points ``LayerData`` tuple ``(data, kwargs, "points")``.

    ``role`` (picks, annotations, truth) chooses the symbol; columns of
    ``extra_features`` present in the table become features too.
    """
    zyx = table[["z", "y", "x"]].to_numpy(dtype=float)
    cls = table["class_id"].to_numpy(dtype=int) if "class_id" in table else np.ones(len(table), int)
    score = table["score"].to_numpy(dtype=float) if "score" in table else np.full(len(table), np.nan)
    sizes = np.array([float((diameters or {}).get(int(c), default_diameter)) for c in cls]) if len(cls) else np.zeros(0)
    scale = (voxel_size,) * 3 if voxel_size else (1.0, 1.0, 1.0)
    features = pd.DataFrame({"class_id": cls, "score": score})
    for c in extra_features:
        if c in table:
            features[c] = table[c].to_numpy()
    kwargs = {
        "name": name,
        "scale": scale,
        "size": sizes,
        "features": features,
        "symbol": SYMBOLS.get(role, "disc"),
        # rings: the particle under a pick stays visible
        "face_color": "transparent",
        "border_color": [class_colour(c) for c in cls] if len(cls) else class_colour(1),
        "border_width": 0.15,
        "opacity": 0.9,
        # with a thick slice (viewer.dims margins) each point is drawn as the cut of its sphere
        "projection_mode": "rescale_spherical",
        "metadata": {"voxel_size": voxel_size, "bioid": role},
    }
    return zyx, kwargs, "points"


def points_to_table(data: np.ndarray, features: Optional[pd.DataFrame] = None, extra=("source", "pick_id")) -> pd.DataFrame:
    """Points layer data ([z, y, x] voxels) and features → a coordinate table (``extra`` features kept)."""
    data = np.asarray(data, dtype=float).reshape(-1, 3) if len(data) else np.zeros((0, 3))
    cls: List[int] = [1] * len(data)
    score = np.full(len(data), np.nan)
    more = {}
    if features is not None and len(features) == len(data):
        if "class_id" in features:
            cls = pd.to_numeric(features["class_id"], errors="coerce").fillna(1).astype(int).tolist()
        if "score" in features:
            score = pd.to_numeric(features["score"], errors="coerce").to_numpy(dtype=float)
        more = {c: np.asarray(features[c]) for c in extra if c in features}
    return make_table(data, np.asarray(cls, dtype=np.int64), score, **more)


def layer_voxel_size(metadata: Optional[dict], scale=None) -> Optional[float]:
    """Å per voxel of a layer: its metadata, else its scale when that is not 1."""
    meta = metadata or {}
    if meta.get("voxel_size"):
        return float(meta["voxel_size"])
    if scale is not None and float(scale[-1]) != 1.0:
        return float(scale[-1])
    return None


def with_suffix_for_points(path, default: str = ".csv") -> Path:
    """A file name without a known point-file suffix gets ``default`` (``picks`` → ``picks.csv``)."""
    path = Path(path)
    return path if path.suffix.lower() in POINT_SUFFIXES else path.with_name(path.name + default)


def save_points_layer(path, data, features, metadata: Optional[dict], scale=None, overwrite: bool = True) -> Path:
    """Write a picks/annotations layer as CSV, STAR or .coords: the same columns whoever saves it.

    CSV: ``x,y,z,class_id,score,x_A,y_A,z_A,class_name[,source]``; STAR:
    ``_rlnTomoName``, ``_rlnCoordinateX/Y/Z`` (voxels), class, figure of merit
    and RELION 5's centred Å columns (when the tomogram's shape and voxel
    size are known from the layer's metadata). A name without a suffix gets
    ``.csv``; an existing file is kept as ``<name>.bak``.
    """
    from .engine.io import write_coordinates

    meta = metadata or {}
    table = points_to_table(data, features)
    names = {int(k): v for k, v in (meta.get("class_names") or {}).items()}
    table["class_name"] = [names.get(int(c), f"class{int(c)}") for c in table["class_id"]]
    table = table.drop(columns=[c for c in ("pick_id",) if c in table])
    if "source" in table:  # after class_name: x,y,z,class_id,score,x_A,y_A,z_A,class_name,source
        table["source"] = table.pop("source")
    shape = meta.get("shape")
    return write_coordinates(table, with_suffix_for_points(path), layer_voxel_size(meta, scale),
                             tuple(shape) if shape is not None else None, overwrite=overwrite, tomo_name=meta.get("tomogram"))
