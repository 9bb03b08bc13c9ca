"""Phred qualities calibrated on reads aligned to a reference.

A quality table maps predictors of each base call to the empirical error
rate of calls with the same predictors, measured on reads aligned to a
reference (the approach of Ewing & Green's phred, Genome Res. 1998, and of
Illumina's quality tables). The predictors are the chastity of the call and
its cycle: chastity bins are quantiles of the calibration data (8 bins of
equal size, so every bin has enough bases to measure its error), cycles come
in 3 blocks. Each bin's error is (errors + 0.5) / (bases + 1); within a cycle
block the quality is made non-decreasing in chastity (pooling adjacent
violators), so a purer call is never reported worse. A quality is
``−10 log10(error)`` rounded, clipped to 2..41. The table is saved as JSON
with a run and reused by later calls. (A smooth logistic model of the same
predictors was tried first and missed by up to 8 Phred: the error falls too
steeply with chastity for it. 8 × 3 bins held within 2 Phred on held-out
clusters of four simulated tiles over five random splits; 12–24 chastity bins
were noisier.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write

Q_MIN, Q_MAX = 2, 41
N_CHASTITY_BINS = 8
N_CYCLE_BLOCKS = 3


@dataclass
class QualityTable:
    """Calibrated quality per (cycle block, chastity bin).

    Attributes
    ----------
    chastity_edges : float [blocks, bins + 1]
        Bin edges per cycle block (quantiles of that block's calibration
        data; first 0.5, last 1.0).
    cycle_edges : int [blocks + 1]
        First cycle (0-based) of each block, then the number of cycles.
    quality : int [blocks, bins]
    counts, errors : int [blocks, bins]
        Calibration bases and errors behind each bin.
    """

    chastity_edges: np.ndarray = field(default_factory=lambda: np.array([[0.5, 0.6, 0.7, 0.8, 0.9, 1.0]]))
    cycle_edges: np.ndarray = field(default_factory=lambda: np.array([0, 1_000_000]))
    quality: np.ndarray = field(default_factory=lambda: np.array([[5, 10, 15, 20, 30]]))
    counts: np.ndarray = field(default_factory=lambda: np.zeros((1, 5), int))
    errors: np.ndarray = field(default_factory=lambda: np.zeros((1, 5), int))

    def bins(self, chastity: np.ndarray, cycles: np.ndarray):
        kb = np.clip(np.searchsorted(self.cycle_edges, cycles, side="right") - 1, 0, len(self.cycle_edges) - 2)
        cb = np.zeros(np.shape(chastity), np.int64)
        n_bins = self.chastity_edges.shape[1] - 1
        for k in range(self.chastity_edges.shape[0]):
            sel = kb == k
            cb[sel] = np.clip(np.searchsorted(self.chastity_edges[k], chastity[sel], side="right") - 1, 0, n_bins - 1)
        return kb, cb

    def apply(self, chastity: np.ndarray) -> np.ndarray:
        """Phred qualities (int ``[cluster, cycle]``) for chastity ``[cluster, cycle]``."""
        cycles = np.broadcast_to(np.arange(chastity.shape[1]), chastity.shape)
        kb, cb = self.bins(chastity, cycles)
        return self.quality[kb, cb].astype(np.int64)

    def save(self, path: PathLike, overwrite: bool = True) -> Path:
        path = Path(path)
        with atomic_write(path, overwrite=overwrite) as tmp:
            Path(tmp).write_text(json.dumps({"kind": "napari-bioid quality table",
                                             "chastity_edges": np.asarray(self.chastity_edges, float).tolist(),
                                             "cycle_edges": [int(v) for v in self.cycle_edges], "quality": self.quality.tolist(),
                                             "counts": self.counts.tolist(), "errors": self.errors.tolist()}, indent=1))
        return path

    @classmethod
    def load(cls, path: PathLike) -> "QualityTable":
        path = Path(path)
        try:
            d = json.loads(Path(path).read_text())
            return cls(np.atleast_2d(np.asarray(d["chastity_edges"], float)), np.asarray(d["cycle_edges"], int), np.asarray(d["quality"], int),
                       np.asarray(d["counts"], int), np.asarray(d["errors"], int))
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise BioidInputError(f"{path}: not a quality table saved by bioid seq call ({exc})") from exc


def _monotone(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted pool-adjacent-violators: the non-decreasing fit of ``q`` (weights ``w``)."""
    out: list = []
    for v, wt in zip(q, w):
        out.append([float(v), float(max(wt, 1e-9)), 1])
        while len(out) > 1 and out[-2][0] > out[-1][0]:
            v2, w2, n2 = out.pop()
            v1, w1, n1 = out.pop()
            out.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([[v] * n for v, _, n in out])


def calibrate(chastity: np.ndarray, errors: np.ndarray, covered: np.ndarray, n_bins: int = N_CHASTITY_BINS,
              n_blocks: int = N_CYCLE_BLOCKS) -> QualityTable:
    """Fit a :class:`QualityTable` to chastity ``[read, cycle]`` and alignment errors/coverage of aligned reads.

    Raises
    ------
    BioidInputError
        No aligned bases to calibrate on.
    """
    m = np.asarray(covered, bool)
    if m.sum() == 0:
        raise BioidInputError("no aligned bases: cannot calibrate qualities (is the reference right?)")
    T = chastity.shape[1]
    cycle_edges = np.unique(np.rint(np.linspace(0, T, n_blocks + 1)).astype(int))
    cycles = np.broadcast_to(np.arange(T), chastity.shape)
    block = np.clip(np.searchsorted(cycle_edges, cycles[m], side="right") - 1, 0, len(cycle_edges) - 2)
    values = chastity[m]
    edges = np.empty((len(cycle_edges) - 1, n_bins + 1))
    for k in range(len(edges)):
        v = values[block == k]
        inner = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(v) else np.linspace(0.5, 1, n_bins + 1)[1:-1]
        inner = np.maximum.accumulate(np.clip(inner, 0.5, 1.0))
        edges[k] = np.concatenate([[0.5], inner, [1.0 + 1e-9]])
    table = QualityTable(edges, cycle_edges)
    kb, cb = table.bins(values, cycles[m])
    shape = (len(cycle_edges) - 1, n_bins)
    n = np.zeros(shape)
    e = np.zeros(shape)
    np.add.at(n, (kb, cb), 1)
    np.add.at(e, (kb, cb), np.asarray(errors, float)[m])
    q = -10 * np.log10((e + 0.5) / (n + 1))
    for k in range(shape[0]):
        q[k] = _monotone(q[k], np.maximum(n[k], 1))
    table.quality = np.clip(np.rint(q), Q_MIN, Q_MAX).astype(int)
    table.counts, table.errors = n.astype(int), e.astype(int)
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
    """The shipped model (fitted on simulated tiles by ``scripts/train_seq_quality.py``), if present."""
    path = Path(__file__).resolve().parents[2] / "models" / "seq_quality_default.json"
    return QualityTable.load(path) if path.is_file() else None
