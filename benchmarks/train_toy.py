"""Train a picker on DeepFinder toy tomograms 1–6 (F1 on 6 picks the checkpoint) and report F1 on 7–8.

Run:  python benchmarks/train_toy.py [--size full|small] [--epochs 60] [--device cuda] [--out model.pt]

``--size full`` is the METHODS.md §1 architecture (channels 24, 48, 72, 108;
block 72, pad 12; 9 classes); ``small`` is the CPU-sized network the test
suite uses. The picks' F1 on tomogram 6 (a training tomogram) chooses the checkpoint;
7–8 are never seen, not even for checkpoint selection. Prints JSON: overall (class-agnostic) and class-aware
precision/recall/F1 at a tolerance of 4 voxels, per class, and F-beta (beta 4)
with the CZII rule's tolerance (0.5 × particle radius).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path


from napari_bioid.engine.io import read_coordinates, read_volume
from napari_bioid.engine.progress import TqdmProgress
from napari_bioid.engine.tomo import ParticleClass, PickerConfig, evaluate_picks, pick, train_picker
from napari_bioid.engine.tomo.evaluate import pool_tomograms

SHARED = Path(os.environ.get("BIOID_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOY = SHARED / "data" / "cryoet" / "deepfinder_toy"

# Particle diameters in voxels, from the equivalent-sphere radius of each class in
# the toy set's class maps (tomo1_labels.mrc): r = 7.4, 5.3, 6.2, 5.1, 5.4, 5.7, 5.4, 5.6, 7.1.
TOY_DIAMETERS = [15, 11, 13, 11, 11, 12, 11, 12, 15]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--label-radius", type=int, default=4)
    ap.add_argument("--merge-classes", action="store_true", help="one 'particle' class")
    ap.add_argument("--device", default=None)
    ap.add_argument("--val-every", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)

    vols = [read_volume(TOY / f"tomo{i}.mrc") for i in range(1, 9)]
    tabs = [read_coordinates(TOY / f"tomo{i}_particles.csv") for i in range(1, 9)]
    if args.merge_classes:
        for t in tabs:
            t["class_id"] = 1
        classes = [ParticleClass(1, "particle", 12, args.label_radius)]
    else:
        classes = [ParticleClass(i + 1, f"toy{i + 1}", d, args.label_radius) for i, d in enumerate(TOY_DIAMETERS)]
    if args.size == "full":
        cfg = PickerConfig(classes=classes, block_size=72, pad_size=12, voxel_size=10.0)
    else:
        cfg = PickerConfig(classes=classes, block_size=40, pad_size=6, channels=(8, 16, 32), voxel_size=10.0)
    t0 = time.perf_counter()
    bar = TqdmProgress("train")
    model = train_picker(vols[:6], tabs[:6], cfg, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         val_tomograms=vols[5:6], val_tables=tabs[5:6], val_every=args.val_every, device=args.device, progress=bar)
    bar.close()
    train_s = time.perf_counter() - t0
    if args.out:
        model.save(args.out, overwrite=True)
    # one pooled table for both test tomograms (counts summed over them)
    picks = pool_tomograms([pick(v.data, model, device=args.device).picks for v in vols[6:]])
    truth = pool_tomograms(tabs[6:])
    ev = evaluate_picks(picks, truth, 4.0)
    czii = evaluate_picks(picks, truth, {c.class_id: 0.5 * c.radius for c in classes})
    tp_cls = sum(c["tp"] for c in ev["per_class"].values())
    out = {
        "size": args.size, "epochs": args.epochs, "train_seconds": round(train_s), "best_epoch": model.metrics["best_epoch"],
        "best_val_f1_tomo6": round(model.metrics["best_val_f1"], 4),
        "test_tomograms": [7, 8], "tolerance_voxels": 4.0,
        "f1_class_agnostic": round(ev["f1"], 4), "precision": round(ev["precision"], 4), "recall": round(ev["recall"], 4),
        "f1_class_aware": round(2 * tp_cls / (ev["n_pred"] + ev["n_true"]), 4),
        "per_class_f1": {k: round(v["f1"], 3) for k, v in ev["per_class"].items()},
        "fbeta4_czii_tolerance": round(czii["fbeta"], 4),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
