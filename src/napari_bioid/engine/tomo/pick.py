"""Picking: sliding-window segmentation → average-pool NMS → pruning.

Reference: DeepETPicker (Liu et al., Nat. Commun. 2024); METHODS.md §1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

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

    Attributes
    ----------
    picks : DataFrame
        ``x, y, z`` (voxels), ``class_id``, ``score``: the pruned picks.
    candidates : DataFrame
        All NMS maxima above the floor, before pruning.
    segmentation : Segmentation
    skipped : str or None
        Why NMS was skipped (see ``max_foreground`` of :func:`pick`), else None.
    """

    picks: pd.DataFrame
    candidates: pd.DataFrame
    segmentation: Segmentation
    model: PickerModel
    skipped: Optional[str] = None

    def refilter(self, min_score: float = DEFAULT_MIN_SCORE, distance: Union[float, Dict[int, float], None] = None) -> pd.DataFrame:
        """Prune the stored candidates again with new settings (milliseconds)."""
        self.picks = prune_picks(self.candidates, min_score, default_distance(self.model) if distance is None else distance)
        return self.picks


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
            return PickResult(empty, empty, seg, model, skipped=f"{fraction:.0%} of the tomogram is foreground (> {max_foreground:.0%})")
    candidates = find_candidates(seg, n_classes, threshold, n_pools or model.config.n_pools, progress=nms_progress, cancel=cancel,
                                 max_candidates=max_candidates)
    result = PickResult(candidates.iloc[:0], candidates, seg, model)
    result.refilter(min_score, distance)
    return result
