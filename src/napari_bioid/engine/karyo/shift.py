"""Domain-shift test crops: our karyogram crops as another lab's microscope and scanner would give them.

Issue 15: a lab that installs the plugin feeds crops that look different from
the training crops: smaller chromosomes (fewer pixels), softer optics, other
contrast and gamma, sensor noise, JPEG-compressed exports and a grey instead of
a white background. :func:`shift_crop` applies one such change, at a given
strength, to a crop that stands p-arm up; the evaluation then runs the shifted
crop through the whole chain at a random angle exactly as
:func:`.training.build_chain_set` does (so the label, the orientation the chain
left it in, stays known). Levels follow what published karyotyping image sets
span (e.g. crops 30–80 px long at 25–60 % of our size; JPEG quality down to
20). Nothing here is a copy of files: the shifted crops are made on the fly
from the held-out cases of ``../shared/data/chromosomes/karyogram_crops``.
"""

from __future__ import annotations

import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BioidInputError

#: shift kind → the levels evaluated (mild → strong); see :func:`shift_crop` for units
SHIFT_LEVELS: Dict[str, Tuple[float, ...]] = {
    "scale": (0.6, 0.45, 0.3),  # size factor (area-averaged down-sampling)
    "blur": (0.8, 1.5, 2.5),  # Gaussian σ in pixels of the original crop
    "gamma": (0.5, 1.8, 2.5),  # v' = v^γ on [0, 1]
    "contrast": (0.7, 0.5, 0.35),  # darkness scaled about the white background
    "noise": (5.0, 10.0, 18.0),  # Gaussian noise σ in grey levels
    "jpeg": (70.0, 40.0, 20.0),  # JPEG quality
    "background": (230.0, 200.0, 170.0),  # grey level of the background (white = 255)
    "lab": (1.0, 2.0, 3.0),  # several at once, see :func:`shift_crop`
}


def _scale(grey: np.ndarray, factor: float) -> np.ndarray:
    from PIL import Image

    h, w = grey.shape
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    return np.asarray(Image.fromarray(grey).resize(size, Image.BOX))


def _jpeg(grey: np.ndarray, quality: float) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("L")).copy()


