"""Average-pool non-maximum suppression and pick pruning.

Reference: DeepETPicker (Liu et al., Nat. Commun. 2024), METHODS.md §1. The
binarised segmentation of each class is average-pooled k times (kernel 5,
stride 1, zero "same" padding), which turns every blob into a hill whose top
is the blob's centre and whose height grows with the blob's volume. Local
maxima (voxels equal to a 3D max-pool of kernel 5 of the pooled volume) above
a floor are candidate centres, scored by their pooled value in [0, 1].

Bounded whatever the network outputs: a plateau of equal maxima (a saturated,
mostly-foreground segmentation of an untrained network) is one candidate at
its centroid, not one per voxel; at most ``max_candidates`` per class are kept
(the highest, with a warning); pruning runs greedily in score order over a
uniform grid, so its memory is linear in the number of candidates.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

#: default cap on the NMS candidates of one class (far above any real particle count of a tomogram)
MAX_CANDIDATES = 50_000

from ..io.coords import empty_table, make_table, table_zyx
from ..progress import ProgressCallback, check_cancel, report


def _box(x: torch.Tensor, kernel: int, op, fill: float) -> torch.Tensor:
    """Reduce every ``kernel``³ cube of a 3D tensor with a binary ``op`` (add or maximum).

    Box filters are separable: one 1D pass per axis, each combining ``kernel``
    shifted views of the input padded with ``fill``. For a sum with zero fill
    this equals ``avg_pool3d(count_include_pad=True)`` × kernel³, for a
    maximum with −inf fill ``max_pool3d`` with "same" padding, at 3·k instead
    of k³ operations per voxel and several times faster than torch's pools on CPU.
    """
    h = kernel // 2
    for axis in range(3):
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = h
        padded = F.pad(x[None], pad, value=fill)[0]
        n = x.shape[axis]
        out = padded.narrow(axis, 0, n).clone()
        for offset in range(1, kernel):
            op(out, padded.narrow(axis, offset, n), out=out)
        x = out
    return x


def avgpool_peaks(mask: np.ndarray, n_pools: int = 6, kernel: int = 5, maxpool_kernel: int = 5, floor: float = 0.1) -> tuple:
    """Candidate centres of the blobs of one binary mask.

    Parameters
    ----------
    mask : bool or float array (Z, Y, X)
        Binarised segmentation of one class.
    n_pools : int
        Number k of average poolings.
    kernel, maxpool_kernel : int
        Odd kernel sizes of the average and max pools.
    floor : float
        Minimum pooled value of a maximum.

    Returns
    -------
    (zyx, score) : int64 (n, 3) voxel positions and float32 (n,) pooled values.
    """
    if kernel % 2 == 0 or maxpool_kernel % 2 == 0:
        raise ValueError("pooling kernels must be odd")
    if not np.any(mask):
        return np.zeros((0, 3), np.int64), np.zeros(0, np.float32)
    # Work on the bounding box of the mask plus the pools' reach: identical result, far less work.
    reach = n_pools * (kernel // 2) + maxpool_kernel // 2 + 1
    nz = [np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    lo = [max(0, int(i[0]) - reach) for i in nz]
    hi = [min(s, int(i[-1]) + 1 + reach) for i, s in zip(nz, mask.shape)]
    sub = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(sub, dtype=np.float32))
        # Zero padding of the crop equals the full volume's: everything within the pools'
        # reach outside the crop is background, or outside the tomogram (zero "same" padding).
        norm = float(kernel**3)
        for _ in range(int(n_pools)):
            x = _box(x, kernel, torch.add, 0.0).div_(norm)
        peaks = (x == _box(x, maxpool_kernel, torch.maximum, float("-inf"))) & (x > floor)
        pooled = x.numpy()
        peaks = peaks.numpy()
    # Neighbouring maxima of equal height form a plateau (a saturated region): one candidate each,
    # at the plateau's centroid, instead of one per voxel.
    lab, n = ndimage.label(peaks, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.float32)
    idx = np.argwhere(peaks)
    comp = lab[peaks] - 1
    counts = np.bincount(comp, minlength=n)
    if counts.max() == 1:  # the usual case: isolated maxima
        zyx = idx
    else:
        sums = np.stack([np.bincount(comp, weights=idx[:, a], minlength=n) for a in range(3)], axis=1)
        zyx = np.rint(sums / counts[:, None]).astype(np.int64)
    score = ndimage.maximum(pooled, lab, index=np.arange(1, n + 1)) if counts.max() > 1 else pooled[peaks]
    return zyx + np.asarray(lo), np.asarray(score, np.float32)


def find_candidates(
    segmentation,
    n_classes: int,
    threshold: float = 0.5,
    n_pools: int = 6,
    kernel: int = 5,
    maxpool_kernel: int = 5,
    floor: float = 0.1,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[Any] = None,
    max_candidates: Optional[int] = MAX_CANDIDATES,
) -> pd.DataFrame:
    """All average-pool maxima of a :class:`~.inference.Segmentation`, per class, unpruned.

    Voxels with foreground probability ≥ ``threshold`` are binarised into
    their class; each class's mask goes through :func:`avgpool_peaks`. A class
    with more than ``max_candidates`` maxima (an untrained or diverged network)
    keeps its highest ``max_candidates`` and a :class:`UserWarning` says so;
    ``None`` keeps all.

    Returns
    -------
    DataFrame
        ``x, y, z`` (voxels), ``class_id``, ``score`` (pooled value), sorted by
        descending score. Filter it with :func:`prune_picks`.
    """
    fg = segmentation.probability >= threshold
    tables = []
    for c in range(1, n_classes + 1):
        check_cancel(cancel)
        report(progress, c - 1, n_classes, f"NMS class {c}")
        zyx, score = avgpool_peaks(fg & (segmentation.class_map == c), n_pools, kernel, maxpool_kernel, floor)
        if max_candidates is not None and len(zyx) > max_candidates:
            warnings.warn(
                f"class {c}: {len(zyx):,} NMS candidates (is the network trained? {float(fg.mean()):.0%} of the tomogram "
                f"is foreground); keeping the {max_candidates:,} highest",
                stacklevel=2,
            )
            top = np.argsort(-score, kind="stable")[:max_candidates]
            zyx, score = zyx[top], score[top]
        if len(zyx):
            tables.append(make_table(zyx, c, score))
    report(progress, n_classes, n_classes, "NMS done")
    if not tables:
        return empty_table()
    return pd.concat(tables, ignore_index=True).sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def prune_picks(candidates: pd.DataFrame, min_score: float = 0.0, distance: Union[float, Dict[int, float], None] = None) -> pd.DataFrame:
    """Drop weak candidates, then keep only the highest among close ones.

    Parameters
    ----------
    candidates : DataFrame
        From :func:`find_candidates` (any order).
    min_score : float
        Candidates with a lower score are dropped (too small a blob).
    distance : float or {class_id: float}, optional
        Greedily, in descending score, a candidate is dropped when an already
        kept pick (of any class) lies closer than its class's distance in
        voxels (METHODS.md default: particle radius + 1). ``None`` keeps all.

    Returns
    -------
    DataFrame of the kept picks, by descending score.
    """
    picks = candidates[candidates["score"] >= min_score].sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    if distance is None or len(picks) < 2:
        return picks
    zyx = table_zyx(picks)
    if isinstance(distance, dict):
        radii = np.array([float(distance.get(int(c), max(distance.values()))) for c in picks["class_id"]])
    else:
        radii = np.full(len(picks), float(distance))
    return picks[greedy_suppress(zyx, radii)].reset_index(drop=True)


def greedy_suppress(zyx: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Greedy distance suppression of points given in priority order.

    Point ``i`` is kept unless an already kept point lies closer than
    ``radii[i]``. Kept points are binned into a uniform grid of cell size
    ``max(radii)``, so each test looks at the 27 neighbouring cells only:
    memory O(n), time O(n × kept points per cell), whatever the density.

    Parameters
    ----------
    zyx : float (n, 3)
        Positions (voxels), highest priority first.
    radii : float (n,)
        Suppression distance of each point (voxels).

    Returns
    -------
    bool (n,) mask of the kept points.
    """
    n = len(zyx)
    kept = np.zeros(n, bool)
    if n == 0:
        return kept
    cell = max(float(np.max(radii)), 1e-6)
    keys = np.floor(zyx / cell).astype(np.int64)
    grid: Dict[tuple, list] = {}
    pts = zyx.tolist()
    offsets = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]
    for i in range(n):
        kz, ky, kx = keys[i].tolist()
        z, y, x = pts[i]
        r2 = float(radii[i]) ** 2
        close = False
        for dz, dy, dx in offsets:
            for j in grid.get((kz + dz, ky + dy, kx + dx), ()):
                pz, py, px = pts[j]
                if (z - pz) ** 2 + (y - py) ** 2 + (x - px) ** 2 < r2:
                    close = True
                    break
            if close:
                break
        if not close:
            kept[i] = True
            grid.setdefault((kz, ky, kx), []).append(i)
    return kept
