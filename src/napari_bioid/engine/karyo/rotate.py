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
    """Grey level of a crop's background: the 95th percentile of its pixels.

    The background is the crop's brightest large region, so even a tightly
    cut crop (5 % background) gives its level, whatever the lab's white level;
    a white-background crop gives 255 (99.5 % of the training crops), noise
    biases it up by ~1.6 σ.
    """
    return float(np.percentile(to_grey(image), 95))


#: backgrounds darker than this are brought to white (the training crops' are ≥ 250 for 99 % of them)
GREY_BACKGROUND = 245.0
def background_fill(image: np.ndarray) -> float:
    """The grey level to fill around a rotated crop: its background, or white for a white-background crop."""
    bg = background_level(image)
    return bg if bg < GREY_BACKGROUND else 255.0


def normalise_crop(image: np.ndarray) -> np.ndarray:
    """The crop with a grey background brought to white (uint8): v · 255 / background.

    Another lab's grey background or lower exposure (background darker than
    :data:`GREY_BACKGROUND`, :func:`background_level`) then looks like ours to
    the upright search and the classifier. White-background crops (all of the
    training crops but 1 %) are returned unchanged, and so is a crop whose
    outer frame does not agree with that level (within 15 grey levels).
    Low contrast is not corrected here (left to training with contrast
    augmentation; issue 15).
    """
    grey = to_grey(image)
    bg = background_level(grey)
    if not 0 < bg < GREY_BACKGROUND:
        return grey
    b = max(1, min(2, min(grey.shape) // 2))
    frame = np.concatenate([grey[:b].ravel(), grey[-b:].ravel(), grey[:, :b].ravel(), grey[:, -b:].ravel()])
    if abs(float(np.median(frame)) - bg) > 15:  # the peak is not what surrounds the crop (a tight, blurred crop): leave it
        return grey
    out = np.clip(np.rint(grey.astype(np.float32) * (255.0 / bg)), 0, 255).astype(np.uint8)
    return out if (out < 250).any() else grey  # never normalise the chromosome away


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


def turned_upright(image: np.ndarray, theta: float) -> Tuple[np.ndarray, float]:
    """``(upright crop, angle)`` of a crop first turned by ``theta`` (degrees, counter-clockwise) on its own background.

    The turned crop is brought to a white background (:func:`normalise_crop`)
    and made upright (:func:`make_upright`), as the chain does with a crop
    that arrives at that angle.
    """
    return make_upright(normalise_crop(rotate_image(image, theta, fill=background_fill(image))))