def shift_crop(image: np.ndarray, kind: str, level: float, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """One crop as another lab would image it.

    Parameters
    ----------
    image : uint8 (H, W)
        A grey crop, dark chromosome on a white (255) background.
    kind : str
        ``scale`` (size factor, area-averaged), ``blur`` (Gaussian σ, px),
        ``gamma`` (exponent on [0, 1] intensities), ``contrast`` (the darkness
        255 − v multiplied by the level), ``noise`` (Gaussian σ, grey levels),
        ``jpeg`` (quality), ``background`` (the white background becomes this
        grey level; the chromosome's darkness is kept), or ``lab``: level 1, 2
        or 3 of a combination (scale 0.6/0.45/0.3, blur 0.6 px, gamma
        1.3, contrast 0.8, background 235/225/215, noise 4/6/8, JPEG 70/50/35).
    level : float
        The strength, in the kind's unit (:data:`SHIFT_LEVELS` lists the evaluated ones).
    rng : numpy Generator, optional
        For the noise.

    Returns
    -------
    uint8 (H', W')
        The shifted crop (smaller for ``scale`` and ``lab``).

    Raises
    ------
    BioidInputError
        Unknown kind, or a level outside the kind's range.
    """
    from scipy import ndimage as ndi

    rng = rng or np.random.default_rng(0)
    grey = np.asarray(image, np.uint8)
    v = grey.astype(np.float32)
    if kind == "scale":
        if not 0 < level <= 1:
            raise BioidInputError(f"scale level must be in (0, 1], got {level}")
        return _scale(grey, level)
    if kind == "blur":
        v = ndi.gaussian_filter(v, float(level), mode="nearest")
    elif kind == "gamma":
        if level <= 0:
            raise BioidInputError(f"gamma must be positive, got {level}")
        v = 255.0 * (v / 255.0) ** float(level)
    elif kind == "contrast":
        v = 255.0 - (255.0 - v) * float(level)
    elif kind == "noise":
        v = v + rng.normal(0.0, float(level), v.shape)
    elif kind == "jpeg":
        if not 1 <= level <= 100:
            raise BioidInputError(f"JPEG quality must be in 1..100, got {level}")
        return _jpeg(grey, level)
    elif kind == "background":
        v = v * (float(level) / 255.0)
    elif kind == "lab":
        i = int(level) - 1
        if i not in (0, 1, 2):
            raise BioidInputError(f"lab level must be 1, 2 or 3, got {level}")
        out = _scale(grey, (0.6, 0.45, 0.3)[i])
        out = shift_crop(out, "blur", 0.6, rng)
        out = shift_crop(out, "gamma", 1.3, rng)
        out = shift_crop(out, "contrast", 0.8, rng)
        out = shift_crop(out, "background", (235.0, 225.0, 215.0)[i], rng)
        out = shift_crop(out, "noise", (4.0, 6.0, 8.0)[i], rng)
        return _jpeg(out, (70, 50, 35)[i])
    else:
        raise BioidInputError(f"unknown shift {kind!r} (one of {', '.join(SHIFT_LEVELS)})")
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def shift_levels(kinds: Optional[Sequence[str]] = None) -> List[Tuple[str, float]]:
    """``(kind, level)`` pairs of :data:`SHIFT_LEVELS` (all kinds by default)."""
    kinds = list(SHIFT_LEVELS) if kinds is None else list(kinds)
    unknown = [k for k in kinds if k not in SHIFT_LEVELS]
    if unknown:
        raise BioidInputError(f"unknown shifts {unknown} (known: {', '.join(SHIFT_LEVELS)})")
    return [(k, lv) for k in kinds for lv in SHIFT_LEVELS[k]]


#: training augmentation (:func:`random_shift`): kind → (probability, low, high); drawn uniformly in [low, high]
#: (gamma log-uniformly). Wider than the evaluated levels so the test levels lie inside what training saw.
RANDOM_SHIFT: Dict[str, Tuple[float, float, float]] = {
    "scale": (0.6, 0.25, 1.0),
    "blur": (0.4, 0.3, 2.5),
    "gamma": (0.3, 0.45, 2.6),
    "contrast": (0.4, 0.3, 1.0),
    "background": (0.3, 160.0, 250.0),
    "noise": (0.4, 1.0, 18.0),
    "jpeg": (0.3, 20.0, 90.0),
}


#: training augmentation imitating a whole other lab at once (:func:`random_shift` with ``table=RANDOM_LAB``):
#: always smaller (25–70 % of the size) and most other changes together, as the evaluated ``lab`` levels combine them,
#: which independent draws from :data:`RANDOM_SHIFT` rarely do (all seven at once in 0.1 % of the draws).
RANDOM_LAB: Dict[str, Tuple[float, float, float]] = {
    "scale": (1.0, 0.25, 0.7),
    "blur": (0.7, 0.3, 1.5),
    "gamma": (0.6, 0.7, 1.8),
    "contrast": (0.6, 0.5, 1.0),
    "background": (0.7, 180.0, 250.0),
    "noise": (0.8, 1.0, 12.0),
    "jpeg": (0.7, 25.0, 90.0),
}


def random_shift(image: np.ndarray, rng: np.random.Generator,
                 table: Optional[Dict[str, Tuple[float, float, float]]] = None) -> np.ndarray:
    """A random combination of :func:`shift_crop` changes, for training (issue 15).

    Each kind of ``table`` (default :data:`RANDOM_SHIFT`; :data:`RANDOM_LAB`
    for a whole other lab) is applied with its probability, at a strength
    drawn uniformly from its range (gamma log-uniformly), in the order of
    acquisition: scale, blur, gamma, contrast, background, noise, JPEG.
    ``image``: uint8 (H, W) crop standing p-arm up; returns uint8 (H', W').

    Raises
    ------
    BioidInputError
        A kind of ``table`` that :func:`shift_crop` does not know.
    """
    table = RANDOM_SHIFT if table is None else table
    out = np.asarray(image, np.uint8)
    for kind, (p, lo, hi) in table.items():
        if rng.random() >= p:
            continue
        level = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if kind == "gamma" else float(rng.uniform(lo, hi))
        if kind == "jpeg":
            level = round(level)
        if kind == "scale" and min(out.shape) * level < 4:
            continue
        out = shift_crop(out, kind, level, rng)
    return out
