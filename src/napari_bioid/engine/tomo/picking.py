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
from .inference import Segmentation, segment
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
    segmentation : Segmentation
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
    segmentation: Segmentation
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
    batch_size, pad_size, device, progress, cancel
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

    seg = segment(volume, model, batch_size=batch_size, pad_size=pad_size, device=device, progress=seg_progress, cancel=cancel, normalizer=normalizer)
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
