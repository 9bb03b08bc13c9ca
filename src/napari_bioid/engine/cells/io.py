"""Box tables: CSV and GeoJSON (the QuPath convention), with validation.

CSV columns: ``image, x_min, y_min, x_max, y_max`` (px; x = column, y = row),
``score``, ``class``, ``class_probability`` (then, from a classifier, one
``p_<class>`` column per class). GeoJSON: a FeatureCollection of
``Polygon`` features (the box corners, closed ring, px), each with
``properties.objectType = "detection"``, ``classification = {"name": class}``
and ``measurements`` (score, class probability), which QuPath imports as
detection objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write

BOX_COLUMNS = ["image", "x_min", "y_min", "x_max", "y_max", "score", "class", "class_probability"]


def read_boxes(path: PathLike) -> pd.DataFrame:
    """A boxes CSV → DataFrame. Raises :class:`BioidInputError` on missing columns or inverted boxes."""
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise BioidInputError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in ("image", "x_min", "y_min", "x_max", "y_max") if c not in df]
    if missing:
        raise BioidInputError(f"{path}: missing column(s) {missing}; expected {BOX_COLUMNS}")
    bad = (df["x_max"] < df["x_min"]) | (df["y_max"] < df["y_min"])
    if bad.any():
        raise BioidInputError(f"{path}: {int(bad.sum())} box(es) with x_max < x_min or y_max < y_min (first: row {int(np.argmax(bad.to_numpy())) + 1})")
    if "score" not in df:
        df["score"] = 1.0
    return df


def write_boxes(df: pd.DataFrame, path: PathLike, overwrite: bool = False) -> Path:
    """Write a boxes table as CSV (``.csv``) or GeoJSON (``.geojson``/``.json``), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_write(path, overwrite=overwrite) as tmp:
        if suffix == ".csv":
            df[[c for c in BOX_COLUMNS if c in df] + [c for c in df.columns if str(c).startswith("p_")]].to_csv(tmp, index=False, float_format="%.2f")
        elif suffix in (".geojson", ".json"):
            feats = []
            for r in df.to_dict("records"):
                x0, y0, x1, y1 = float(r["x_min"]), float(r["y_min"]), float(r["x_max"]), float(r["y_max"])
                feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
                              "properties": {"objectType": "detection", "image": str(r["image"]),
                                             "classification": {"name": str(r.get("class", "nucleus"))},
                                             "measurements": {"score": float(r["score"]), "class_probability": float(r.get("class_probability", r["score"]))}}})
            Path(tmp).write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
        else:
            raise BioidInputError(f"cannot write {path}: use .csv or .geojson")
    return path


def write_overlay(image: np.ndarray, boxes: pd.DataFrame, path: PathLike, overwrite: bool = False) -> Path:
    """A PNG of the image with its boxes drawn, coloured by class (atomic)."""
    from PIL import Image, ImageDraw

    palette = [(0, 255, 0), (255, 64, 64), (64, 160, 255), (255, 200, 0), (200, 0, 255), (0, 255, 255), (255, 128, 0), (255, 255, 255)]
    names = sorted(boxes["class"].astype(str).unique()) if "class" in boxes and len(boxes) else []
    img = Image.fromarray(np.asarray(image))
    draw = ImageDraw.Draw(img)
    for r in boxes.to_dict("records"):
        colour = palette[names.index(str(r["class"])) % len(palette)] if names else palette[0]
        draw.rectangle([float(r["x_min"]), float(r["y_min"]), float(r["x_max"]), float(r["y_max"])], outline=colour)
    with atomic_write(path, overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)
