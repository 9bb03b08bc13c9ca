"""Classical nucleus detection, the baseline the detector is compared with.

Colour deconvolution of H&E (Ruifrok & Johnston 2001, ``skimage.color.rgb2hed``)
→ haematoxylin channel, Gaussian smoothing (σ = 1 px) → Otsu threshold → small
objects removed (< 20 % of a nucleus) → touching nuclei split by a
distance-transform watershed (markers ≥ 0.4 nucleus diameters apart) → one box
per region, scored by its mean haematoxylin (for the precision-recall curve).
Sizes are in µm so the same settings hold at any pixel size.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .data import NUCLEUS_BOX_UM, check_rgb


def classical_nuclei(image: np.ndarray, um_per_px: float) -> Dict[str, np.ndarray]:
    """Boxes (x_min, y_min, x_max, y_max, px), scores and classes (0) of the nuclei of an RGB H&E image."""
    from scipy import ndimage
    from skimage.color import rgb2hed
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    image = check_rgb(image)
    hema = ndimage.gaussian_filter(rgb2hed(image)[..., 0], 1.0)
    mask = hema > threshold_otsu(hema)
    d_px = NUCLEUS_BOX_UM / um_per_px
    mask = remove_small_objects(mask, max_size=max(4, int(0.2 * np.pi * (d_px / 2) ** 2)) - 1)
    dist = ndimage.distance_transform_edt(mask)
    comps, _ = ndimage.label(mask)
    peaks = peak_local_max(dist, min_distance=max(2, int(0.4 * d_px)), labels=comps, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=mask)
    objs = ndimage.find_objects(labels)
    ids = [i + 1 for i, s in enumerate(objs) if s is not None]
    boxes = np.asarray([[objs[i - 1][1].start, objs[i - 1][0].start, objs[i - 1][1].stop, objs[i - 1][0].stop] for i in ids], float).reshape(-1, 4)
    scores = np.asarray(ndimage.mean(hema, labels, ids), float) if ids else np.zeros(0)
    if len(scores) and np.ptp(scores) > 0:
        scores = (scores - scores.min()) / np.ptp(scores)
    return {"boxes": boxes, "scores": scores, "classes": np.zeros(len(boxes), int)}
