"""Peak memory of picking a large memory-mapped tomogram, whole versus slab by slab (issue 14).

    python benchmarks/bench_pick_memory.py [--shape 400,1024,1024] [--chunk-slices 64] [--whole]

A float32 MRC of the given shape is written to a temporary folder, filled by tiling the bundled simulated
sample tomogram (64 × 128 × 128, mirrored at its borders), so that the segmentation holds as many
particles per voxel as a real picking job (the NMS's memory grows with the foreground), and picked
with the shipped model through a memory map. A thread samples
the process's anonymous resident memory (``RssAnon`` of /proc/self/status: what the memory map's pages do
not count in) every 50 ms; printed: its peak above the level before picking, the time, and the picks.
``--whole`` also runs the whole-tomogram path for comparison (it holds 5 bytes per voxel of output).
"""

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch

from napari_bioid.engine.tomo import load_picker, pick, pick_chunked
from napari_bioid.engine.tomo.config import default_model_path


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(fn):
    base, peak, stop = rss_anon(), [0], threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    stop.set()
    th.join()
    return out, (max(peak[0], rss_anon()) - base) / 2**30, secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="400,1024,1024")
    ap.add_argument("--chunk-slices", type=int, default=64)
    ap.add_argument("--whole", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    shape = tuple(int(v) for v in a.shape.split(","))
    model = load_picker(default_model_path(), voxel_size=10.0)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.mrc"
        sample = mrcfile.read(default_model_path().parents[1] / "sample_data" / "sample_tomogram.mrc").astype(np.float32)
        period = [2 * n for n in sample.shape]
        idx = [np.arange(n) % p for n, p in zip(shape, period)]
        idx = [np.where(i < n, i, p - 1 - i) for i, n, p in zip(idx, sample.shape, period)]  # mirror tiling
        with mrcfile.new_mmap(path, shape=shape, mrc_mode=2) as m:
            for z in range(shape[0]):
                m.data[z] = sample[idx[0][z]][np.ix_(idx[1], idx[2])]
            m.voxel_size = 10.0
        vol = mrcfile.mmap(path, mode="r").data
        gb = vol.nbytes / 2**30
        res, peak, secs = measure(lambda: pick_chunked(vol, model, chunk_slices=a.chunk_slices))
        print(json.dumps({"path": "slab by slab", "shape": shape, "tomogram_gb": round(gb, 2), "chunk_slices": a.chunk_slices,
                          "peak_gb_above_start": round(peak, 2), "seconds": round(secs, 1), "picks": len(res.picks)}), flush=True)
        if a.whole:
            res, peak, secs = measure(lambda: pick(vol, model))
            print(json.dumps({"path": "whole tomogram", "shape": shape, "tomogram_gb": round(gb, 2), "peak_gb_above_start": round(peak, 2),
                              "seconds": round(secs, 1), "picks": len(res.picks)}), flush=True)


if __name__ == "__main__":
    main()
