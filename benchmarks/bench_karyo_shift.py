"""Chromosome polarity under domain shift (issue 15): accuracy per shift level and per class, and calibration.

    python benchmarks/bench_karyo_shift.py [--n 1000] [--model M] [--kinds scale,blur,...] [--workers 2]
                                           [--plot reliability.png] [--chain-set] [--seed 1]
                                           [--one-pass] [--no-none]

The held-out cases of ../shared/data/chromosomes/karyogram_crops (30 % of the cases, seed 0: the shipped
model never saw them) are sampled (``--n`` crops, the same ones for every level), changed by
:func:`napari_bioid.engine.karyo.shift.shift_crop` (another lab's size, optics, contrast, noise, JPEG,
background), turned by a random angle on its own background and handed to the deployed chain,
``orient_images`` (normalisation, upright search, rotation, straightening, classifier, small-crop expert):
a decision is right when the short arm ends up on top (training.evaluate_orient). ``--chain-set`` measures
stored chain outputs instead (training.build_chain_set, as the training's own figures are made); since the
classifier's inputs are centred to the half pixel (data.to_square) the two agree. One JSON line per level: accuracy, the three weakest classes, ECE and the share of the
errors below the review threshold 0.9; then the per-class table of the strongest scale level, and the
pooled figures over every shifted level. ``--plot`` draws reliability diagrams (accuracy against confidence
in 10 bins, with the crops per bin) for the in-domain crops and for all shifted crops pooled.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_bioid.engine.karyo import list_crops, load_polarity_model, split_by_case
from napari_bioid.engine.karyo.shift import shift_levels
from napari_bioid.engine.karyo.training import build_chain_set, chain_log_odds, evaluate_orient, evaluate_polarity

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--kinds", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plot", type=Path, default=None, help="save reliability diagrams (PNG)")
    ap.add_argument("--chain-set", action="store_true", help="measure stored chain outputs, not the deployed orient_images")
    ap.add_argument("--seed", type=int, default=1, help="draw of the angles and shifts")
    ap.add_argument("--one-pass", action="store_true", help="switch the model's test-time turns off")
    ap.add_argument("--no-none", action="store_true", help="skip the in-domain level")
    a = ap.parse_args()
    import os

    shared = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
    test = split_by_case(list_crops(shared / "data" / "chromosomes" / "karyogram_crops"), 0.3, seed=0)[1]
    rng = np.random.default_rng(0)
    crops = [test[i] for i in np.sort(rng.choice(len(test), min(a.n, len(test)), replace=False))]
    model = load_polarity_model(a.model)
    if a.one_pass:
        model.turns_below = 0.0
    levels = ([] if a.no_none else [("none", 0.0)]) + shift_levels(a.kinds.split(",") if a.kinds else None)
    per_class = None
    pooled = {"in-domain": ([], []), "all shifted levels": ([], [])}
    for kind, level in levels:
        t0 = time.perf_counter()
        shift = None if kind == "none" else (kind, level)
        if a.chain_set:
            data = build_chain_set(crops, model.size, seed=a.seed, workers=a.workers, shift=shift, straighten=model.straighten)
            p = model.calibrated(chain_log_odds(model, data))  # with the small-crop expert, if any
            ev = evaluate_polarity(model, data, p_up=p)
            correct = (p >= 0.5) == data.up
        else:
            ev = evaluate_orient(model, crops, seed=a.seed, shift=shift)
            p, correct = np.array(ev["p_up"]), np.array(ev["correct"])
        conf = np.maximum(p, 1 - p)
        key = "in-domain" if kind == "none" else "all shifted levels"
        pooled[key][0].append(conf)
        pooled[key][1].append(correct)
        print(json.dumps({"shift": kind, "level": level, "n": ev["n"], "accuracy": round(ev["accuracy"], 4),
                          "weakest": {c: round(ev["per_chromosome"][c]["accuracy"], 3) for c in ev["weakest"]},
                          "ece": round(ev["ece"], 4), "errors_below_review": round(ev["errors_below_review"], 3),
                          "flagged": round(ev["flagged"], 3), "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        if kind == "scale":
            per_class = {c: round(v["accuracy"], 3) for c, v in ev["per_chromosome"].items()}
    if per_class:
        print(json.dumps({"per_class_at_scale": min(l for k, l in levels if k == "scale"), "accuracy": per_class}))
    from napari_bioid.engine.karyo.training import expected_calibration_error

    curves = {}
    for key, (confs, corrects) in pooled.items():
        if not confs:
            continue
        conf, correct = np.concatenate(confs), np.concatenate(corrects)
        low = conf < 0.9
        print(json.dumps({"pooled": key, "n": int(len(conf)), "accuracy": round(float(correct.mean()), 4),
                          "ece": round(expected_calibration_error(conf, correct), 4),
                          "errors_below_review": round(float(low[~correct].mean()), 3) if (~correct).any() else None,
                          "flagged": round(float(low.mean()), 3)}), flush=True)
        curves[key] = (conf, correct)
    if a.plot and curves:
        plot_reliability(curves, a.plot, model)


def plot_reliability(curves, path: Path, model) -> None:
    """Reliability diagrams: accuracy per confidence bin against the diagonal, and crops per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_bioid.engine.karyo.training import expected_calibration_error

    edges = np.linspace(0.5, 1.0, 11)  # binary: confidence max(p, 1 − p) ≥ 0.5
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.6), squeeze=False)
    for ax, (key, (conf, correct)) in zip(axes[0], curves.items()):
        which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, len(edges) - 2)
        mids, accs, counts = [], [], []
        for b in range(len(edges) - 1):
            m = which == b
            if m.any():
                mids.append(conf[m].mean())
                accs.append(correct[m].mean())
                counts.append(int(m.sum()))
        ax.plot([0.5, 1], [0.5, 1], "--", color="grey", lw=1, label="calibrated")
        ax.plot(mids, accs, "o-", color="tab:blue", label="accuracy per bin")
        for x, y, c in zip(mids, accs, counts):
            ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(0, -12), ha="center", fontsize=7)
        ax.axvline(0.9, color="tab:red", lw=1, ls=":", label="review threshold 0.9")
        ax.set_xlim(0.5, 1.0)
        ax.set_ylim(0.3, 1.02)
        ax.set_xlabel("confidence shown to the reviewer")
        ax.set_ylabel("fraction correct")
        ax.set_title(f"{key}: {len(conf)} crops, acc {correct.mean():.3f}, ECE {expected_calibration_error(conf, correct):.3f}",
                     fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"polarity reliability (T = {model.temperature:.2f}; numbers: crops per bin)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(json.dumps({"plot": str(path)}))


if __name__ == "__main__":
    main()
