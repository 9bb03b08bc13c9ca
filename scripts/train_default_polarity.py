"""Train the shipped chromosome polarity classifier and record what it reaches.

Data: ../shared/data/chromosomes/karyogram_crops (one folder per case). Split by
case, never by crop: 30 % of the cases are the test set (the reference's 7:3,
seed 0); 10 % of the remaining cases are the validation set that picks the
epoch. Every crop goes through the whole chain at random angles (training: 2
angles per crop, validation and test: 1), see engine/karyo/training.py.

    python scripts/train_default_polarity.py                      # shipped default
    python scripts/train_default_polarity.py --depth 50 --out /tmp/r50.pt --epochs 8

Writes the model (.pt) and its metrics next to it (.json): test accuracy,
TP/FP/TN/FN (positive = up), per chromosome class, the weakest classes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_bioid.engine.karyo.data import list_crops, split_by_case  # noqa: E402
from napari_bioid.engine.karyo.polarity import DEFAULT_MODEL_NAME, save_polarity_model  # noqa: E402
from napari_bioid.engine.karyo.training import ChainSet, build_chain_set, evaluate_polarity, train_polarity  # noqa: E402
from napari_bioid.engine.progress import TqdmProgress  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "chromosomes" / "karyogram_crops"


def cached(name: str, cache: Path, crops, size: int, variants: int, seed: int, workers: int) -> ChainSet:
    path = cache / f"{name}_{size}_{variants}_{seed}_{len(crops)}.npz"
    if path.is_file():
        z = np.load(path)
        return ChainSet(z["squares"], z["up"], z["crop"], list(crops), variants)
    bar = TqdmProgress(name)
    data = build_chain_set(crops, size, variants, seed, workers, progress=bar)
    bar.close()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, squares=data.squares, up=data.up, crop=data.crop)
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "napari_bioid" / "models" / DEFAULT_MODEL_NAME)
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--variants", type=int, default=2, help="random input angles per training crop")
    ap.add_argument("--max-cases", type=int, default=None, help="use only this many training cases (quick runs)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/bioid_karyo_cache"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    crops = list_crops(args.data)
    train_all, test = split_by_case(crops, 0.3, seed=0)
    train, val = split_by_case(train_all, 0.1, seed=1)
    if args.max_cases:
        keep = sorted({c.case for c in train})[: args.max_cases]
        train = [c for c in train if c.case in keep]
    print(f"{len(crops)} crops: train {len(train)} ({len({c.case for c in train})} cases), "
          f"val {len(val)} ({len({c.case for c in val})}), test {len(test)} ({len({c.case for c in test})})", flush=True)
    tr = cached("train", args.cache, train, args.size, args.variants, 10, args.workers)
    va = cached("val", args.cache, val, args.size, 1, 11, args.workers)
    te = cached("test", args.cache, test, args.size, 1, 12, args.workers)

    def on_epoch(rec):
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}), flush=True)

    bar = TqdmProgress("train")
    model = train_polarity(tr, va, depth=args.depth, width=args.width, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed, device=args.device, progress=bar, on_epoch=on_epoch)
    bar.close()
    result = evaluate_polarity(model, te, device=args.device)
    model.metrics.update({
        "test": result,
        "test_definition": "held-out cases (30 %, split_by_case seed 0), each crop once at a random angle "
                           "(seed 12) through rotate-upright → classify; positive = p-arm up",
        "data": str(args.data), "script": "scripts/train_default_polarity.py " + " ".join(argv or sys.argv[1:]),
        "train_minutes": (time.perf_counter() - t_start) / 60,
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_polarity_model(model, args.out, overwrite=True)
    summary = {k: v for k, v in model.metrics.items() if k != "history"}
    summary["history"] = model.metrics["history"]
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(f"test accuracy {result['accuracy']:.4f} on {result['n']} crops "
          f"(TP {result['tp']} FP {result['fp']} TN {result['tn']} FN {result['fn']}); weakest: "
          + ", ".join(f"{c} {result['per_chromosome'][c]['accuracy']:.3f}" for c in result["weakest"]))
    print(f"model: {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
