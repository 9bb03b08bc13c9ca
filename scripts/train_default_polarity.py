"""Train the shipped chromosome polarity classifier (``bioid karyo train`` / ``bioid karyo ensemble``).

Data: ../shared/data/chromosomes/karyogram_crops (one folder per case). Split by case, never by crop:
30 % of the cases are the test set (the reference's 7:3, seed 0); 10 % of the remaining cases choose the
epoch, the straightening gate, the ensemble's members and the temperature. Training crops go through the
whole chain (random angle → upright search → rotation) at several angles each, every fourth one first
imaged as another lab would (``--augment-lab``: engine/karyo/shift.RANDOM_LAB, 25–70 % of the size, blur,
contrast, noise, JPEG, background); long, thin, bent chromosomes are straightened along their axis
(``--straighten 0.09,3,1.0``, the loosest gate; engine/karyo/straighten.py).

The input is 128 × 128 px (issue 15, resolution-aware input): 95 % of the crops are at most 116 px long
(median 61 px), so 128 px keeps their own resolution instead of stretching them ~3.7 × to 224 px, and a
network costs a third of a 224-px one. Three stages:

1. members: six ResNet-18s (width 16, 128 px) from random weights, seeds 0–5 (the seed draws the training
   angles and shifts and the initial weights): seeds 0–3 44 epochs at 8 angles per crop, seeds 4–5 60 epochs
   at 12 (2–4 minutes each on one H100 with 16 CPU cores preparing the crops, ``--device cuda --workers
   16``; on 2 CPU cores roughly an hour each);
2. select: every member classifies the same validation crops (the 34 validation cases at 8 random angles,
   and at 4 angles with another lab's imaging on every fourth, 18,768 crops), and the four with the fewest
   errors are kept;
3. ensemble: ``bioid karyo ensemble`` of those four (engine/karyo/polarity.PolarityEnsemble averages their
   logits): gate and temperature chosen again on the validation cases, mirror averaging off, crops less
   sure than the review threshold 0.9 get the mean of four symmetric views (``--views-below 0.9``);
4. small: ``bioid karyo small-expert`` (issue 15): a ResNet-18 (width 16, seed 0, 30 epochs) learns on the
   training crops made 7-26 px long and imaged as another lab would (8 versions per crop), seeing them on a
   72-px canvas at 3x magnification (engine/karyo/data.to_canvas); it is attached to the ensemble for crops
   whose upright long side is at most 24 px (log-odds mixed half and half), and the temperature is fitted
   again on the validation cases (about 20 minutes on 2 CPU cores). The expert is kept only if it cuts the
   validation errors (``drop_expert_unless_it_helps``); since the classifier's inputs are centred to the half
   pixel it has not, so the shipped model has none;
5. turns: the test-time turns (``TURNS``: crops less sure than 0.9 go through the chain again turned by 37°,
   143°, 217°, 323°; engine/karyo/orient.turned_log_odds) are switched on if they cut the errors of the
   validation cases through the deployed chain (``TURN_LEVELS``: lab level 3, scale 0.3, our own imaging;
   about 4 minutes), and the errors without and with are stored in the model's metrics.

``--stage centre`` is the fine-tuning the shipped weights got once (issue 15) because their members had
learnt before the classifier's inputs were centred to the half pixel; a fresh run of all stages trains on
centred inputs and does not need it.

Writes the model into the package and its metrics beside it (.json): test accuracy, TP/FP/TN/FN (positive =
p-arm up), accuracy per chromosome class, calibration, each member's recipe and test accuracy.

    python scripts/train_default_polarity.py                                   # all stages: the shipped default
    python scripts/train_default_polarity.py --stage member --seed 3 --out /tmp/m3.pt --device cuda --workers 16
    python scripts/train_default_polarity.py --stage select --members /tmp/m0.pt ... /tmp/m5.pt  # ensembles the best four
    python scripts/train_default_polarity.py --stage small            # adds the small-crop expert to the shipped model
    python scripts/train_default_polarity.py --stage attach           # attaches its expert again (changed routing)
    python scripts/train_default_polarity.py --stage turns            # chooses the test-time turns on validation
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_bioid.cli import main  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "chromosomes" / "karyogram_crops"
SHIPPED = ROOT / "src" / "napari_bioid" / "models" / "karyo_polarity_default.pt"
CACHE = "/tmp/bioid_karyo_cache"
COMMON = ["--data", str(DATA), "--workers", "2", "--cache", CACHE, "--overwrite"]
MEMBER = ["--depth", "18", "--width", "16", "--size", "128", "--augment-lab", "--straighten", "0.09,3,1.0"]
RECIPES = {0: (44, 8), 1: (44, 8), 2: (44, 8), 3: (44, 8), 4: (60, 12), 5: (60, 12)}  # seed: (epochs, angles per crop)
KEEP = 4
#: gate the members are compared under (the one the previous default chose on validation)
SELECT_GATE = {"min_bend": 0.12, "min_elongation": 5.0, "min_length_ratio": 1.05}


def select(paths, keep: int = KEEP, log=print):
    """``(kept, record)``: the ``keep`` member files with the fewest validation errors (one view each), best first,
    and the selection for the model's metrics (every member's errors, the crops, the kept files). All members are
    scored under one gate (``SELECT_GATE``)."""
    from napari_bioid.engine.karyo import load_polarity_model
    from napari_bioid.engine.karyo.training import _cached_chain_set, _split, evaluate_polarity

    _, val, _ = _split(DATA, 0.3, 0.1, 0)
    models = [load_polarity_model(p) for p in paths]
    size = models[0].size  # members of one ensemble share it (ensemble_models refuses others)
    sets = [_cached_chain_set("val8", CACHE, val, size, 8, 111, 2, None, None, "none", SELECT_GATE),
            _cached_chain_set("val", CACHE, val, size, 4, 11, 2, None, None, "lab", SELECT_GATE)]
    crops, errors = sum(len(s.up) for s in sets), {}
    for path, m in zip(paths, models):
        m.views_below, m.mirror, m.straighten = 0.0, False, SELECT_GATE
        errors[str(path)] = sum(r["fp"] + r["fn"] for r in (evaluate_polarity(m, s) for s in sets))
        log(f"{path}: {errors[str(path)]} validation errors of {crops}")
    kept = sorted(paths, key=lambda p: errors[str(p)])[:keep]  # stable: ties keep the given order
    return kept, {"validation_errors_one_view": errors, "crops": crops, "kept": [str(p) for p in kept]}


def _provenance(out: Path, minutes: float, selection: dict) -> None:
    """Add where the shipped model comes from, and the member selection, to its metrics (model file and .json)."""
    from napari_bioid.engine.io.atomic import atomic_write
    from napari_bioid.engine.karyo import load_polarity_model, save_polarity_model

    model = load_polarity_model(out)
    model.metrics.update({
        "data": "../shared/data/chromosomes/karyogram_crops",
        "script": "scripts/train_default_polarity.py (ensemble of the four best of six ResNet-18s, width 16, 128 px, "
                  "from random weights with --augment-lab --straighten 0.09,3,1.0: seeds 0-3 44 epochs --variants 8, "
                  "seeds 4-5 60 epochs --variants 12; kept by validation errors; then bioid karyo ensemble: gate and "
                  "temperature chosen on validation, mirror off, four symmetric views below confidence 0.9)",
        "train_minutes": round(minutes, 1),
        "selection": selection,
    })
    save_polarity_model(model, out, overwrite=True)
    with atomic_write(out.with_suffix(".json"), overwrite=True, backup=False) as tmp:
        tmp.write_text(json.dumps(model.metrics, indent=1))


def run(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("all", "member", "select", "small", "attach", "centre", "turns"), default="all")
    ap.add_argument("--seed", type=int, choices=sorted(RECIPES), default=None, help="--stage member: which member")
    ap.add_argument("--members", type=Path, nargs="+", default=None, help="--stage select: the member files")
    ap.add_argument("--out", type=Path, default=SHIPPED)
    args, extra = ap.parse_known_args(argv)
    t0 = time.perf_counter()
    if args.stage == "member" and args.seed is None:
        ap.error("--stage member needs --seed (one of the recipes' seeds)")
    if args.stage == "select" and not args.members:
        ap.error("--stage select needs --members FILE ... (the member files)")
    if args.stage == "small":
        return small_stage(args.out, args.out, t0)
    if args.stage == "attach":
        return attach_stage(args.out)
    if args.stage == "centre":
        return centre_stage(args.out, t0)
    if args.stage == "turns":
        return turns_stage(args.out)
    members = args.members
    if args.stage in ("all", "member"):
        seeds = [args.seed] if args.stage == "member" else sorted(RECIPES)
        members = []
        for seed in seeds:
            epochs, variants = RECIPES[seed]
            out = args.out if args.stage == "member" else Path(tempfile.gettempdir()) / f"karyo_polarity_seed{seed}.pt"
            rc = main(["karyo", "train", *COMMON, *MEMBER, "--epochs", str(epochs), "--variants", str(variants),
                       "--seed", str(seed), "--out", str(out), *extra])
            if rc:
                return rc
            members.append(out)
        if args.stage == "member":
            return 0
    kept, selection = select(members)
    rc = main(["karyo", "ensemble", *map(str, kept), *COMMON, "--out", str(args.out)])
    if rc == 0 and args.out == SHIPPED:
        _provenance(args.out, (time.perf_counter() - t0) / 60, selection)
    rc = small_stage(args.out, args.out, t0) if rc == 0 else rc
    return turns_stage(args.out) if rc == 0 else rc


#: stage turns: (turn angles in degrees, confidence below which a crop takes them)
TURNS = ((37.0, 143.0, 217.0, 323.0), 0.9)
#: stage turns: (name, shift of engine/karyo/shift.shift_crop or None, angle seed) of the validation levels compared
TURN_LEVELS = (("lab 3 (seed 300)", ("lab", 3.0), 300), ("lab 3 (seed 301)", ("lab", 3.0), 301),
               ("scale 0.3 (seed 400)", ("scale", 0.3), 400), ("in-domain (seed 500)", None, 500),
               ("in-domain (seed 501)", None, 501))


def turns_stage(path: Path) -> int:
    """Stage 5: switch the test-time turns on in the model at ``path`` if they cut the validation errors.

    Both versions (no turns; ``TURNS``) run the validation cases through the deployed chain
    (training.evaluate_orient) at every level of ``TURN_LEVELS``; the turns are kept if they make fewer errors
    in total. The errors without and with are stored in ``metrics["turns"]``; the test cases are not touched.
    """
    import copy

    from napari_bioid.engine.io.atomic import atomic_write
    from napari_bioid.engine.karyo import load_polarity_model, save_polarity_model
    from napari_bioid.engine.karyo.training import _split, evaluate_orient

    model = load_polarity_model(path)
    _, val, _ = _split(DATA, 0.3, 0.1, 0)
    off, on = copy.copy(model), copy.copy(model)
    off.turns_below = 0.0
    on.turn_angles, on.turns_below = TURNS
    errors = {}
    for name, shift, seed in TURN_LEVELS:
        errors[name] = [sum(evaluate_orient(m, val, seed=seed, shift=shift)[k] for k in ("fp", "fn")) for m in (off, on)]
        print(json.dumps({name: errors[name]}), flush=True)
    keep = sum(e[1] for e in errors.values()) < sum(e[0] for e in errors.values())
    model.turn_angles, model.turns_below = TURNS if keep else ((), 0.0)
    model.metrics["turns"] = {"angles": list(TURNS[0]), "below": TURNS[1], "kept": keep,
                              "chosen_on": "validation cases through the deployed chain (training.evaluate_orient), "
                                           "errors of %d without -> with" % len(val), "validation": errors}
    save_polarity_model(model, path, overwrite=True)
    with atomic_write(path.with_suffix(".json"), overwrite=True, backup=False) as tmp:
        tmp.write_text(json.dumps(model.metrics, indent=1))
    print(json.dumps({"turns_kept": keep}))
    return 0


def attach_stage(path: Path) -> int:
    """Attach the model's own small-crop expert again with the current routing and canvas (engine/karyo/training.SMALL_SPEC):
    temperature refitted and the test measured by training.add_small_expert, as stage 4 does, without retraining."""
    from napari_bioid.engine.io.atomic import atomic_write
    from napari_bioid.engine.karyo import load_polarity_model, save_polarity_model
    from napari_bioid.engine.karyo.training import _VAL_VARIANTS, _cached_chain_set, _split, add_small_expert

    model = load_polarity_model(path)
    if model.small_expert is None:
        raise SystemExit(f"{path} has no small-crop expert: run --stage small")
    record = model.metrics.pop("small_expert")
    expert, model.small_expert = model.small_expert, None
    expert.metrics["small_training"] = record["training"]
    model.temperature = record["validation"]["temperature"]["before"]
    model.metrics["temperature"]["value"] = model.temperature
    _, val, test = _split(DATA, 0.3, 0.1, 0)
    va = _cached_chain_set("val", CACHE, val, model.size, _VAL_VARIANTS["lab"], 11, 2, None, None, "lab", model.straighten)
    te = _cached_chain_set("test", CACHE, test, model.size, 1, 12, 2, None, None, straighten=model.straighten)
    out = add_small_expert(model, expert, va, te)
    out.metrics["small_expert"]["attached_again"] = {"previous": {k: record[k] for k in record if k != "training"}}
    save_polarity_model(out, path, overwrite=True)
    with atomic_write(path.with_suffix(".json"), overwrite=True, backup=False) as tmp:
        tmp.write_text(json.dumps(out.metrics, indent=1))
    print(json.dumps({"test_accuracy": out.metrics["test"]["accuracy"], "small_expert_validation": out.metrics["small_expert"]["validation"]}))
    return 0


#: stage centre: the fine-tuning (epochs, peak learning rate, angles per training crop)
CENTRE = (3, 0.002, 4)


def centre_stage(path: Path, t0: float) -> int:
    """Fine-tune the model's ensemble on inputs centred to the half pixel (data.to_square since issue 15's fix).

    The members learnt on squares whose crop sat half a pixel left of centre when its width and long side differed by
    an odd number of pixels, and "down" examples were those squares turned 180°, so the offset was a label for small
    crops. The four networks are fine-tuned together (averaged logits) for ``CENTRE`` epochs on new chain outputs of
    the training cases (another lab's imaging on every fourth, the training gate), the epoch chosen on the validation
    cases; the temperature is fitted again and the model's small-crop expert attached again (add_small_expert,
    which measures the test cases).
    """
    import copy

    from napari_bioid.engine.karyo import load_polarity_model, save_polarity_model
    from napari_bioid.engine.karyo.training import (_VAL_VARIANTS, _cached_chain_set, _split, add_small_expert,
                                                     fit_temperature, train_polarity)

    model = load_polarity_model(path)
    expert, record = model.small_expert, model.metrics.pop("small_expert", None)
    model.small_expert = None
    epochs, lr, variants = CENTRE
    train, val, test = _split(DATA, 0.3, 0.1, 0)
    gate = model.metrics.get("straighten", {}).get("trained_with") or {"min_bend": 0.09, "min_elongation": 3.0, "min_length_ratio": 1.0}
    tr = _cached_chain_set("train", CACHE, train, model.size, variants, 90, 2, None, None, "lab", gate)
    va = _cached_chain_set("val", CACHE, val, model.size, _VAL_VARIANTS["lab"], 11, 2, None, None, "lab", gate)
    tuned = train_polarity(tr, va, epochs=epochs, lr=lr, milestones=(0.67,), seed=0, init=model,
                           on_epoch=lambda r: print(json.dumps(r), flush=True))
    out = copy.copy(model)
    out.net, out.metrics = tuned.net, copy.deepcopy(model.metrics)
    va_inf = _cached_chain_set("val", CACHE, val, model.size, _VAL_VARIANTS["lab"], 11, 2, None, None, "lab", model.straighten)
    te = _cached_chain_set("test", CACHE, test, model.size, 1, 12, 2, None, None, straighten=model.straighten)
    out.temperature = fit_temperature(out, va_inf)
    out.metrics["centred_fine_tuning"] = {
        "why": "inputs centred to the half pixel (issue 15): the members had learnt a half-pixel offset as a label",
        "epochs": epochs, "lr": lr, "angles_per_crop": variants, "training_gate": gate,
        "history": tuned.metrics["history"], "best_val_accuracy": tuned.metrics["best_val_accuracy"],
        "temperature_before_expert": out.temperature,
    }
    if expert is not None:
        if record is not None:
            expert.metrics["small_training"] = record.get("training")
        out = drop_expert_unless_it_helps(add_small_expert(out, expert, va_inf, te), te)
    out.metrics["centred_fine_tuning"]["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    save_polarity_model(out, path, overwrite=True)
    from napari_bioid.engine.io.atomic import atomic_write

    with atomic_write(path.with_suffix(".json"), overwrite=True, backup=False) as tmp:
        tmp.write_text(json.dumps(out.metrics, indent=1))
    print(json.dumps({"test_accuracy": out.metrics.get("test", {}).get("accuracy"),
                      "best_val_accuracy": tuned.metrics["best_val_accuracy"], "temperature": out.temperature}))
    return 0


def drop_expert_unless_it_helps(model, test):
    """The model without its small-crop expert (temperature as before it, test measured again) unless the expert made
    fewer errors on the validation crops (``metrics["small_expert"]["validation"]``, from add_small_expert)."""
    from napari_bioid.engine.karyo.training import evaluate_polarity

    record = model.metrics.get("small_expert")
    if model.small_expert is None or record is None or record["validation"]["errors_with"] < record["validation"]["errors_without"]:
        return model
    model.small_expert = None
    model.temperature = record["validation"]["temperature"]["before"]
    if isinstance(model.metrics.get("temperature"), dict):
        model.metrics["temperature"]["value"] = model.temperature
    model.metrics["small_expert_dropped"] = model.metrics.pop("small_expert")
    model.metrics["test"] = evaluate_polarity(model, test)
    return model


def small_stage(base: Path, out: Path, t0: float) -> int:
    """Stage 4: train the small-crop expert for the model ``base`` and write the model with it to ``out``."""
    rc = main(["karyo", "small-expert", "--model", str(base), *COMMON, "--seeds", "0", "--epochs", "30",
               "--variants", "8", "--out", str(out)])
    if rc == 0 and out == SHIPPED:
        from napari_bioid.engine.io.atomic import atomic_write
        from napari_bioid.engine.karyo import load_polarity_model, save_polarity_model

        from napari_bioid.engine.karyo.training import _cached_chain_set, _split

        model = load_polarity_model(out)
        test = _split(DATA, 0.3, 0.1, 0)[2]
        model = drop_expert_unless_it_helps(model, _cached_chain_set("test", CACHE, test, model.size, 1, 12, 2, None, None,
                                                                      straighten=model.straighten))
        model.metrics["script"] = (model.metrics.get("script", "") + "; then stage small: bioid karyo small-expert "
                                   "--seeds 0 --epochs 30 --variants 8 (a ResNet-18, width 16, 72-px canvas at 3x, "
                                   "for crops at most 24 px long, log-odds mixed half and half; temperature fitted again)")
        model.metrics["small_stage_minutes"] = round((time.perf_counter() - t0) / 60, 1)
        save_polarity_model(model, out, overwrite=True)
        with atomic_write(out.with_suffix(".json"), overwrite=True, backup=False) as tmp:
            tmp.write_text(json.dumps(model.metrics, indent=1))
    return rc


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
