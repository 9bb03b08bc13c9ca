"""Upright rotation of chromosome crops by minimum horizontal projection width.

METHODS.md §2: rotate the crop about its centre from 0° to 179° in 1° steps
(canvas expanded, white fill); at each angle measure the horizontal extent of
the chromosome (leftmost to rightmost foreground pixel); the angle with the
smallest width makes the chromosome vertical; rotate counter-clockwise by it.

The search is vectorised: instead of rotating the image 180 times, the
foreground pixel coordinates are projected on the 180 rotated x axes in one
matrix product, which gives exactly the widths the rotated images would have
(up to interpolation), in well under a millisecond per crop.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..errors import BioidInputError


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey (H, W) from grey or RGB(A) input (mean of the colour channels)."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=2)
    if a.ndim != 2:
        raise BioidInputError(f"expected a 2D grey or RGB crop, got shape {np.shape(image)}")
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return a


def background_level(image: np.ndarray) -> float:
    """Grey level of a crop's background: the most frequent grey level (histogram smoothed over 9 levels).

    The background is the crop's one large flat region, so its level is the
    histogram's peak whatever the lab's white level, the noise, or how
    tightly the crop was cut; a white-background crop gives 250–255.
    """
    grey = to_grey(image)
    hist = np.convolve(np.bincount(grey.ravel(), minlength=256).astype(float), np.ones(9), mode="same")
    return float(np.argmax(hist))


#: backgrounds darker than this are brought to white (the training crops' are ≥ 250 for 99 % of them)
GREY_BACKGROUND = 245.0
#: 1st-percentile darkness (255 − grey) of the training crops: 218–250 for 98 % of them, median 238
TRAINING_DARKNESS = 238.0
#: crops fainter than this (1st-percentile darkness) get their darkness stretched to TRAINING_DARKNESS
FAINT_DARKNESS = 200.0


def normalise_crop(image: np.ndarray) -> np.ndarray:
    """The crop brought into the training crops' intensity range (uint8), for the upright search and the classifier.

    1. Background to white: v · 255 / background (:func:`background_level`),
       so another lab's grey background or exposure looks like ours.
    2. A faint crop (darkest 1 % of pixels less than :data:`FAINT_DARKNESS`
       below white; the training crops reach 218–250) has its darkness
       255 − v stretched so that this percentile reaches the training median
       :data:`TRAINING_DARKNESS`: low-contrast or strongly gamma-changed
       images. Crops within the training range are left as they are, so the
       shipped model's in-domain inputs do not change.
    """
    grey = to_grey(image)
    bg = background_level(grey)
    v = grey.astype(np.float32)
    changed = False
    if 0 < bg < GREY_BACKGROUND:
        v = np.minimum(v * (255.0 / bg), 255.0)
        changed = True
    dark = 255.0 - float(np.percentile(v, 1))
    if 0 < dark < FAINT_DARKNESS:
        v = 255.0 - (255.0 - v) * (TRAINING_DARKNESS / dark)
        changed = True
    return np.clip(np.rint(v), 0, 255).astype(np.uint8) if changed else grey


def foreground_mask(image: np.ndarray, threshold: Optional[float] = None) -> np.ndarray:
    """Chromosome pixels of a crop on a white background: darker than ``threshold``.

    Default threshold: Otsu's on the crop, capped at 250 so that faint
    JPEG-like halos of the white background never count.
    """
    grey = to_grey(image)
    if threshold is None:
        from skimage.filters import threshold_otsu

        threshold = min(float(threshold_otsu(grey)) if grey.min() < grey.max() else 250.0, 250.0)
    return grey < threshold


def projection_widths(mask: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Horizontal extent (pixels) of the foreground after a counter-clockwise rotation by each angle.

    ``mask`` (H, W) bool; image convention: row index y grows downwards, so a
    counter-clockwise rotation by θ (as displayed) maps a pixel at (x, y)
    relative to the centre to x' = x·cos θ + y·sin θ.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise BioidInputError("the crop has no foreground (all white)")
    th = np.deg2rad(np.asarray(angles_deg, dtype=float))
    xr = xs[:, None] * np.cos(th)[None, :] + ys[:, None] * np.sin(th)[None, :]
    return xr.max(axis=0) - xr.min(axis=0) + 1.0


def upright_angle(image: np.ndarray, step_deg: float = 1.0, threshold: Optional[float] = None) -> float:
    """Counter-clockwise rotation in degrees, in [0, 180), that makes the chromosome vertical.

    Ties (within 1e-6 px) go to the angle closest to 0° (mod 180).
    """
    angles = np.arange(0.0, 180.0, step_deg)
    widths = projection_widths(foreground_mask(image, threshold), angles)
    best = np.flatnonzero(widths <= widths.min() + 1e-6)
    dist = np.minimum(angles[best], 180.0 - angles[best])
    return float(angles[best[np.argmin(dist)]])


def rotate_image(image: np.ndarray, angle_deg: float, fill: float = 255.0) -> np.ndarray:
    """Rotate a grey uint8 crop counter-clockwise by ``angle_deg``, canvas expanded and filled with ``fill`` (white)."""
    from skimage.transform import rotate

    grey = to_grey(image)
    if angle_deg % 360 == 0:
        return grey.copy()
    if angle_deg % 360 == 180:
        return grey[::-1, ::-1].copy()
    out = rotate(grey.astype(np.float32) / 255.0, angle_deg, resize=True, order=1, mode="constant", cval=float(fill) / 255.0, preserve_range=True)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def make_upright(image: np.ndarray, step_deg: float = 1.0) -> Tuple[np.ndarray, float]:
    """``(upright crop, angle)``: the crop rotated by :func:`upright_angle`, and that angle."""
    angle = upright_angle(image, step_deg)
    return rotate_image(image, angle), angle
