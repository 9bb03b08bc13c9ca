"""Compare polarity model files on the validation cases through the deployed chain (issue 15: choose on validation).

    python benchmarks/compare_karyo_models.py [MODEL ...] [--turns-below 0.9,0.97] [--turn-angles 37,143,217,323]
                                              [--levels lab:3:300,lab:3:301,scale:0.3:400,lab:2:450,none:0:500,none:0:501]

``MODEL``: polarity model files (``shipped`` or nothing: the packaged default). The validation cases are the ones
the shipped training holds out to choose its epoch, members and temperature (10 % of the non-test cases, split seeds
0 and 1: 34 cases, 1,564 crops); the test cases are never touched, so a model can be chosen here and then measured
once with ``bench_karyo_shift.py``. Each level ``kind:level:seed`` changes the crops by
:func:`napari_bioid.engine.karyo.shift.shift_crop` (``none``: as read) and turns them by random angles drawn with
``seed``; every crop goes through ``orient_images`` exactly as a user's crop does (training.evaluate_orient).
Prints one line per level and model (errors, ECE, share of the errors below the review threshold 0.9), then each
model's errors per level and their sum. Every model sees the same crops at the same angles, so differences of a few
errors are within the draws' noise (two draws of lab level 3 differ by 4–6 errors for the same model).
"""

import argparse
import copy
from pathlib import Path

import numpy as np

from napari_bioid.engine.karyo import load_polarity_model
from napari_bioid.engine.karyo.training import _split, evaluate_orient

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LEVELS = "lab:3:300,lab:3:301,scale:0.3:400,lab:2:450,none:0:500,none:0:501"


def parse_shift(text: str):
    """``(kind, level)`` of :func:`napari_bioid.engine.karyo.shift.shift_crop` from ``kind:level``, or ``None`` for
    ``none`` / ``none:LEVEL`` (the crops as read). Raises ValueError for anything else."""
    kind, _, level = text.partition(":")
    if kind == "none":
        return None
    try:
        return kind, float(level)
    except ValueError:
        raise ValueError(f"a shift is kind:level (e.g. lab:3) or none, got {text!r}") from None


def parse_levels(text: str):
    """``[(shift or None, seed)]`` from ``kind:level:seed,...``."""
    out = []
    for item in text.split(","):
        shift, seed = item.rsplit(":", 1)
        out.append((parse_shift(shift), int(seed)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["shipped"])
    ap.add_argument("--turns-below", default=None, help="comma-separated thresholds to try (default: each model's own)")
    ap.add_argument("--turn-angles", default=None, help="comma-separated degrees (default: each model's own)")
    ap.add_argument("--levels", default=DEFAULT_LEVELS)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "chromosomes" / "karyogram_crops")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    _train, val, _test = _split(args.data, 0.3, 0.1, 0)  # the shipped training's split
    candidates = {}
    for path in args.models:
        model = load_polarity_model(None if path == "shipped" else path)
        if args.turn_angles:
            model.turn_angles = tuple(float(a) for a in args.turn_angles.split(","))
        for t in ([float(x) for x in args.turns_below.split(",")] if args.turns_below else [model.turns_below]):
            m = copy.copy(model)
            m.turns_below = t
            candidates[f"{path} (turns below {t:g})"] = m
    errors = {k: [] for k in candidates}
    for shift, seed in parse_levels(args.levels):
        for name, model in candidates.items():
            r = evaluate_orient(model, val, seed=seed, shift=shift)
            e = r["fp"] + r["fn"]
            errors[name].append(e)
            print(f"{shift or 'in-domain'} seed {seed}: {name}: {e} errors of {r['n']}, ECE {r['ece']:.4f}, "
                  f"{r['errors_below_review']:.0%} of the errors below 0.9", flush=True)
    for name, e in errors.items():
        print(f"{name}: errors per level {e}, sum {int(np.sum(e))}")


if __name__ == "__main__":
    main()
