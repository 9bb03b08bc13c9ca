"""Chromosome crop collections: listing by case, case-wise splits, classifier input.

Layout of ``../shared/data/chromosomes/karyogram_crops``: one folder per
karyogram case, one sub-folder per chromosome class (1..22, 23 = X, 24 = Y),
crops as TIFF on white, each standing with its short (p) arm up. A crop's
180° rotation is the "down" example. Splits are always by case, never by crop,
so no karyogram contributes to both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BioidInputError
from .karyogram import chromosome_name
from .rotate import foreground_mask, to_grey

#: normalisation of the reference polarity classifier (METHODS.md §2), per channel
MEAN, STD = 0.772, 0.245


@dataclass(frozen=True)
class Crop:
    path: Path
    case: str
    chromosome: str  # "1".."22", "X", "Y" (folder 23/24), or the folder name


def _chromosome_name(folder: str) -> str:
    return chromosome_name(folder) or folder


def list_crops(root, suffixes: Sequence[str] = (".tif", ".tiff", ".png", ".jpg")) -> List[Crop]:
    """All crops under ``root/<case>/<class>/``, sorted.

    Raises
    ------
    BioidInputError
        ``root`` is missing or holds no crops.
    """
    root = Path(root)
    if not root.is_dir():
        raise BioidInputError(f"{root}: no such folder")
    crops = [Crop(p, p.parent.parent.name, _chromosome_name(p.parent.name))
             for p in sorted(root.glob("*/*/*")) if p.suffix.lower() in suffixes]
    if not crops:
        raise BioidInputError(f"{root}: no crops found (expected <case>/<class>/<image>)")
    return crops


def split_by_case(crops: Sequence[Crop], test_fraction: float = 0.3, seed: int = 0) -> Tuple[List[Crop], List[Crop]]:
    """Random case-wise split (the reference's 7:3), reproducible from ``seed``."""
    cases = sorted({c.case for c in crops})
    rng = np.random.default_rng(seed)
    test_cases = set(rng.choice(cases, size=max(1, int(round(test_fraction * len(cases)))), replace=False))
    return [c for c in crops if c.case not in test_cases], [c for c in crops if c.case in test_cases]


def read_image(path, keep_dtype: bool = False) -> np.ndarray:
    """An image file as an array (Pillow; LZW TIFFs need no extra codec).

    ``keep_dtype=False``: grey uint8 (H, W) (RGB averaged). ``keep_dtype=True``:
    the stored values unchanged (for instance-label images).

    Raises
    ------
    BioidInputError
        Missing or unreadable file.
    """
    from PIL import Image

    if not Path(path).is_file():
        raise BioidInputError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            return np.asarray(im).copy() if keep_dtype else to_grey(np.asarray(im.convert("L")))
    except Exception as exc:
        raise BioidInputError(f"{path}: not a readable image ({exc})") from exc


def read_crop(path) -> np.ndarray:
    """A crop as grey uint8 (H, W), see :func:`read_image`."""
    return read_image(path)


def _centred_resize(grey: np.ndarray, half_extent: float, size: int) -> np.ndarray:
    """The ``2·half_extent``-px square centred on the grey crop's centre, white outside it, resized to ``size``² (uint8).

    Pillow's bilinear resampling (area-filtered when shrinking) over a box
    centred exactly on the crop: the crop is padded with white by the same
    amount on opposite sides and the box may start at a half pixel. So the
    result of a crop turned 180° (or mirrored) is exactly the result turned
    (or mirrored): no half-pixel offset tells an upright crop from its turned
    version (issue 15: with integer padding, a crop whose width and square
    differed by an odd number of pixels sat half a pixel left of centre, and
    the 180° flips of training made that offset a label).
    """
    from PIL import Image

    h, w = grey.shape
    py = max(0, int(np.ceil(half_extent - h / 2.0)))
    px = max(0, int(np.ceil(half_extent - w / 2.0)))
    padded = np.pad(grey, ((py, py), (px, px)), constant_values=255) if py or px else grey
    cy, cx = padded.shape[0] / 2.0, padded.shape[1] / 2.0
    box = (cx - half_extent, cy - half_extent, cx + half_extent, cy + half_extent)
    if box == (0.0, 0.0, float(size), float(size)) and padded.shape == (size, size):
        return np.ascontiguousarray(padded)
    return np.asarray(Image.fromarray(padded).resize((size, size), Image.BILINEAR, box=box, reducing_gap=None))


def to_square(upright: np.ndarray, size: int = 224) -> np.ndarray:
    """Pad a grey crop to a white square (centred) and resize it to ``size``² (uint8, bilinear).

    The reference feeds the classifier 224 × 224 squares; padding keeps the
    chromosome's aspect ratio. The square's side is the crop's long side and
    its centre the crop's centre, to the half pixel, so turning the crop 180°
    turns the square 180° exactly (:func:`_centred_resize`). Pillow's
    resampling (area-filtered when shrinking) is used for speed.
    """
    grey = to_grey(upright)
    return _centred_resize(grey, max(grey.shape) / 2.0, size)


def to_canvas(upright: np.ndarray, canvas: int = 72, magnification: float = 3.0) -> np.ndarray:
    """A small grey crop at a fixed magnification, centred on a white ``canvas``² square (uint8).

    The small-crop expert's input (issue 15): unlike :func:`to_square`, the
    crop is not stretched to fill the square, so its size in the canvas keeps
    its size in the image (a 10-px chromosome stays three times smaller than a
    30-px one at ``magnification`` 3). Enlarged bilinearly by
    ``magnification`` (less where that would not fit: then the long side
    fills the canvas), centred to the half pixel so that a crop turned 180°
    gives the canvas turned 180° (:func:`_centred_resize`). ``upright``: grey
    or RGB uint8 (H, W[, 3]).

    Raises
    ------
    BioidInputError
        ``canvas`` < 1 or ``magnification`` ≤ 0.
    """
    if canvas < 1 or not magnification > 0:
        raise BioidInputError(f"canvas must be ≥ 1 px and magnification > 0, got {canvas} and {magnification}")
    grey = to_grey(upright)
    m = min(float(magnification), canvas / max(grey.shape))
    return _centred_resize(grey, canvas / (2.0 * m), canvas)


def trim_to_chromosome(upright: np.ndarray, margin: int = 3) -> Tuple[np.ndarray, int]:
    """``(crop, length)``: the grey crop cut to the chromosome's bounding box plus ``margin`` px, and the box's long side (px).

    The chromosome is :func:`.rotate.foreground_mask` (Otsu's threshold; for
    a two-level image, every pixel darker than the background); a crop
    without foreground is returned whole, with its long side. Where the box
    plus margin leaves the crop, white is added, so the margin is the same on
    all sides (a crop turned 180° gives its cut turned 180°). Makes the
    small-crop expert's routing and input independent of how much white
    margin a lab leaves around its crops (issue 15).
    """
    grey = to_grey(upright)
    ys, xs = np.nonzero(foreground_mask(grey))
    if len(ys) == 0:  # Otsu's threshold is the darker level of a two-level image: take everything darker than the background
        ys, xs = np.nonzero(grey < grey.max())
    if len(ys) == 0:
        return grey, int(max(grey.shape))
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    length = int(max(y1 - y0, x1 - x0) + 1)
    padded = np.pad(grey, margin, constant_values=255) if margin > 0 else grey
    return padded[y0 : y1 + 2 * margin + 1, x0 : x1 + 2 * margin + 1], length


def small_canvas(upright: np.ndarray, max_side: int, margin: int, canvas: int, magnification: float) -> Optional[np.ndarray]:
    """The small-crop expert's uint8 (canvas, canvas) input, or ``None`` when the chromosome is longer than ``max_side`` px.

    :func:`trim_to_chromosome` (``margin`` px), then :func:`to_canvas` at
    ``magnification``; the routing and input of
    :meth:`.polarity.PolarityModel.small_input` (after straightening).
    """
    trimmed, length = trim_to_chromosome(upright, margin)
    return None if length > max_side else to_canvas(trimmed, canvas, magnification)


def normalise(square: np.ndarray, mean: float = MEAN, std: float = STD) -> np.ndarray:
    """float32 (3, H, W) from uint8 (H, W): (v/255 − mean) / std, grey replicated to 3 channels."""
    x = ((np.asarray(square, np.float32) / 255.0 - mean) / std).astype(np.float32)
    return np.repeat(x[None], 3, axis=0)


def to_classifier_input(upright: np.ndarray, size: int = 224, mean: float = MEAN, std: float = STD) -> np.ndarray:
    """Classifier input of one upright crop: float32 (3, size, size), see :func:`to_square`, :func:`normalise`."""
    return normalise(to_square(upright, size), mean, std)
