"""Reads against a reference, with the edlib aligner (Šošić & Šikić, Bioinformatics 2017).

Each read is aligned to both strands of every reference record in edlib's
infix mode (semi-global: the read end to end, anywhere in the reference), and
the strand with the lower edit distance wins. From the CIGAR each read cycle is
classed as a match, a mismatch or an insertion; deletions are counted per read.
A read is *aligned* when its edit distance is at most ``max_error_rate`` of its
length. Everything per cycle is then a statistic over aligned reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import BioidInputError
from .io import reverse_complement

_CIGAR = re.compile(r"(\d+)([=XIDM])")


@dataclass
class Alignment:
    """Per-read alignment results.

    Attributes
    ----------
    aligned : bool [read]
    edit_distance : int [read] (−1 when not aligned)
    errors : bool [read, cycle]
        True where the read's base is a mismatch or an insertion (aligned reads;
        False elsewhere and beyond a read's length).
    covered : bool [read, cycle]
        True for the cycles of aligned reads.
    reference_base : uint8 [read, cycle]
        The reference base (0..3) the read cycle aligned to (255 for insertions / unaligned).
    strand : list of '+', '-' or ''
    position : int [read]: 0-based start on the forward strand (−1 if not aligned)
    """

    aligned: np.ndarray
    edit_distance: np.ndarray
    errors: np.ndarray
    covered: np.ndarray
    reference_base: np.ndarray
    strand: List[str]
    position: np.ndarray

    def summary(self) -> dict:
        """reads, aligned fraction, error rate (per base of aligned reads), perfect reads, per-cycle error."""
        n = len(self.aligned)
        cov = self.covered.sum(axis=0)
        per_cycle = np.where(cov > 0, self.errors.sum(axis=0) / np.maximum(cov, 1), np.nan)
        n_al = int(self.aligned.sum())
        return {
            "reads": n,
            "aligned": n_al,
            "aligned_fraction": n_al / n if n else 0.0,
            "error_rate": float(self.errors.sum() / max(self.covered.sum(), 1)),
            "perfect_reads": int((self.aligned & (self.edit_distance == 0)).sum()),
            "per_cycle_error": [None if np.isnan(v) else float(v) for v in per_cycle],
        }


def align_reads(reads: Sequence[str], reference: Dict[str, str], max_error_rate: float = 0.2, n_cycles: Optional[int] = None) -> Alignment:
    """Align reads to a reference (both strands) with edlib; see the module docstring.

    Raises
    ------
    BioidInputError
        An empty reference.
    """
    import edlib

    refs = [(name, seq) for name, seq in reference.items() if seq]
    if not refs:
        raise BioidInputError("the reference is empty")
    targets = []
    for name, seq in refs:
        targets.append((name, "+", seq))
        targets.append((name, "-", reverse_complement(seq)))
    T = n_cycles or max((len(r) for r in reads), default=0)
    n = len(reads)
    errors = np.zeros((n, T), bool)
    covered = np.zeros((n, T), bool)
    refbase = np.full((n, T), 255, np.uint8)
    aligned = np.zeros(n, bool)
    dist = np.full(n, -1, np.int64)
    strand = [""] * n
    pos = np.full(n, -1, np.int64)
    lut = {b: i for i, b in enumerate("ACGT")}
    for i, read in enumerate(reads):
        if not read:
            continue
        k = int(max_error_rate * len(read))
        best = None
        for name, s, seq in targets:
            r = edlib.align(read, seq, mode="HW", task="distance", k=k if best is None else min(k, best[0]))
            d = r["editDistance"]
            if d >= 0 and (best is None or d < best[0]):
                best = (d, s, seq)
                if d == 0:
                    break
        if best is None:
            continue
        d, s, seq = best
        r = edlib.align(read, seq, mode="HW", task="path", k=d)
        start, end = r["locations"][0]
        aligned[i], dist[i], strand[i] = True, d, s
        pos[i] = start if s == "+" else len(seq) - 1 - end
        qi, ti = 0, start
        for count, op in _CIGAR.findall(r["cigar"]):
            count = int(count)
            for _ in range(count):
                if op in "=XM":
                    if qi < T:
                        covered[i, qi] = True
                        errors[i, qi] = op == "X" or (op == "M" and read[qi] != seq[ti])
                        refbase[i, qi] = lut.get(seq[ti], 255)
                    qi += 1
                    ti += 1
                elif op == "I":
                    if qi < T:
                        covered[i, qi] = True
                        errors[i, qi] = True
                    qi += 1
                else:  # deletion from the read
                    ti += 1
    return Alignment(aligned, dist, errors, covered, refbase, strand, pos)
