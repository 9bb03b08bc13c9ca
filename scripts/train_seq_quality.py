"""Fit the shipped default quality table of the classical base caller on simulated tiles.

    python scripts/train_seq_quality.py      (~2 CPU minutes)

Four tiles at the simulator's default parameters (seeds 301-304, 512 × 512 px, 60 cycles, reads from human chrM)
are called; their pass-filter reads are aligned to chrM (edlib) and the table is fitted on half of the clusters
of each tile; the other half measures the reported against the empirical quality. Writes
``src/napari_bioid/models/seq_quality_default.json`` and ``seq_quality_default_metrics.json``. ``bioid seq call``
uses this table when it is given neither ``--reference`` nor ``--quality-table``.
"""

import json
import os
from pathlib import Path

import numpy as np

from napari_bioid.engine.seq.align import align_reads
from napari_bioid.engine.seq.classical import call_stack
from napari_bioid.engine.seq.io import read_fasta
from napari_bioid.engine.seq.quality import calibrate, reliability
from napari_bioid.engine.seq.simulate import SeqSimParams, simulate_tile

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
MODELS = ROOT / "src" / "napari_bioid" / "models"


def main():
    chrm = read_fasta(SHARED / "data" / "sequencing" / "reference" / "chrM.fasta")
    rng = np.random.default_rng(0)
    fit, test = ([], [], []), ([], [], [])
    per_tile = []
    for seed in (301, 302, 303, 304):
        tile = simulate_tile(SeqSimParams(seed=seed), "".join(chrm.values()))
        calls = call_stack(tile.stack)
        pf = np.flatnonzero(calls.pass_filter)
        al = align_reads(calls.reads_at(pf), chrm, n_cycles=calls.bases.shape[1])
        s = al.summary()
        per_tile.append({"seed": seed, "clusters": int(len(calls.bases)), "pass_filter": float(calls.pass_filter.mean()),
                         "aligned": s["aligned_fraction"], "error_rate": s["error_rate"], "phasing": calls.phasing, "prephasing": calls.prephasing})
        half = rng.random(len(pf)) < 0.5
        for part, sel in ((fit, half), (test, ~half)):
            part[0].append(calls.chastity[pf][sel]), part[1].append(al.errors[sel]), part[2].append(al.covered[sel])
        print(per_tile[-1], flush=True)
    table = calibrate(*(np.concatenate(v) for v in fit))
    q = table.apply(np.concatenate(test[0]))
    rel = reliability(q, np.concatenate(test[1]), np.concatenate(test[2]))
    checked = [r for r in rel if r["bases"] >= 1000 and r["reported"] <= 30]
    metrics = {"tiles": per_tile, "held_out_reliability": rel,
               "max_abs_reported_minus_empirical_bins_ge1000_le_q30": max(abs(r["reported"] - r["empirical"]) for r in checked)}
    table.save(MODELS / "seq_quality_default.json")
    (MODELS / "seq_quality_default_metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps({k: v for k, v in metrics.items() if k != "held_out_reliability"}))


if __name__ == "__main__":
    main()
