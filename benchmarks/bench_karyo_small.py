"""The small-crop expert on all held-out crops under another lab's imaging (issue 15): errors with and without it.

    python benchmarks/bench_karyo_small.py [--model M] [--shifts lab:3,scale:0.3,lab:2,none:0] [--workers 2]

Every crop of the held-out cases (30 % of the cases, seed 0: 6,761 crops) is changed by
:func:`napari_bioid.engine.karyo.shift.shift_crop`, turned by a random angle (seed 7) and run through the whole chain
once; the model's log-odds are computed with its small-crop expert and with its main networks alone (the same chain
outputs). One JSON line per shift: crops, the small ones the expert also reads, errors without and with it (all crops
and the small ones), accuracy with it, seconds. About 1.5 minutes per shift on 2 cores.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from napari_bioid.engine.karyo import PolarityModel, list_crops, load_polarity_model, split_by_case
from napari_bioid.engine.karyo.training import build_chain_set, chain_log_odds

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--shifts", default="lab:3,scale:0.3,lab:2,none:0")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    shared = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
    test = split_by_case(list_crops(shared / "data" / "chromosomes" / "karyogram_crops"), 0.3, seed=0)[1]
    model = load_polarity_model(a.model)
    if model.small_expert is None:
        raise SystemExit("this model has no small-crop expert (bioid karyo small-expert)")
    alone = PolarityModel(model.depth, model.width, model.size, model.mean, model.std, model.mirror, model.temperature,
                          model.straighten, net=model.net, members=model.members, views_below=model.views_below)
    for item in a.shifts.split(","):
        kind, level = item.split(":")
        t0 = time.perf_counter()
        data = build_chain_set(test, model.size, seed=7, workers=a.workers, straighten=model.straighten,
                               shift=None if kind == "none" else (kind, float(level)))
        sign = np.where(data.up, 1.0, -1.0)
        without, with_ = chain_log_odds(alone, data) * sign, chain_log_odds(model, data) * sign
        small = data.small_rows
        print(json.dumps({"shift": kind, "level": float(level), "crops": len(data), "small": int(len(small)),
                          "errors_without": int((without <= 0).sum()), "errors_with": int((with_ <= 0).sum()),
                          "small_errors_without": int((without[small] <= 0).sum()),
                          "small_errors_with": int((with_[small] <= 0).sum()),
                          "accuracy_with": round(float((with_ > 0).mean()), 4),
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
