"""Train the shipped cell-type classifier (ResNet-34) on CRCHistoPhenotypes and measure it on the validation tiles.

    python scripts/train_default_classifier.py [--epochs 30] [--width 32]   (~20 CPU minutes on 2 cores)

The 70 CRC training tiles' typed nuclei (epithelial, fibroblast, inflammatory, others; unclassified left out) at
0.5 µm/px; 7 of those tiles (a seeded draw) pick the saved epoch by weighted F1 and are not trained on. The 10
validation tiles are never seen: on them the script reports the classifier on the annotated nuclei (accuracy,
weighted F1, confusion matrix) and the whole two-stage chain (shipped detector + this classifier: detection F1 of
centroids within 6 px, weighted F1 of the matched typed nuclei), written with the model to
``src/napari_bioid/models/cells_classifier_default.pt`` / ``.json``.
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from napari_bioid.engine.cells.classifier import evaluate_classifier, train_classifier
from napari_bioid.engine.cells.data import CRC_CLASSES, load_crc
from napari_bioid.engine.cells.detector import Detector, default_detector_path
from napari_bioid.engine.cells.pipeline import evaluate_two_stage
from napari_bioid.engine.progress import TqdmProgress

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
CRC = SHARED / "data" / "he_nuclei" / "crc_phenotypes"
OUT = ROOT / "src" / "napari_bioid" / "models" / "cells_classifier_default.pt"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    tiles = load_crc(CRC / "train")
    rng = np.random.default_rng(0)
    sel_names = set(rng.choice([s.name for s in tiles], 7, replace=False).tolist())
    train = [s for s in tiles if s.name not in sel_names]
    select = [s for s in tiles if s.name in sel_names]
    val = load_crc(CRC / "validation")
    bar = TqdmProgress("training")
    clf = train_classifier(train, select, CRC_CLASSES, epochs=a.epochs, width=a.width, lr=a.lr, progress=bar)
    bar.close()
    clf.metrics["selection_tiles"] = sorted(sel_names)
    clf.metrics["crc_validation"] = evaluate_classifier(clf, val)
    clf.metrics["crc_validation_two_stage"] = evaluate_two_stage(Detector.load(default_detector_path()), clf, val)
    clf.save(a.out, overwrite=True)
    a.out.with_suffix(".json").write_text(json.dumps(clf.metrics, indent=1))
    v, t = clf.metrics["crc_validation"], clf.metrics["crc_validation_two_stage"]
    print(json.dumps({"accuracy": v["accuracy"], "weighted_f1": v["weighted_f1"], "majority_rate": v["majority_rate"],
                      "confusion": v["confusion"], "two_stage": {k: t[k] for k in ("detection_f1", "weighted_f1")}, "seconds": clf.metrics["seconds"]}))


if __name__ == "__main__":
    main()
