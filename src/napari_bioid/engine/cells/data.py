"""H&E nucleus data: images, boxes and typed points (MoNuSeg 2018, CRCHistoPhenotypes), at a common pixel size.

* MoNuSeg (40×, 0.2527 µm/px): boxes are the bounding boxes of the instance
  outlines (13 images). For the 17 images with binary masks only, touching
  nuclei are split by a distance-transform watershed (scikit-image) and the
  pieces' bounding boxes used; those images only ever *train* (their boxes
  are approximate); every evaluation uses outlined images.
* CRCHistoPhenotypes (20×, taken as 0.5 µm/px): nucleus centroids with a
  type; a box of the median MoNuSeg nucleus size (7.0 µm, the median of the
  outlined nuclei's box sides) is centred on each.

Everything is resampled to the model's pixel size (default 0.5 µm/px), where
a nucleus is ~14 px across. Images are uint8 RGB ``[y, x, 3]``; boxes float
``[x_min, y_min, x_max, y_max]`` in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..errors import BioidInputError

MONUSEG_UM_PER_PX = 0.2527
CRC_UM_PER_PX = 0.5
DEFAULT_UM_PER_PX = 0.5
NUCLEUS_BOX_UM = 7.0
CRC_CLASSES = ("epithelial", "fibroblast", "inflammatory", "others")


@dataclass
class Sample:
    """One image with its annotations at ``um_per_px``."""

    name: str
    image: np.ndarray
    boxes: np.ndarray  # (n, 4) px
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per box, −1 = unclassified
    um_per_px: float = DEFAULT_UM_PER_PX
    exact: bool = True  # boxes from outlines (True) or from split masks / points (False)


def read_rgb(path) -> np.ndarray:
    """An RGB image → uint8 ``[y, x, 3]``. Raises :class:`BioidInputError` for grey, empty or unreadable images."""
    from PIL import Image

    path = Path(path)
    try:
        img = np.asarray(Image.open(path))
    except Exception as exc:
        raise BioidInputError(f"{path}: not a readable image ({exc})") from exc
    return check_rgb(img, str(path))


def check_rgb(img: np.ndarray, name: str = "image") -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim != 3 or img.shape[2] != 3:
        raise BioidInputError(f"{name}: an RGB (H&E) image is needed, got shape {img.shape}" + (" (a grey image)" if img.ndim == 2 else ""))
    if min(img.shape[:2]) < 8:
        raise BioidInputError(f"{name}: the image is empty or too small ({img.shape[1]} × {img.shape[0]} px)")
    if img.dtype != np.uint8:
        hi = float(img.max()) if img.size else 0.0
        img = np.clip(img.astype(np.float64) * (255.0 / hi if hi > 255 else 1.0), 0, 255).astype(np.uint8)
    return img


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """RGB image scaled by ``factor`` (anti-aliased, ``skimage.transform.rescale``)."""
    if abs(factor - 1.0) < 1e-6:
        return image
    from skimage.transform import rescale

    out = rescale(image, factor, order=1, channel_axis=2, anti_aliasing=factor < 1, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """Bounding boxes (x_min, y_min, x_max, y_max) of every label > 0."""
    from scipy import ndimage

    objs = ndimage.find_objects(labels)
    out = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in objs if s is not None]
    return np.asarray(out, float).reshape(-1, 4)


def split_mask(mask: np.ndarray, min_distance: int = 7) -> np.ndarray:
    """Binary nucleus mask → instance labels, touching nuclei split by a distance-transform watershed."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = mask > 0
    dist = ndimage.distance_transform_edt(mask)
    comps, _ = ndimage.label(mask)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=comps, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask)


def load_monuseg(root, names: Optional[Sequence[str]] = None, um_per_px: float = DEFAULT_UM_PER_PX,
                 include_mask_only: bool = True) -> List[Sample]:
    """MoNuSeg training images → samples at ``um_per_px`` (see the module docstring)."""
    from PIL import Image

    root = Path(root)
    if not (root / "images").is_dir():
        raise BioidInputError(f"{root}: no images/ folder (expected the MoNuSeg layout images/, masks/, instances/)")
    f = MONUSEG_UM_PER_PX / um_per_px
    out = []
    for img_path in sorted((root / "images").glob("*.png")):
        name = img_path.stem
        if names is not None and name not in names:
            continue
        inst = root / "instances" / f"{name}_instances.png"
        if inst.is_file():
            labels, exact = np.asarray(Image.open(inst)).astype(np.int32), True
        elif include_mask_only and (root / "masks" / f"{name}.png").is_file():
            labels, exact = split_mask(np.asarray(Image.open(root / "masks" / f"{name}.png"))), False
        else:
            continue
        boxes = boxes_from_labels(labels) * f
        out.append(Sample(name, resample(read_rgb(img_path), f), boxes, np.zeros(len(boxes), np.int64), um_per_px, exact))
    return out


def load_crc(folder, um_per_px: float = DEFAULT_UM_PER_PX, box_um: float = NUCLEUS_BOX_UM) -> List[Sample]:
    """CRCHistoPhenotypes images with their typed centroids; class index into :data:`CRC_CLASSES`, −1 = unclassified."""
    folder = Path(folder)
    out = []
    f = CRC_UM_PER_PX / um_per_px
    half = box_um / um_per_px / 2
    for csv in sorted(folder.glob("*.csv"), key=lambda p: (len(p.stem), p.stem)):
        png = csv.with_suffix(".png")
        if not png.is_file():
            continue
        df = pd.read_csv(csv)
        xy = df[["x", "y"]].to_numpy(float) * f
        cls = np.array([CRC_CLASSES.index(c) if c in CRC_CLASSES else -1 for c in df["cell_type"]], np.int64)
        boxes = np.concatenate([xy - half, xy + half], axis=1)
        out.append(Sample(csv.stem, resample(read_rgb(png), f), boxes, cls, um_per_px, exact=False))
    if not out:
        raise BioidInputError(f"{folder}: no <image>.png with <image>.csv pairs")
    return out


def box_centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1) if len(boxes) else np.zeros((0, 2))


def split_names(samples: Sequence[Sample], n_val: int, seed: int = 0) -> Tuple[List[str], List[str]]:
    """Hold out ``n_val`` images with exact boxes (by name, seeded)."""
    exact = sorted(s.name for s in samples if s.exact)
    rng = np.random.default_rng(seed)
    val = sorted(rng.choice(exact, n_val, replace=False).tolist())
    return [s.name for s in samples if s.name not in val], val
