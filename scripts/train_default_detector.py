"""Train the shipped nucleus detector on MoNuSeg 2018 and measure it against the classical baseline.

    python scripts/train_default_detector.py [--steps 1800] [--batch 8] [--init MODEL] [--crc]   (~12 CPU minutes per 1,800 steps)

The MoNuSeg-only model (``cells_detector_monuseg.pt``): ``--steps 1800``, then continued once with
``--steps 1500 --init`` the result. The shipped default (``cells_detector_default.pt``): that model continued
with ``--crc --steps 1500``, which adds the 70 CRCHistoPhenotypes training tiles (20×, boxes of the median
nucleus size around every annotated centroid, typed or not) so that the detector holds on both scanners.
Its CRC figure is the detection F1 of centroids within 3 µm (6 px at 20×) on the 10 CRC validation tiles.

All 30 MoNuSeg training images at 0.5 µm/px (13 with instance outlines, 17 with watershed-split masks); 3 outlined
images are held out by a seeded draw and never trained on. The checkpoint is chosen on them by mAP50 (so the
held-out figure is slightly optimistic) and written with its metrics to
``src/napari_bioid/models/cells_detector_default.pt`` / ``.json``, beside the baseline's numbers on the same images.
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from napari_bioid.engine.cells.baseline import classical_nuclei
from napari_bioid.engine.cells.boxes import detection_metrics
from napari_bioid.engine.cells.data import Sample, load_crc, load_monuseg, split_names
from napari_bioid.engine.cells.detector import Detector, choose_confidence, evaluate_detector, train_detector
from napari_bioid.engine.cells.pipeline import evaluate_two_stage
from napari_bioid.engine.progress import TqdmProgress

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
OUT = ROOT / "src" / "napari_bioid" / "models" / "cells_detector_default.pt"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--init", type=Path, default=None, help="continue from this detector (a new warm-up and schedule)")
    ap.add_argument("--crc", action="store_true", help="train on the CRCHistoPhenotypes training tiles too")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    samples = load_monuseg(SHARED / "data" / "he_nuclei" / "monuseg_train")
    train_names, val_names = split_names(samples, 3, seed=0)
    train = [s for s in samples if s.name in train_names]
    val = [s for s in samples if s.name in val_names]
    crc = SHARED / "data" / "he_nuclei" / "crc_phenotypes"
    if a.crc:
        # one class (nucleus): the cell types are the classifier's job
        train += [Sample(s.name, s.image, s.boxes, np.zeros(len(s.boxes), np.int64), s.um_per_px, False) for s in load_crc(crc / "train")]
    bar = TqdmProgress("training")
    init = Detector.load(a.init) if a.init else None
    det = train_detector(train, val, steps=a.steps, batch_size=a.batch, size=256, val_every=max(100, a.steps // 10), progress=bar,
                         init=init, on_eval=lambda m: print(json.dumps(m), flush=True))
    if init is not None:
        det.metrics["continued_from"] = {"steps": init.metrics.get("steps"), "previous": init.metrics.get("continued_from")}
    bar.close()
    det.metrics["held_out_images"] = val_names
    det.config.conf = choose_confidence(det, val)  # the operating point, on the held-out MoNuSeg images
    det.metrics["held_out"] = evaluate_detector(det, val)
    preds = [classical_nuclei(s.image, s.um_per_px) for s in val]
    det.metrics["classical_baseline_held_out"] = detection_metrics([(p["boxes"], p["scores"]) for p in preds], [s.boxes for s in val], 0.5, 0.0)
    det.metrics["crc_validation_points"] = evaluate_two_stage(det, None, load_crc(crc / "validation"))
    det.metrics["trained_on_crc"] = bool(a.crc)
    det.save(a.out, overwrite=True)
    a.out.with_suffix(".json").write_text(json.dumps(det.metrics, indent=1))
    print(json.dumps({k: det.metrics[k] for k in ("held_out", "classical_baseline_held_out", "crc_validation_points", "best_step", "seconds")}))


if __name__ == "__main__":
    main()
