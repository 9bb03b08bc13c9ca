"""Conversions between engine tables/volumes and napari layer data (no Qt import).

A points layer of picks holds [z, y, x] voxel coordinates, ``scale`` = the
voxel size in Å on every axis (so it overlays an image layer read with the
same scale), and features ``class_id`` and ``score``.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from .engine.io.coords import make_table

#: one colour per class id (1-based); background/unknown class 0 is grey
CLASS_COLOURS = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55", "#a2845e", "#8e8e93"]


def class_colour(class_id: int) -> str:
    return CLASS_COLOURS[(int(class_id) - 1) % (len(CLASS_COLOURS) - 1)] if class_id >= 1 else CLASS_COLOURS[-1]


def table_to_points(table: pd.DataFrame, voxel_size: Optional[float] = None, name: str = "picks",
                    diameters: Optional[Dict[int, float]] = None, default_diameter: float = 11.0) -> tuple:
    """A coordinate table → a napari points ``LayerData`` tuple ``(data, kwargs, "points")``."""
    zyx = table[["z", "y", "x"]].to_numpy(dtype=float)
    cls = table["class_id"].to_numpy(dtype=int) if "class_id" in table else np.ones(len(table), int)
    score = table["score"].to_numpy(dtype=float) if "score" in table else np.full(len(table), np.nan)
    sizes = np.array([float((diameters or {}).get(int(c), default_diameter)) for c in cls]) if len(cls) else np.zeros(0)
    scale = (voxel_size,) * 3 if voxel_size else (1.0, 1.0, 1.0)
    kwargs = {
        "name": name,
        "scale": scale,
        "size": sizes,
        "features": pd.DataFrame({"class_id": cls, "score": score}),
        # rings: the particle under a pick stays visible
        "face_color": "transparent",
        "border_color": [class_colour(c) for c in cls] if len(cls) else class_colour(1),
        "border_width": 0.15,
        "opacity": 0.9,
        # with a thick slice (viewer.dims margins) each point is drawn as the cut of its sphere
        "projection_mode": "rescale_spherical",
        "metadata": {"voxel_size": voxel_size, "bioid": "picks"},
    }
    return zyx, kwargs, "points"


def points_to_table(data: np.ndarray, features: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Points layer data ([z, y, x] voxels) and features → a coordinate table."""
    data = np.asarray(data, dtype=float).reshape(-1, 3) if len(data) else np.zeros((0, 3))
    cls: List[int] = [1] * len(data)
    score = np.full(len(data), np.nan)
    if features is not None and len(features) == len(data):
        if "class_id" in features:
            cls = pd.to_numeric(features["class_id"], errors="coerce").fillna(1).astype(int).tolist()
        if "score" in features:
            score = pd.to_numeric(features["score"], errors="coerce").to_numpy(dtype=float)
    return make_table(data, np.asarray(cls, dtype=np.int64), score)
