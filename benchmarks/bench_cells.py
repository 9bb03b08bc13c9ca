"""Speed and memory of the two-stage cell scanner (detector + ResNet-34 re-classifier) on CPU.

    python benchmarks/bench_cells.py [--sizes 1024 2048 4096] [--detector M] [--classifier M]

A field of real H&E tissue is built by tiling the CRCHistoPhenotypes validation tiles (0.5 µm/px) to
``size × size`` px; each size runs in its own process and prints the seconds and megapixels per second
for detection alone and for detection + classification, the number of cells, and the peak resident
memory above what the process held before the call (the image itself excluded). Tiling keeps the
working memory bounded by the tile, so that figure should not grow with the image.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))


def field(size: int) -> np.ndarray:
    from napari_bioid.engine.cells.data import load_crc

    tiles = [s.image for s in load_crc(SHARED / "data" / "he_nuclei" / "crc_phenotypes" / "validation")]
    n = -(-size // 500)
    rows = [np.concatenate([tiles[(i * n + j) % len(tiles)] for j in range(n)], 1) for i in range(n)]
    return np.ascontiguousarray(np.concatenate(rows, 0)[:size, :size])


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(size: int, det_path, cls_path) -> dict:
    import torch

    from napari_bioid.engine.cells.classifier import Classifier, default_classifier_path
    from napari_bioid.engine.cells.detector import Detector, default_detector_path
    from napari_bioid.engine.cells.pipeline import detect_cells

    torch.set_num_threads(os.cpu_count() or 2)
    det = Detector.load(det_path or default_detector_path())
    clf = Classifier.load(cls_path or default_classifier_path())
    small = field(256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detect_cells(small, 0.5, det, clf)  # warm-up
    image = field(size)
    import gc

    gc.collect()
    before = rss_mb()  # the high-water mark so far (model, warm-up, the image and its making)
    t = time.perf_counter()
    r = det.detect(image, 0.5)
    t_det = time.perf_counter() - t
    t = time.perf_counter()
    df = detect_cells(image, 0.5, det, clf)
    t_all = time.perf_counter() - t
    mp = size * size / 1e6
    return {"size": size, "megapixels": mp, "cells": len(df), "detect_s": t_det, "detect_mp_per_s": mp / t_det,
            "detect_classify_s": t_all, "detect_classify_mp_per_s": mp / t_all, "cells_per_s": len(df) / t_all,
            "peak_rss_above_start_mb": rss_mb() - before, "image_mb": image.nbytes / 2**20, "threads": torch.get_num_threads(),
            "classes": df["class"].value_counts().to_dict(), "detector_boxes": len(r["boxes"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--detector", type=Path, default=None)
    ap.add_argument("--classifier", type=Path, default=None)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.detector, a.classifier)))
        return
    extra = [x for k, v in (("--detector", a.detector), ("--classifier", a.classifier)) if v for x in (k, str(v))]
    print(f"{'size':>6} {'cells':>7} {'detect MP/s':>12} {'det+cls MP/s':>13} {'cells/s':>8} {'peak MB above start':>20}")
    for size in a.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size), *extra], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{size:>6} {r['cells']:>7} {r['detect_mp_per_s']:>12.3f} {r['detect_classify_mp_per_s']:>13.3f} {r['cells_per_s']:>8.0f} "
              f"{r['peak_rss_above_start_mb']:>20.0f}", flush=True)
        print("   ", json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
