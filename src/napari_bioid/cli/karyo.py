"""``bioid karyo train|ensemble|small-expert|orient``: chromosome rotation and polarity."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path

from ..engine.errors import BioidInputError


def _add_karyo(sub) -> None:
    karyo = sub.add_parser("karyo", help="chromosome rotation and polarity (p-arm up)")
    ksub = karyo.add_subparsers(dest="cmd", required=True)

    tr = ksub.add_parser("train", help="train the polarity classifier on crops cut standing p-arm up")
    tr.add_argument("--data", required=True, type=Path, help="folder <case>/<chromosome class>/<crop image>")
    tr.add_argument("--out", required=True, type=Path, help="model file to write (.pt); metrics go to <out>.json")
    tr.add_argument("--depth", type=int, default=18, choices=[18, 34, 50, 101], help="ResNet depth (the reference uses 101)")
    tr.add_argument("--width", type=int, default=16, help="channels of the first ResNet stage (64 in the paper)")
    tr.add_argument("--size", type=int, default=128,
                    help="square input side in pixels (default 128, the shipped model's: most crops are shorter, so 224 only stretches them)")
    tr.add_argument("--epochs", type=int, default=24)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (× 0.1 at 60 %% and 90 %% of the epochs)")
    tr.add_argument("--variants", type=int, default=2, help="random input angles per training crop")
    aug = tr.add_mutually_exclusive_group()
    aug.add_argument("--augment-shift", action="store_true",
                     help="every second training angle also gets another lab's imaging (random scale, blur, contrast, "
                          "gamma, background, noise, JPEG)")
    aug.add_argument("--augment-lab", action="store_true",
                     help="as --augment-shift, but every fourth angle gets a whole other lab at once (smaller, softer, "
                          "fainter, noisier, JPEG)")
    tr.add_argument("--init", default=None,
                    help="fine-tune this polarity model file ('default': the shipped one) instead of starting from "
                         "random weights; its depth, width and size are used (give a smaller --lr, e.g. 0.003)")
    tr.add_argument("--straighten", default=None, metavar="BEND,ELONGATION,RATIO|off",
                    help="straighten long, thin, bent chromosomes along their axis before classifying, when their bend, "
                         "axis length over width and axis length over height exceed these (e.g. 0.09,3,1.0); the model "
                         "keeps the gate. Default: the --init model's, else off")
    tr.add_argument("--max-cases", type=int, default=None, help="use at most this many training cases")
    _add_finish_options(tr)

    ens = ksub.add_parser("ensemble", help="average trained polarity models (same architecture) into one model file")
    ens.add_argument("models", nargs="+", help="polarity model files to average ('default': the shipped one); at least two networks")
    ens.add_argument("--data", required=True, type=Path,
                     help="the crop folder the members were trained on: split by case as `train` splits it; the gate, "
                          "mirror and temperature are chosen on its validation cases and its test cases are measured")
    ens.add_argument("--out", required=True, type=Path, help="model file to write (.pt); metrics go to <out>.json")
    ens.add_argument("--straighten", default=None, metavar="BEND,ELONGATION,RATIO|off",
                     help="the loosest straightening gate to choose from (default: the one the members were trained with)")
    ens.add_argument("--mirror", choices=("off", "on", "choose"), default="off",
                     help="also average each crop's mirror image (doubles the cost again; default off)")
    _add_finish_options(ens)

    sm = ksub.add_parser("small-expert", help="train a network for small crops (another lab's small chromosomes) and "
                                              "attach it to a polarity model")
    sm.add_argument("--model", default="default", help="polarity model file to extend ('default': the shipped one)")
    sm.add_argument("--data", required=True, type=Path,
                    help="the crop folder the model was trained on: split by case as `train` splits it")
    sm.add_argument("--out", required=True, type=Path, help="model file to write (.pt); metrics go to <out>.json")
    sm.add_argument("--seeds", default="0", help="one expert network per seed, averaged (default 0: one network)")
    sm.add_argument("--epochs", type=int, default=30)
    sm.add_argument("--variants", type=int, default=8, help="small versions (random size, imaging and angle) per training crop")
    sm.add_argument("--width", type=int, default=16, help="channels of the first ResNet-18 stage")
    sm.add_argument("--weight", type=float, default=0.5, help="the expert's weight in a small crop's log-odds (default 0.5)")
    sm.add_argument("--test-fraction", type=float, default=0.3, help="fraction of the cases held out for the test")
    sm.add_argument("--workers", type=int, default=1, help="processes that prepare the crops")
    sm.add_argument("--cache", type=Path, default=None, help="folder to keep the prepared crops in between runs")
    sm.add_argument("--device", default=None)
    sm.add_argument("--overwrite", action="store_true")

    orr = ksub.add_parser("orient", help="turn every crop upright with the short arm up; write decisions.csv")
    orr.add_argument("input", type=Path, help="folder of crops (searched recursively), or one whole image with --labels")
    orr.add_argument("--out", required=True, type=Path, help="output folder (crops + decisions.csv)")
    orr.add_argument("--labels", type=Path, default=None, help="instance labels image (0 = background) for a whole-image input")
    orr.add_argument("--model", type=Path, default=None, help="polarity model file; default: the shipped model")
    orr.add_argument("--karyogram", type=Path, default=None,
                     help="also save a PNG sheet of the upright crops in karyogram order (class from folder names 1..22/X/Y)")
    orr.add_argument("--one-pass", action="store_true",
                     help="skip the model's test-time turns (unsure crops through the chain again at other input angles): faster, "
                          "slightly less accurate on other labs' small crops")
    orr.add_argument("--overwrite", action="store_true")


def _add_finish_options(parser) -> None:
    """The options `train` and `ensemble` share: the split, the symmetric views, the crop preparation, the output."""
    # 0.9 = polarity.REVIEW_THRESHOLD, written out: importing the engine here would load torch for every `bioid` call
    parser.add_argument("--views-below", type=float, default=0.9, metavar="CONFIDENCE",
                        help="average four symmetric views (mirror, 180° turn) for crops less sure than this "
                             "(0: never; default 0.9)")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="fraction of the cases held out for the test")
    parser.add_argument("--workers", type=int, default=1, help="processes that prepare the crops")
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep the prepared crops in between runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--overwrite", action="store_true")


def _karyo_train(args) -> int:
    from ..engine.karyo.training import train_from_folder
    from ..engine.progress import TqdmProgress

    metrics_path = _prepare_model_outputs(args)
    init = None
    if args.init is not None:
        from ..engine.karyo.polarity import load_polarity_model

        init = load_polarity_model(None if args.init == "default" else Path(args.init))
    straighten = _gate_option(args.straighten)
    bar = TqdmProgress("karyo")

    def on_epoch(rec):
        va = rec["val_accuracy"]
        print(f"epoch {rec['epoch']:3d}  loss {rec['loss']:.4f}  train acc {rec['train_accuracy']:.4f}"
              + ("" if va is None else f"  val acc {va:.4f}") + f"  ({rec['seconds']:.0f} s)", file=sys.stderr)

    try:
        model = train_from_folder(args.data, depth=args.depth, width=args.width, size=args.size, epochs=args.epochs,
                                  batch_size=args.batch_size, lr=args.lr, variants=args.variants,
                                  test_fraction=args.test_fraction, max_cases=args.max_cases, workers=args.workers,
                                  cache_dir=args.cache, seed=args.seed,
                                  augment="lab" if args.augment_lab else args.augment_shift, init=init,
                                  straighten=straighten, views_below=args.views_below, device=args.device, progress=bar,
                                  on_epoch=on_epoch, log=lambda m: print(m, file=sys.stderr))
    finally:
        bar.close()
    _save_and_report(model, args.out, metrics_path, args.overwrite)
    return 0


def _prepare_model_outputs(args) -> Path:
    """Check ``--out`` and its ``.json`` can be written and ``--test-fraction``, ``--views-below`` are sane; returns the metrics path."""
    from ..engine.io import prepare_output
    from ..engine.karyo.polarity import check_confidence

    prepare_output(args.out, args.overwrite)
    metrics_path = args.out.with_suffix(".json")
    prepare_output(metrics_path, args.overwrite)
    if not 0 < args.test_fraction < 1:
        raise BioidInputError("--test-fraction must be between 0 and 1")
    if hasattr(args, "views_below"):
        check_confidence(args.views_below, "--views-below")
    return metrics_path


def _karyo_small_expert(args) -> int:
    from ..engine.karyo.polarity import load_polarity_model
    from ..engine.karyo.training import small_expert_from_folder
    from ..engine.progress import TqdmProgress

    metrics_path = _prepare_model_outputs(args)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise BioidInputError(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    if not 0.0 <= args.weight <= 1.0:
        raise BioidInputError(f"--weight is between 0 and 1, got {args.weight}")
    if args.epochs < 1 or args.variants < 1:
        raise BioidInputError("--epochs and --variants must be at least 1")
    model = load_polarity_model(None if args.model == "default" else Path(args.model))
    with closing(TqdmProgress("small-expert")) as bar:
        out = small_expert_from_folder(args.data, model, seeds=seeds, epochs=args.epochs, variants=args.variants,
                                       width=args.width, weight=args.weight, test_fraction=args.test_fraction,
                                       workers=args.workers, cache_dir=args.cache, device=args.device, progress=bar,
                                       log=lambda m: print(m, file=sys.stderr))
    _save_and_report(out, args.out, metrics_path, args.overwrite)
    print(json.dumps({"small_expert_validation": out.metrics["small_expert"]["validation"]}))
    return 0


def _gate_option(text):
    """``--straighten`` as a gate dict, ``False`` ('off') or ``None`` (not given)."""
    from ..engine.karyo.straighten import GATE_KEYS

    if text is None:
        return None
    if text.strip().lower() == "off":
        return False
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise BioidInputError(f"--straighten takes BEND,ELONGATION,RATIO (three numbers) or 'off', got {text!r}")
    return dict(zip(GATE_KEYS, values))


def _save_and_report(model, out: Path, metrics_path: Path, overwrite: bool) -> None:
    """Write a trained polarity model and its metrics (atomically) and print the test summary as JSON."""
    from ..engine.io import atomic_write
    from ..engine.karyo.polarity import save_polarity_model

    save_polarity_model(model, out, overwrite=overwrite)
    with atomic_write(metrics_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(model.metrics, indent=1))
    test = model.metrics["test"]
    print(json.dumps({"model": str(out), "test_accuracy": round(test["accuracy"], 4), "test_crops": test["n"],
                      "tp": test["tp"], "fp": test["fp"], "tn": test["tn"], "fn": test["fn"],
                      "weakest": {c: round(test["per_chromosome"][c]["accuracy"], 4) for c in test["weakest"]}}))


def _karyo_ensemble(args) -> int:
    from ..engine.karyo.polarity import load_polarity_model
    from ..engine.karyo.training import ensemble_from_folder
    from ..engine.progress import TqdmProgress

    metrics_path = _prepare_model_outputs(args)
    straighten = _gate_option(args.straighten)
    members = [load_polarity_model(None if m == "default" else Path(m)) for m in args.models]
    with closing(TqdmProgress("ensemble")) as bar:
        model = ensemble_from_folder(args.data, members, straighten=straighten,
                                     mirror={"off": False, "on": True, "choose": None}[args.mirror],
                                     test_fraction=args.test_fraction, seed=args.seed, workers=args.workers,
                                     views_below=args.views_below, cache_dir=args.cache, device=args.device, progress=bar,
                                     log=lambda m: print(m, file=sys.stderr))
    _save_and_report(model, args.out, metrics_path, args.overwrite)
    return 0


def _karyo_orient(args) -> int:
    from ..engine.io import atomic_write, prepare_output
    from ..engine.karyo.data import read_image
    from ..engine.karyo.karyogram import chromosome_name, layout
    from ..engine.karyo.orient import check_outputs, crops_from_labels, orient_folder, orient_images, write_oriented
    from ..engine.karyo.polarity import load_polarity_model
    from ..engine.progress import TqdmProgress

    if args.karyogram is not None:
        prepare_output(args.karyogram, args.overwrite)
    model = load_polarity_model(args.model)
    if args.one_pass:
        model.turns_below = 0.0
    bar = TqdmProgress("orient")
    try:
        if args.labels is not None:
            if not args.input.is_file():
                raise BioidInputError(f"{args.input}: with --labels the input must be one image file")
            crops, ids, _ = crops_from_labels(read_image(args.input), read_image(args.labels, keep_dtype=True))
            names = [f"label_{i:04d}.png" for i in ids]
            check_outputs(args.out, names, args.overwrite)
            decisions = orient_images(crops, names, model, progress=bar)
            write_oriented(args.out, crops, decisions, args.overwrite)
        else:
            if not args.input.is_dir():
                raise BioidInputError(f"{args.input}: not a folder of crops (for a whole image, pass --labels)")
            decisions = orient_folder(args.input, args.out, model, args.overwrite, progress=bar)
    finally:
        bar.close()
    if args.karyogram is not None:
        from PIL import Image

        uprights = [read_image(args.out / d.file) for d in decisions]
        sheet, _ = layout(uprights, [chromosome_name(Path(d.file).parent.name) for d in decisions])
        with atomic_write(args.karyogram, overwrite=args.overwrite) as tmp:
            Image.fromarray(sheet).save(tmp, format="PNG")
    down = sum(d.polarity == "down" for d in decisions)
    low = sum(d.confidence < 0.9 for d in decisions)
    print(json.dumps({"crops": len(decisions), "flipped_down": down, "low_confidence": low,
                      "decisions": str(args.out / "decisions.csv")}))
    return 0


HANDLERS = {"train": _karyo_train, "ensemble": _karyo_ensemble, "small-expert": _karyo_small_expert, "orient": _karyo_orient}
add = _add_karyo
