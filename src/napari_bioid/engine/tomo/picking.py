"""Picking: sliding-window segmentation → average-pool NMS → pruning.

Reference: DeepETPicker (Liu et al., Nat. Commun. 2024); METHODS.md §1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Set, Union

import numpy as np
import pandas as pd

from ..progress import ProgressCallback, check_cancel
from .config import PickerModel
from .inference import Segmentation, segment, window_starts
from ..io.coords import empty_table
from .nms import MAX_CANDIDATES, find_candidates, prune_picks
from .preprocess import Normalizer

#: default minimum pick score (pooled blob value); calibrated on the DeepFinder toy set
DEFAULT_MIN_SCORE = 0.2
DEFAULT_THRESHOLD = 0.5


def default_distance(model: PickerModel) -> Dict[int, float]:
    """Pruning distance per class: particle radius + 1 voxel (METHODS.md §1)."""
    return {c.class_id: c.radius + 1.0 for c in model.config.classes}


@dataclass
class PickResult:
    """Picks plus what is needed to re-filter them without re-running the network.

    Hand edits survive re-filtering: :meth:`apply_edits` records, from the
    picks as a user left them, which model picks were deleted and which were
    added or moved by hand; :meth:`refilter` then returns the model's picks
    under the new settings without the deleted ones, plus the hand-made ones.

    Attributes
    ----------
    picks : DataFrame
        ``x, y, z`` (voxels), ``class_id``, ``score``, ``source`` (``model``
        or ``manual``), ``pick_id`` (the candidate's row, −1 for manual picks):
        the current picks.
    candidates : DataFrame
        All NMS maxima above the floor, before pruning (``pick_id`` = row).
    segmentation : Segmentation or None
        None when picked slab by slab (:func:`pick_chunked`).
    skipped : str or None
        Why NMS was skipped (see ``max_foreground`` of :func:`pick`), else None.
    manual : DataFrame
        Picks added or moved by hand (``source = manual``, no score).
    deleted : set of int
        ``pick_id`` of model picks the user deleted (or moved: the moved copy
        is in ``manual``).
    """

    picks: pd.DataFrame
    candidates: pd.DataFrame
    segmentation: Optional[Segmentation]
    model: PickerModel
    skipped: Optional[str] = None
    manual: pd.DataFrame = field(default_factory=lambda: _with_source(empty_table(), "manual"))
    deleted: Set[int] = field(default_factory=set)

    def __post_init__(self):
        if "pick_id" not in self.candidates:
            self.candidates = self.candidates.assign(pick_id=np.arange(len(self.candidates), dtype=np.int64))

    def refilter(self, min_score: float = DEFAULT_MIN_SCORE, distance: Union[float, Dict[int, float], None] = None) -> pd.DataFrame:
        """Prune the stored candidates again with new settings (milliseconds), keeping hand edits.

        Pruning runs over all candidates (a deleted pick still suppresses its
        weaker neighbours: they belong to the same blob); deleted picks are
        then removed and the manual ones appended.
        """
        kept = prune_picks(self.candidates, min_score, default_distance(self.model) if distance is None else distance)
        kept = _with_source(kept[~kept["pick_id"].isin(self.deleted)], "model")
        self.picks = pd.concat([kept, self.manual], ignore_index=True) if len(self.manual) else kept.reset_index(drop=True)
        return self.picks

    def apply_edits(self, shown: pd.DataFrame, tolerance: float = 1e-3) -> None:
        """Record the user's edits of the picks last returned by :meth:`refilter`.

        ``shown``: the picks as the user left them (``x, y, z, class_id``, and
        ``pick_id`` from :attr:`picks`; rows without one, or −1, were added by
        hand). A model pick that is missing was deleted; one moved by more
        than ``tolerance`` voxels or given another class becomes a manual pick.
        """
        before = set(self.picks.loc[self.picks["source"] == "model", "pick_id"].astype(int)) if "source" in self.picks else set()
        ids = shown["pick_id"].fillna(-1).astype(int).to_numpy() if "pick_id" in shown else np.full(len(shown), -1)
        cand = self.candidates.set_index("pick_id")
        is_model = ids >= 0
        edited = np.zeros(len(shown), bool)
        if is_model.any():
            orig = cand.loc[ids[is_model]]
            moved = np.abs(orig[["x", "y", "z"]].to_numpy() - shown.loc[is_model, ["x", "y", "z"]].to_numpy()).max(axis=1) > tolerance
            reclassed = orig["class_id"].to_numpy() != shown.loc[is_model, "class_id"].to_numpy()
            edited[np.flatnonzero(is_model)] = moved | reclassed
        self.deleted |= before - set(ids[is_model & ~edited].tolist())
        manual = shown.loc[~is_model | edited, ["x", "y", "z", "class_id"]].copy()
        manual["score"] = np.nan
        self.manual = _with_source(manual.reset_index(drop=True), "manual")
        self.picks = pd.concat([_with_source(shown.loc[is_model & ~edited, ["x", "y", "z", "class_id", "score", "pick_id"]], "model"),
                                self.manual], ignore_index=True)


def export_table(result: PickResult) -> pd.DataFrame:
    """The picks as written to files: ``x, y, z, class_id, score`` plus ``class_name`` (no ``pick_id``/``source``)."""
    picks = result.picks.drop(columns=["pick_id", "source"], errors="ignore")
    names = {c.class_id: c.name for c in result.model.config.classes}
    picks["class_name"] = picks["class_id"].map(names)
    return picks


def _with_source(table: pd.DataFrame, source: str) -> pd.DataFrame:
    table = table.copy()
    table["source"] = source
    if "pick_id" not in table or source == "manual":
        table["pick_id"] = -1
    table["pick_id"] = table["pick_id"].astype(np.int64)
    return table


def pick(
    volume: np.ndarray,
    model: PickerModel,
    threshold: float = DEFAULT_THRESHOLD,
    min_score: float = DEFAULT_MIN_SCORE,
    distance: Union[float, Dict[int, float], None] = None,
    n_pools: Optional[int] = None,
    batch_size: int = 4,
    pad_size: Optional[int] = None,
    device: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[Any] = None,
    normalizer: Optional[Normalizer] = None,
    max_foreground: Optional[float] = None,
    max_candidates: Optional[int] = MAX_CANDIDATES,
    skip_flat: Optional[float] = None,
    precision: str = "float32",
) -> PickResult:
    """Pick particles in a tomogram.

    Parameters
    ----------
    volume : array (Z, Y, X)
        Raw tomogram (any real dtype; may be memory-mapped).
    model : PickerModel
    threshold : float
        Foreground probability at which the segmentation is binarised (0.5).
    min_score : float
        Minimum pooled blob value of a pick (see :mod:`.nms`).
    distance : float or {class_id: float}, optional
        Pruning distance in voxels; default particle radius + 1 per class.
    n_pools : int, optional
        Average-pool repetitions k; default max diameter / 4 + 1.
    batch_size, pad_size, device, progress, cancel, skip_flat, precision
        See :func:`.inference.segment`.
    max_foreground : float, optional
        When more than this fraction of the tomogram is foreground (an
        untrained network), skip NMS and return no picks, with the reason in
        ``result.skipped`` (used by validation during training).
    max_candidates : int or None
        Cap on the NMS candidates per class (see :func:`.nms.find_candidates`).

    Returns
    -------
    PickResult
        ``picks`` has columns ``x, y, z`` (voxels; x = fastest axis),
        ``class_id``, ``score``.

    Raises
    ------
    Cancelled
        When ``cancel`` is set.
    """
    n_classes = model.config.n_classes
    blocks_total = [0]

    def seg_progress(done, total, msg):
        blocks_total[0] = total
        if progress is not None:
            progress(done, total + n_classes, msg)

    seg = segment(volume, model, batch_size=batch_size, pad_size=pad_size, device=device, progress=seg_progress, cancel=cancel, normalizer=normalizer,
                  skip_flat=skip_flat, precision=precision)
    check_cancel(cancel)

    def nms_progress(done, total, msg):
        if progress is not None:
            progress(blocks_total[0] + done, blocks_total[0] + total, msg)

    if max_foreground is not None:
        fraction = float(np.count_nonzero(seg.probability >= threshold)) / max(seg.probability.size, 1)
        if fraction > max_foreground:
            empty = empty_table()
            return PickResult(_with_source(empty, "model"), empty, seg, model, skipped=f"{fraction:.0%} of the tomogram is foreground (> {max_foreground:.0%})")
    candidates = find_candidates(seg, n_classes, threshold, n_pools or model.config.n_pools, progress=nms_progress, cancel=cancel,
                                 max_candidates=max_candidates)
    result = PickResult(candidates.iloc[:0], candidates, seg, model)
    result.refilter(min_score, distance)
    return result


def slab_bounds(length: int, block: int, pad: int, min_slices: int) -> list:
    """Cut ``[0, length)`` along z into slabs of whole rows of the sliding-window grid, each ≥ ``min_slices`` thick.

    A slab boundary falls where one row of windows hands over to the next
    (:func:`.inference.window_starts`), so no window is computed twice.
    Returns ``[(z0, z1), ...]`` tiling ``[0, length)``; the last slab may be
    thinner when it is the only one.
    """
    rows = [(k0, k1) for _, k0, k1 in window_starts(length, block, pad)]
    slabs = []
    for k0, k1 in rows:
        if slabs and slabs[-1][1] - slabs[-1][0] < min_slices:
            slabs[-1] = (slabs[-1][0], k1)
        else:
            slabs.append((k0, k1))
    if len(slabs) > 1 and slabs[-1][1] - slabs[-1][0] < min_slices:  # a thin last slab joins the one before
        last = slabs.pop()
        slabs[-1] = (slabs[-1][0], last[1])
    return slabs


def pick_chunked(
    volume: np.ndarray,
    model: PickerModel,
    chunk_slices: int = 64,
    threshold: float = DEFAULT_THRESHOLD,
    min_score: float = DEFAULT_MIN_SCORE,
    distance: Union[float, Dict[int, float], None] = None,
    n_pools: Optional[int] = None,
    batch_size: int = 4,
    pad_size: Optional[int] = None,
    device: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[Any] = None,
    normalizer: Optional[Normalizer] = None,
    max_candidates: Optional[int] = MAX_CANDIDATES,
    probability_out: Optional[np.ndarray] = None,
    skip_flat: Optional[float] = None,
    precision: str = "float32",
) -> PickResult:
    """Pick a tomogram of any size slab by slab, with memory bounded by the slab instead of the tomogram.

    The tomogram (best memory-mapped) is cut along z into slabs of about
    ``chunk_slices`` slices, on the boundaries between rows of the whole
    tomogram's sliding-window grid (:func:`slab_bounds`), so each window is
    computed once, exactly as in the whole tomogram (:func:`.inference.segment`
    ``z_range``). Each slab's average-pool maxima are found with a halo of the
    NMS pools' reach (``n_pools`` · 2 + 3 slices) borrowed from the
    neighbouring slabs, and those whose centre lies in the slab are kept;
    pruning then runs once over all candidates. The picks equal :func:`pick`'s
    (tested), except that a saturated plateau crossing a slab border may give
    one candidate per side. NMS itself runs on pieces of 16 slices with their
    halos. Peak memory: two slabs' probability and class maps
    (2 · slab · Y · X · 5 bytes), the previous slab's tail, the NMS's ~20
    bytes per voxel of one piece with its halos, and one batch of windows.

    Parameters
    ----------
    volume : array (Z, Y, X)
        Raw tomogram (any real dtype; a memory map is read slab by slab).
    chunk_slices : int
        Slices per slab (≥ 1); rounded up to whole rows of windows and to at least the halo.
    probability_out : array-like (Z, Y, X), optional
        Receives the foreground probability slab by slab (a ``np.memmap``, a
        zarr array...); ``result.segmentation`` stays None.
    Other parameters
        As :func:`pick`.

    Returns
    -------
    PickResult
        With ``segmentation`` None.

    Raises
    ------
    ValueError
        ``chunk_slices`` < 1, or a ``probability_out`` of another shape.
    Cancelled
    """
    if chunk_slices < 1:
        raise ValueError(f"chunk_slices must be ≥ 1, got {chunk_slices}")
    if probability_out is not None and tuple(probability_out.shape) != tuple(volume.shape):
        raise ValueError(f"probability_out has shape {tuple(probability_out.shape)}, the tomogram {tuple(volume.shape)}")
    cfg = model.config
    pools = n_pools or cfg.n_pools
    halo = nms_halo(pools)
    norm = normalizer or Normalizer.fit(volume, cfg.normalization, cfg.lowpass_sigma)
    pad = cfg.pad_size if pad_size is None else int(pad_size)
    Z = volume.shape[0]
    slabs = slab_bounds(Z, cfg.block_size, pad, max(chunk_slices, halo))
    tables = []

    def segment_slab(i: int) -> Segmentation:
        c0, c1 = slabs[i]

        def slab_progress(done, total, msg):
            if progress is not None:
                progress(i * 100 + int(100 * done / max(total, 1)), len(slabs) * 100, f"slab {i + 1}/{len(slabs)}: {msg}")

        seg = segment(volume, model, batch_size=batch_size, pad_size=pad, device=device, progress=slab_progress, cancel=cancel,
                      normalizer=norm, z_range=(c0, c1), skip_flat=skip_flat,
                      precision=precision)
        if probability_out is not None:
            probability_out[c0:c1] = seg.probability
        return seg

    # NMS runs on pieces of a slab, each with its halo, so that its float32 pools stay small
    piece = max(NMS_PIECE_SLICES, 1)
    held: Dict[int, tuple] = {}  # slab index → (first slice, Segmentation): the current and next slabs, the previous one's tail
    for i, (c0, c1) in enumerate(slabs):
        check_cancel(cancel)
        # each slab is segmented once; NMS near its borders borrows halo slices from slabs i - 1 and i + 1 (slabs are ≥ halo thick)
        for j in (i, i + 1):
            if j < len(slabs) and j not in held:
                held[j] = (slabs[j][0], segment_slab(j))
        sources = [held[j] for j in (i - 1, i, i + 1) if j in held]
        for p0 in range(c0, c1, piece):
            p1 = min(p0 + piece, c1)
            w0, w1 = max(0, p0 - halo), min(Z, p1 + halo)
            window = _gather(sources, w0, w1)
            cand = find_candidates(window, cfg.n_classes, threshold, pools, max_candidates=max_candidates)
            cand = cand.assign(z=cand["z"] + w0)
            tables.append(cand[(cand["z"] >= p0) & (cand["z"] < p1)])
        held.pop(i - 1, None)
        first, seg = held[i]
        t0 = max(first, c1 - halo)  # keep only the tail the next slab's NMS needs
        held[i] = (t0, Segmentation(seg.probability[t0 - first :].copy(), seg.class_map[t0 - first :].copy()))
        del seg
    if progress is not None:
        progress(len(slabs) * 100, len(slabs) * 100, "pruning")
    return merge_candidates(tables, model, min_score, distance)


#: slices per NMS piece of :func:`pick_chunked` (each with its halo): bounds the NMS's float32 copies
NMS_PIECE_SLICES = 16


def _gather(sources, z0: int, z1: int) -> Segmentation:
    """Slices ``[z0, z1)`` from consecutive (first slice, Segmentation) pieces."""
    prob, cls = [], []
    for first, seg in sources:
        a, b = max(z0, first), min(z1, first + seg.probability.shape[0])
        if b > a:
            prob.append(seg.probability[a - first : b - first])
            cls.append(seg.class_map[a - first : b - first])
    return Segmentation(np.concatenate(prob), np.concatenate(cls))


def nms_halo(n_pools: int) -> int:
    """Slices beyond a slab that its NMS needs: the reach of k average pools and the max pool (kernels 5), see nms.avgpool_peaks."""
    return n_pools * 2 + 2 + 1


def slab_candidates(volume: np.ndarray, model: PickerModel, z0: int, z1: int, normalizer: Normalizer, threshold: float = DEFAULT_THRESHOLD,
                    n_pools: Optional[int] = None, batch_size: int = 4, pad_size: Optional[int] = None, device: Optional[str] = None,
                    max_candidates: Optional[int] = MAX_CANDIDATES) -> pd.DataFrame:
    """The NMS candidates whose centre lies in slices ``[z0, z1)``, computed independently of the other slabs.

    One task of a tomogram split over many workers (:mod:`.batch`): the slab
    and its NMS halo are segmented from the whole tomogram's window grid (the
    halo's windows are computed again by the neighbouring task), so the union
    over a tiling of ``[0, Z)``, merged by :func:`merge_candidates`, equals
    :func:`pick`'s candidates. ``normalizer`` must be the whole tomogram's
    (:meth:`.preprocess.Normalizer.fit`), not the slab's.

    Returns
    -------
    DataFrame
        ``x, y, z`` (voxels of the whole tomogram), ``class_id``, ``score``.
    """
    cfg = model.config
    pools = n_pools or cfg.n_pools
    halo = nms_halo(pools)
    Z = volume.shape[0]
    s0, s1 = max(0, int(z0) - halo), min(Z, int(z1) + halo)
    seg = segment(volume, model, batch_size=batch_size, pad_size=pad_size, device=device, normalizer=normalizer, z_range=(s0, s1))
    cand = find_candidates(seg, cfg.n_classes, threshold, pools, max_candidates=max_candidates)
    cand = cand.assign(z=cand["z"] + s0)
    return cand[(cand["z"] >= z0) & (cand["z"] < z1)]


def merge_candidates(tables, model: PickerModel, min_score: float = DEFAULT_MIN_SCORE,
                     distance: Union[float, Dict[int, float], None] = None) -> PickResult:
    """Join the candidates of the slabs of one tomogram and prune them once (as :func:`pick` does)."""
    # the whole-tomogram order: by score, ties by class then z, y, x (the order find_candidates meets them in)
    candidates = pd.concat(list(tables), ignore_index=True).sort_values(["score", "class_id", "z", "y", "x"],
                                                                       ascending=[False, True, True, True, True],
                                                                       kind="stable").reset_index(drop=True)
    result = PickResult(candidates.iloc[:0], candidates, None, model)
    result.refilter(min_score, distance)
    return result
