"""Does fine-tuning on a few corrected images help? The MoNuSeg-only detector on CRC tiles, before and after.

    python benchmarks/finetune_crc.py [--tiles 5] [--steps 300] [--base MODEL]

The detector trained on MoNuSeg alone (``cells_detector_monuseg.pt``, 40× TCGA scans) meets CRCHistoPhenotypes
(20×, another scanner and stain). A user would correct the boxes of a handful of tiles and press Fine-tune; here the
corrections are simulated from the CRC training annotations (a 7 µm box on every annotated nucleus) of ``--tiles``
seeded-random training tiles among those annotated completely (≥ 150 nuclei), and :func:`napari_bioid.engine.cells.personal.finetune` (what the widget runs) continues
the detector from its weights (one tile held back, as in the widget, on which the operating confidence is chosen
again). Printed: detection precision / recall / F1 of
centroids within 3 µm (6 px at 20×) on the 10 CRC validation tiles, before and after, and the time taken.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from napari_bioid.engine.cells.data import CRC_CLASSES, load_crc
from napari_bioid.engine.cells.detector import Detector
from napari_bioid.engine.cells.personal import CellModel, Corrected, finetune
from napari_bioid.engine.cells.pipeline import evaluate_two_stage

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
CRC = SHARED / "data" / "he_nuclei" / "crc_phenotypes"


def corrections(samples):
    out = []
    for s in samples:
        names = np.array(["unclassified", *CRC_CLASSES])[s.classes + 1]
        df = pd.DataFrame(s.boxes, columns=["x_min", "y_min", "x_max", "y_max"]).assign(**{"class": names, "score": 1.0})
        out.append(Corrected(s.name, s.image, df, s.um_per_px))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiles", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--base", type=Path, default=ROOT / "src" / "napari_bioid" / "models" / "cells_detector_monuseg.pt")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    # a corrected tile is complete; 16 of the 70 CRC training tiles have fewer than 150 annotated nuclei (the
    # annotation is partial there), which would teach the detector that unannotated nuclei are background
    train = [s for s in load_crc(CRC / "train") if len(s.boxes) >= 150]
    rng = np.random.default_rng(0)
    pick = [train[i] for i in sorted(rng.choice(len(train), a.tiles, replace=False))]
    val = load_crc(CRC / "validation")
    base = CellModel("monuseg", Detector.load(a.base))
    before = evaluate_two_stage(base.detector, None, val)
    t = time.perf_counter()
    tuned = finetune(base, corrections(pick), "crc", detector_steps=a.steps, tune_classifier=False)
    secs = time.perf_counter() - t
    after = evaluate_two_stage(tuned.detector, None, val)
    keys = ("detection_precision", "detection_recall", "detection_f1")
    print(f"{'CRC validation (3 µm)':<28}{'precision':>10}{'recall':>10}{'F1':>8}")
    for name, m in (("MoNuSeg detector", before), (f"+ fine-tuned on {a.tiles - 1} tiles", after)):
        print(f"{name:<28}{m[keys[0]]:>10.3f}{m[keys[1]]:>10.3f}{m[keys[2]]:>8.3f}")
    print(json.dumps({"tiles_trained": tuned.info["tuned_on"], "held_back": tuned.info["measured_on"], "steps": a.steps,
                      "seconds": secs, "before": {k: before[k] for k in keys}, "after": {k: after[k] for k in keys},
                      "held_back_f1_iou50": [tuned.info["metrics_before"]["f1"], tuned.info["metrics_after"]["f1"]]}))


if __name__ == "__main__":
    main()
