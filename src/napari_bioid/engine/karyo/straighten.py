"""Straightening bent chromosomes along their medial axis (for the polarity classifier).

A strongly bent chromosome (a J or C shape) has no good upright angle: its
narrowest projection is not its axis, and the classifier, trained mostly on
straight chromosomes, reads it poorly (issue 15: the most bent 10 % of the
held-out crops held 34 of the 87 polarity errors). Straightening resamples
the image along the chromosome's centre line, the classic pre-processing of
karyotyping pipelines (e.g. Barrett & de Carvalho, *A shape-based approach to
chromosome straightening*, 1998; Sharma et al., *Crowdsourcing for chromosome
segmentation and deep classification*, CVPR Workshops 2017, which straighten
before classifying):

1. the chromosome is the largest dark component (:func:`.rotate.foreground_mask`),
   holes filled;
2. its skeleton (Zhang's thinning, scikit-image) is reduced to the longest
   path, which is extended along its end tangents to the outline;
3. that path, smoothed (Gaussian, σ = half the chromosome's mean half-width),
   is resampled every pixel; at each point the image is sampled along the
   normal, ±(1.5 × the largest half-width + 2) px, bilinearly (scipy), white
   outside the chromosome's own (dilated) mask.

The result is a vertical crop whose rows follow the axis from the path end
nearer the image top to the other, so a chromosome the upright search left
with its p-arm up stays p-arm up. :func:`bend` measures how far a crop is from
straight; the chain straightens only crops above a threshold chosen on
validation cases.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .rotate import foreground_mask, to_grey


def chromosome_mask(image: np.ndarray, threshold: Optional[float] = None) -> np.ndarray:
    """The largest dark component of a crop on white, holes filled: bool (H, W) (all False if none)."""
    from scipy import ndimage as ndi

    mask = foreground_mask(image, threshold)
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return ndi.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


def bend(image: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """How bent an upright chromosome is: the largest distance of its row centroids from their straight-line fit, over its height.

    ``image``: grey uint8 (H, W), chromosome roughly vertical (the upright
    search's output). 0 for a straight chromosome; ~0.1 for the median
    training crop; J/C shapes reach 0.2–0.4. Returns 0 for crops under 5 rows.
    """
    mask = chromosome_mask(image) if mask is None else mask
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) < 5:
        return 0.0
    ys, xs = np.nonzero(mask[rows[0] : rows[-1] + 1])
    counts = np.bincount(ys, minlength=len(rows)).astype(float)
    keep = counts > 0
    cx = np.bincount(ys, weights=xs, minlength=len(rows))[keep] / counts[keep]
    r = np.arange(len(rows), dtype=float)[keep]
    a = np.c_[r, np.ones_like(r)]
    coef, *_ = np.linalg.lstsq(a, cx, rcond=None)
    return float(np.abs(cx - a @ coef).max() / len(rows))


def _longest_path(skel: np.ndarray) -> np.ndarray:
    """Pixel coordinates (K, 2) [y, x] of the longest shortest path through an 8-connected skeleton."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    ys, xs = np.nonzero(skel)
    n = len(ys)
    if n < 2:
        return np.c_[ys, xs].astype(float)
    index = -np.ones(skel.shape, int)
    index[ys, xs] = np.arange(n)
    h, w = skel.shape
    rows, cols, weights = [], [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        y2, x2 = ys + dy, xs + dx
        ok = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
        j = np.full(n, -1)
        j[ok] = index[y2[ok], x2[ok]]
        m = j >= 0
        rows.append(np.flatnonzero(m))
        cols.append(j[m])
        weights.append(np.full(m.sum(), np.hypot(dy, dx)))
    r, c, wt = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
    graph = coo_matrix((np.r_[wt, wt], (np.r_[r, c], np.r_[c, r])), shape=(n, n)).tocsr()
    d0 = dijkstra(graph, indices=0)
    a = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
    da, pred = dijkstra(graph, indices=a, return_predecessors=True)
    b = int(np.argmax(np.where(np.isfinite(da), da, -1)))
    path = [b]
    while path[-1] != a:
        path.append(int(pred[path[-1]]))
    return np.c_[ys[path], xs[path]].astype(float)


def _extend(path: np.ndarray, mask: np.ndarray, look: int) -> np.ndarray:
    """Extend both ends of ``path`` along their tangents (estimated over ``look`` points) until they leave ``mask``."""
    h, w = mask.shape

    def grow(end, before):
        t = end - before
        norm = np.hypot(*t)
        if norm == 0:
            return np.zeros((0, 2))
        t = t / norm
        pts = []
        p = end.copy()
        for _ in range(h + w):
            p = p + t
            y, x = int(round(p[0])), int(round(p[1]))
            if not (0 <= y < h and 0 <= x < w) or not mask[y, x]:
                break
            pts.append(p.copy())
        return np.array(pts).reshape(-1, 2)

    k = min(look, len(path) - 1)
    if k < 1:
        return path
    head = grow(path[0], path[k])[::-1]
    tail = grow(path[-1], path[-1 - k])
    return np.concatenate([head, path, tail])


def straighten(image: np.ndarray, fill: float = 255.0, mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, dict]:
    """Resample a bent chromosome along its medial axis into a vertical crop.

    ``image``: grey or RGB uint8 (H, W[, C]), chromosome dark on white,
    roughly vertical. Returns ``(straight, info)``: grey uint8 (L, 2·r + 1)
    with L the axis length in px and r the sampling half-width, rows running
    from the axis end nearer the top of ``image``; ``info`` has ``length``,
    ``half_width`` (px) and ``bend`` (:func:`bend` of the input). A crop too
    small or too thin to have an axis (under 8 px long) is returned unchanged.
    ``mask``: the crop's :func:`chromosome_mask`, when already computed.
    Method: see the module docstring.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    grey = to_grey(image)
    mask = chromosome_mask(grey) if mask is None else mask
    info = {"length": 0.0, "half_width": 0.0, "bend": bend(grey, mask)}
    if mask.sum() < 16:
        return grey, info
    dist = ndi.distance_transform_edt(mask)
    path = _longest_path(skeletonize(mask))
    if len(path) < 8:
        return grey, info
    half = dist[path[:, 0].astype(int), path[:, 1].astype(int)]
    sigma = max(1.0, 0.5 * float(np.mean(half)))
    path = _extend(path, mask, look=max(2, int(round(2 * sigma))))
    if path[0, 0] > path[-1, 0]:  # run from the end nearer the top
        path = path[::-1]
    smooth = np.c_[ndi.gaussian_filter1d(path[:, 0], sigma, mode="nearest"), ndi.gaussian_filter1d(path[:, 1], sigma, mode="nearest")]
    seg = np.hypot(*np.diff(smooth, axis=0).T)
    s = np.r_[0.0, np.cumsum(seg)]
    length = float(s[-1])
    if length < 8:
        return grey, info
    t = np.arange(0.0, length + 1e-9, 1.0)
    cy, cx = np.interp(t, s, smooth[:, 0]), np.interp(t, s, smooth[:, 1])
    ty, tx = np.gradient(cy), np.gradient(cx)
    norm = np.hypot(ty, tx)
    norm[norm == 0] = 1.0
    ty, tx = ty / norm, tx / norm
    r = int(np.ceil(1.5 * float(half.max()) + 2))
    u = np.arange(-r, r + 1, dtype=float)
    # normal (−tx, ty): for an axis running down the image it points right, so left stays left
    py = cy[:, None] - tx[:, None] * u[None, :]
    px = cx[:, None] + ty[:, None] * u[None, :]
    values = ndi.map_coordinates(grey.astype(np.float32), [py, px], order=1, mode="constant", cval=fill)
    inside = ndi.map_coordinates(ndi.binary_dilation(mask, iterations=2).astype(np.float32), [py, px], order=0, mode="constant", cval=0.0)
    values = np.where(inside > 0.5, values, fill)
    info.update(length=length, half_width=float(half.max()))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8), info


#: keys of a straightening gate (see :func:`straighten_if_bent`)
GATE_KEYS = ("min_bend", "min_elongation", "min_length_ratio")


def gate_measures(upright: np.ndarray, min_bend: float = 0.0) -> Tuple[dict, Optional[np.ndarray]]:
    """What a straightening gate looks at, and the straightened crop.

    Returns ``(measures, straight)``: ``measures`` has ``bend`` (:func:`bend`),
    ``elongation`` (axis length over twice the largest half-width) and
    ``length_ratio`` (axis length over the crop's height); ``straight`` is
    :func:`straighten`'s output. Crops with ``bend`` ≤ ``min_bend`` are not
    straightened (``straight`` None, the other two measures 0), which keeps
    the cost of gating straight crops to one mask.
    """
    grey = to_grey(upright)
    mask = chromosome_mask(grey)
    measures = {"bend": bend(grey, mask), "elongation": 0.0, "length_ratio": 0.0}
    if measures["bend"] <= min_bend:
        return measures, None
    rows = np.flatnonzero(mask.any(axis=1))
    straight, info = straighten(grey, mask=mask)
    if info["length"] <= 0 or len(rows) == 0:
        return measures, None
    measures["elongation"] = info["length"] / max(1e-9, 2.0 * info["half_width"])
    measures["length_ratio"] = info["length"] / float(rows[-1] - rows[0] + 1)
    return measures, straight


def check_gate(gate: Optional[dict]) -> Optional[dict]:
    """A straightening gate as floats under :data:`GATE_KEYS` (``None`` stays ``None``).

    Raises
    ------
    BioidInputError
        ``gate`` lacks one of :data:`GATE_KEYS`.
    """
    from ..errors import BioidInputError

    if gate is None:
        return None
    missing = [k for k in GATE_KEYS if k not in gate]
    if missing:
        raise BioidInputError(f"straightening gate lacks {', '.join(missing)}")
    return {k: float(gate[k]) for k in GATE_KEYS}


def passes(measures: dict, gate: dict):
    """Whether :func:`gate_measures` exceed every threshold of ``gate``.

    ``measures`` may hold scalars (one crop: a bool) or equal-length arrays
    (many crops: a boolean array).
    """
    return ((np.asarray(measures["bend"]) > float(gate["min_bend"]))
            & (np.asarray(measures["elongation"]) > float(gate["min_elongation"]))
            & (np.asarray(measures["length_ratio"]) > float(gate["min_length_ratio"])))


def straighten_if_bent(upright: np.ndarray, gate: Optional[dict]) -> Tuple[np.ndarray, bool]:
    """The crop straightened (:func:`straighten`) if it is long, thin and bent enough, else unchanged (grey).

    ``gate``: ``None`` (never straighten) or a dict with ``min_bend``
    (:func:`bend`), ``min_elongation`` (axis length over twice the largest
    half-width) and ``min_length_ratio`` (axis length over the crop's height);
    a crop is straightened only when it exceeds all three. Short, stubby or
    X-shaped chromosomes (two chromatids apart) have no single axis and come
    out of :func:`straighten` garbled, hence the elongation test. Returns
    ``(image, straightened)``.

    Raises
    ------
    BioidInputError
        ``gate`` lacks one of :data:`GATE_KEYS`.
    """
    grey = to_grey(upright)
    gate = check_gate(gate)
    if gate is None:
        return grey, False
    measures, straight = gate_measures(grey, gate["min_bend"])
    if straight is None or not passes(measures, gate):
        return grey, False
    return straight, True
