"""Chromosome polarity under domain shift (issue 15): accuracy per shift level and per class, and calibration.

    python benchmarks/bench_karyo_shift.py [--n 1000] [--model M] [--kinds scale,blur,...] [--workers 2]

The held-out cases of ../shared/data/chromosomes/karyogram_crops (30 % of the cases, seed 0: the shipped
model never saw them) are sampled (``--n`` crops, the same ones for every level), changed by
:func:`napari_bioid.engine.karyo.shift.shift_crop` (another lab's size, optics, contrast, noise, JPEG,
background), turned by a random angle and run through the whole chain (upright search, rotation,
classifier). One JSON line per level: accuracy, the three weakest classes, ECE and the share of the
errors below the review threshold 0.9; then the per-class table of the strongest scale level.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_bioid.engine.karyo import list_crops, load_polarity_model, split_by_case
from napari_bioid.engine.karyo.shift import shift_levels
from napari_bioid.engine.karyo.training import build_chain_set, evaluate_polarity

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--kinds", default=None)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    import os

    shared = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
    test = split_by_case(list_crops(shared / "data" / "chromosomes" / "karyogram_crops"), 0.3, seed=0)[1]
    rng = np.random.default_rng(0)
    crops = [test[i] for i in np.sort(rng.choice(len(test), min(a.n, len(test)), replace=False))]
    model = load_polarity_model(a.model)
    levels = [("none", 0.0)] + shift_levels(a.kinds.split(",") if a.kinds else None)
    per_class = None
    for kind, level in levels:
        t0 = time.perf_counter()
        data = build_chain_set(crops, model.size, seed=1, workers=a.workers, shift=None if kind == "none" else (kind, level))
        ev = evaluate_polarity(model, data)
        print(json.dumps({"shift": kind, "level": level, "n": ev["n"], "accuracy": round(ev["accuracy"], 4),
                          "weakest": {c: round(ev["per_chromosome"][c]["accuracy"], 3) for c in ev["weakest"]},
                          "ece": round(ev["ece"], 4), "errors_below_review": round(ev["errors_below_review"], 3),
                          "flagged": round(ev["flagged"], 3), "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        if kind == "scale":
            per_class = {c: round(v["accuracy"], 3) for c, v in ev["per_chromosome"].items()}
    if per_class:
        print(json.dumps({"per_class_at_scale": min(l for k, l in levels if k == "scale"), "accuracy": per_class}))


if __name__ == "__main__":
    main()
