"""Picking benchmarks: sliding-window inference speed and average-pool NMS vs peak_local_max.

Run:  python benchmarks/bench_tomo.py [--shape 200,512,512] [--model full|small] [--device cpu]

Prints one JSON line per measurement, each from its own process so that the
peak resident memory (ru_maxrss) belongs to that measurement alone:

* ``inference``: voxels per second of :func:`segment` on a memory-mapped
  random tomogram of ``--shape`` with an untrained network of the default
  architecture (speed does not depend on the weights), and the peak memory
  against the tomogram's and the output's sizes;
* ``nms``: time of our average-pool NMS + pruning and of
  ``skimage.feature.peak_local_max`` (min_distance = radius + 1) on the same
  segmentation of 2000 particles of radius 5 at random positions, their ratio,
  and the F1 of each one's centres (tolerance 2 voxels); once on a smooth
  probability profile and once on the binarised segmentation.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def flops_per_window(cfg, pad: int) -> dict:
    """FLOPs (2 per multiply-add, convolutions and matrix products; torch's FlopCounterMode) of one window.

    ``kept_centre``: what segment runs (the decoder only where the kept centre depends on it);
    ``whole_window``: the whole block through the network (the former path).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_bioid.engine.nn.unet3d import fold_for_inference

    net = cfg.build_network().eval()
    x = torch.zeros(1, 1, cfg.block_size, cfg.block_size, cfg.block_size)
    out = {}
    for name, crop, m in (("kept_centre", pad, fold_for_inference(net)), ("whole_window", 0, net)):
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            m(x, crop=crop)
        out[name] = fc.get_total_flops()
    return out


def machine_peak_gflops(threads: int) -> dict:
    """Nominal fp32 peak: threads × base clock (/proc/cpuinfo) × FLOP per cycle (32 with AVX2 FMA, 64 with AVX-512)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = next((float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")), float("nan"))
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 16
    return {"ghz": round(mhz / 1000, 3), "flop_per_cycle_per_core": per_cycle, "peak_gflops": round(threads * mhz / 1000 * per_cycle, 1),
            "avx512_bf16": "avx512_bf16" in flags}


def bench_inference(shape, model_size, device, batch_size, pad=None):
    import torch

    from napari_bioid.engine.io import read_volume
    from napari_bioid.engine.tomo import ParticleClass, PickerConfig, PickerModel, segment

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mrc"
        # write in slabs so the benchmark process itself never holds the whole tomogram
        import mrcfile

        with mrcfile.new_mmap(path, shape=tuple(shape), mrc_mode=2, overwrite=True) as mrc:
            rng = np.random.default_rng(0)
            for z in range(0, shape[0], 16):
                mrc.data[z : z + 16] = rng.normal(size=mrc.data[z : z + 16].shape).astype(np.float32)
            mrc.voxel_size = 10.0
        base_rss = peak_rss_mib()
        vol = read_volume(path, mmap=True)
        if model_size == "full":
            cfg = PickerConfig(classes=[ParticleClass(1, "ribosome", 23)], block_size=72, pad_size=12 if pad is None else pad)
        else:
            cfg = PickerConfig(classes=[ParticleClass(1, "particle", 11)], block_size=40, pad_size=6 if pad is None else pad, channels=(8, 16, 32))
        model = PickerModel(cfg.build_network().eval(), cfg)
        flops = flops_per_window(cfg, cfg.pad_size)
        from napari_bioid.engine.tomo.inference import window_starts

        n_windows = int(np.prod([len(window_starts(s, cfg.block_size, cfg.pad_size)) for s in shape]))
        t0 = time.perf_counter()
        seg = segment(vol.data, model, batch_size=batch_size, device=device)
        if device and device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        n = int(np.prod(shape))
        return {
            "benchmark": "inference",
            "shape_zyx": list(shape),
            "model": model_size,
            "block_size": cfg.block_size,
            "pad_size": cfg.pad_size,
            "channels": list(cfg.channels),
            "device": device or "auto",
            "torch_threads": torch.get_num_threads(),
            "seconds": round(dt, 2),
            "voxels_per_second": round(n / dt),
            "windows": n_windows,
            "gflop_per_window (kept centre / whole window)": [round(flops["kept_centre"] / 1e9, 1), round(flops["whole_window"] / 1e9, 1)],
            "achieved_gflops": round(n_windows * flops["kept_centre"] / dt / 1e9, 1),
            "machine": machine_peak_gflops(torch.get_num_threads()),
            "peak_rss_MiB": round(peak_rss_mib()),
            "rss_before_MiB": round(base_rss),
            "tomogram_MiB": round(n * 4 / 2**20),
            "outputs_MiB (float32 prob + uint8 class)": round(n * 5 / 2**20),
            "mean_probability": float(seg.probability[:: 8, ::8, ::8].mean()),
        }


def bench_nms(shape, n_particles, radius, profile_kind="smooth"):
    from skimage.feature import peak_local_max

    from napari_bioid.engine.tomo import PickerConfig, ParticleClass, evaluate_picks
    from napari_bioid.engine.io.coords import make_table
    from napari_bioid.engine.tomo.inference import Segmentation
    from napari_bioid.engine.tomo.nms import find_candidates, prune_picks

    rng = np.random.default_rng(1)
    centres = np.stack([rng.integers(0, s, n_particles) for s in shape], axis=1)
    # a network-like probability profile: 1 at the centre falling smoothly to 0 at radius + 1
    prob = np.zeros(shape, np.float32)
    g = np.arange(-radius - 1, radius + 2)
    d2 = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2).astype(np.float32)
    profile = np.clip(1.0 - d2 / (radius + 1) ** 2, 0, 1)
    for c in centres:
        lo = np.maximum(c - radius - 1, 0)
        hi = np.minimum(c + radius + 2, shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        psl = tuple(slice(a - (ci - radius - 1), b - (ci - radius - 1)) for a, b, ci in zip(lo, hi, c))
        prob[sl] = np.maximum(prob[sl], profile[psl] * rng.uniform(0.8, 1.0))
    if profile_kind == "binary":  # a hard segmentation, as a thresholded network output
        prob = (prob >= 0.5).astype(np.float32)
    seg = Segmentation(prob, np.ones(shape, np.uint8))
    truth = make_table(centres)
    cfg = PickerConfig(classes=[ParticleClass(1, "p", 2 * radius + 1)])
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    picks = prune_picks(find_candidates(seg, 1, 0.5, cfg.n_pools), 0.2, radius + 1.0)
    t_ours = time.perf_counter() - t0
    rss_ours = peak_rss_mib()
    t0 = time.perf_counter()
    peaks = peak_local_max(prob, min_distance=radius + 1, threshold_abs=0.5, exclude_border=False)
    t_skimage = time.perf_counter() - t0
    ours = evaluate_picks(picks, truth, 2.0)
    theirs = evaluate_picks(make_table(peaks), truth, 2.0)
    return {
        "benchmark": "nms",
        "segmentation": profile_kind,
        "shape_zyx": list(shape),
        "particles": n_particles,
        "radius": radius,
        "avgpool_nms_seconds": round(t_ours, 3),
        "peak_local_max_seconds": round(t_skimage, 3),
        "speed_ratio (peak_local_max / ours)": round(t_skimage / t_ours, 2),
        "avgpool_nms_f1": round(ours["f1"], 4),
        "peak_local_max_f1": round(theirs["f1"], 4),
        "peak_rss_MiB": round(peak_rss_mib()),
        "nms_extra_MiB": round(rss_ours - rss0),
        "segmentation_MiB": round(prob.nbytes / 2**20),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="200,512,512")
    ap.add_argument("--model", default="full", choices=["full", "small"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--pad", type=int, default=None, help="pad size of the sliding windows (default: 12 full, 6 small)")
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--part", default="all", choices=["all", "inference", "nms", "nms-binary"])
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    if args.part == "all":
        for part in ("nms", "nms-binary", "inference"):
            cmd = [sys.executable, __file__, "--part", part, "--shape", args.shape, "--model", args.model,
                   "--batch-size", str(args.batch_size), "--particles", str(args.particles)]
            if args.device:
                cmd += ["--device", args.device]
            if args.pad is not None:
                cmd += ["--pad", str(args.pad)]
            subprocess.run(cmd, check=True)
        return
    if args.part == "inference":
        out = bench_inference(shape, args.model, args.device, args.batch_size, args.pad)
    else:
        out = bench_nms(shape, args.particles, 5, "binary" if args.part == "nms-binary" else "smooth")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
