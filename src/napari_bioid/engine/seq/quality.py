"""Phred qualities calibrated on reads aligned to a reference.

A quality table maps predictors of each base call to the empirical error
rate observed for calls with the same predictors (the approach of Illumina's
quality tables and of Ewing & Green's phred, Genome Res. 1998): here the
chastity of the call (10 bins) and the cycle (blocks of 10 cycles). Each bin's
error rate is (mismatches + 1) / (bases + 2) over the aligned pass-filter
reads; within a cycle block the quality is made non-decreasing in chastity
(pooling adjacent violators), so a purer call is never reported worse. A
quality is ``−10 log10(error)`` rounded, clipped to 2..41. The table is saved
as JSON with a run and reused by later calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write

CHASTITY_EDGES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0001)
CYCLE_BLOCK = 10
Q_MIN, Q_MAX = 2, 41


@dataclass
class QualityTable:
    """Calibrated quality per (cycle block, chastity bin).

    Attributes
    ----------
    chastity_edges : list of float
    cycle_block : int
    quality : int [cycle blocks, chastity bins]
    counts : int [cycle blocks, chastity bins]
        Bases behind each bin in the calibration data.
    """

    chastity_edges: List[float] = field(default_factory=lambda: list(CHASTITY_EDGES))
    cycle_block: int = CYCLE_BLOCK
    quality: np.ndarray = field(default_factory=lambda: np.full((1, len(CHASTITY_EDGES) - 1), 20))
    counts: np.ndarray = field(default_factory=lambda: np.zeros((1, len(CHASTITY_EDGES) - 1), int))

    def bins(self, chastity: np.ndarray, cycles: np.ndarray):
        cb = np.clip(np.digitize(chastity, self.chastity_edges) - 1, 0, len(self.chastity_edges) - 2)
        kb = np.clip(cycles // self.cycle_block, 0, self.quality.shape[0] - 1)
        return kb, cb

    def apply(self, chastity: np.ndarray) -> np.ndarray:
        """Qualities for a chastity array ``[cluster, cycle]`` → int ``[cluster, cycle]``."""
        cycles = np.broadcast_to(np.arange(chastity.shape[1]), chastity.shape)
        kb, cb = self.bins(chastity, cycles)
        return self.quality[kb, cb].astype(np.int64)

    def save(self, path: PathLike, overwrite: bool = True) -> Path:
        path = Path(path)
        with atomic_write(path, overwrite=overwrite) as tmp:
            Path(tmp).write_text(json.dumps({"kind": "napari-bioid quality table", "chastity_edges": list(self.chastity_edges),
                                             "cycle_block": self.cycle_block, "quality": self.quality.tolist(),
                                             "counts": self.counts.tolist()}, indent=1))
        return path

    @classmethod
    def load(cls, path: PathLike) -> "QualityTable":
        path = Path(path)
        try:
            d = json.loads(Path(path).read_text())
            return cls(list(d["chastity_edges"]), int(d["cycle_block"]), np.asarray(d["quality"], int), np.asarray(d["counts"], int))
        except (OSError, KeyError, ValueError) as exc:
            raise BioidInputError(f"{path}: not a quality table ({exc})") from exc


def _monotone(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted pool-adjacent-violators: the non-decreasing fit of ``q`` (weights ``w``)."""
    blocks = [[float(v), float(max(wt, 1e-9)), 1] for v, wt in zip(q, w)]
    out: list = []
    for b in blocks:
        out.append(b)
        while len(out) > 1 and out[-2][0] > out[-1][0]:
            v2, w2, n2 = out.pop()
            v1, w1, n1 = out.pop()
            out.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([[v] * n for v, _, n in out])


def calibrate(chastity: np.ndarray, errors: np.ndarray, covered: np.ndarray, min_bases: int = 50) -> QualityTable:
    """Fit a :class:`QualityTable` from chastity ``[read, cycle]`` and alignment errors/coverage of aligned reads.

    Bins with fewer than ``min_bases`` bases borrow the pooled rate of their
    chastity bin over all cycles.

    Raises
    ------
    BioidInputError
        No aligned bases to calibrate on.
    """
    if covered.sum() == 0:
        raise BioidInputError("no aligned bases: cannot calibrate qualities (is the reference right?)")
    T = chastity.shape[1]
    table = QualityTable()
    n_blocks = (T + table.cycle_block - 1) // table.cycle_block
    nb = len(table.chastity_edges) - 1
    table.quality = np.zeros((n_blocks, nb), int)
    cycles = np.broadcast_to(np.arange(T), chastity.shape)
    kb, cb = table.bins(chastity, cycles)
    kb, cb = np.clip(cycles // table.cycle_block, 0, n_blocks - 1), cb
    m = covered
    n = np.zeros((n_blocks, nb))
    e = np.zeros((n_blocks, nb))
    np.add.at(n, (kb[m], cb[m]), 1)
    np.add.at(e, (kb[m], cb[m]), errors[m].astype(float))
    pooled = (e.sum(axis=0) + 1) / (n.sum(axis=0) + 2)
    rate = np.where(n >= min_bases, (e + 1) / (n + 2), pooled[None, :])
    q = -10 * np.log10(rate)
    for k in range(n_blocks):
        q[k] = _monotone(q[k], np.maximum(n[k], 1))
    table.quality = np.clip(np.rint(q), Q_MIN, Q_MAX).astype(int)
    table.counts = n.astype(int)
    return table


def reliability(qualities: np.ndarray, errors: np.ndarray, covered: np.ndarray) -> list:
    """Reported against empirical quality: one dict per reported Phred value (bases, errors, empirical Q)."""
    out = []
    for qv in np.unique(qualities[covered]):
        sel = covered & (qualities == qv)
        n, k = int(sel.sum()), int(errors[sel].sum())
        out.append({"reported": int(qv), "bases": n, "errors": k, "empirical": float(-10 * np.log10((k + 1) / (n + 2)))})
    return out


def default_quality_table() -> Optional[QualityTable]:
    """The shipped table (trained on simulated tiles by ``scripts/train_seq_quality.py``), if present."""
    path = Path(__file__).resolve().parents[2] / "models" / "seq_quality_default.json"
    return QualityTable.load(path) if path.is_file() else None
