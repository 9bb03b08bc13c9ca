"""Picking speed side by side with DeepETPicker (issue 13): the same tomogram, the same CPU, one run.

    python benchmarks/bench_pick_speed.py [--shape 100,256,256] [--pad 18] [--batch-size 4]
                                          [--peer-batch-size 16] [--no-peer] [--no-reference] [--threads 2]

1. Simulates a tomogram of ``--shape`` (10 Å voxels, ribosome-like structures of
   ../shared/data/cryoet/structures) and writes it as MRC to a temporary folder.
2. Runs the peer's own inference through ``../shared/peers/deepetpicker/run_peer.sh --mode seg``
   (its code stays in ../shared: zero padding, 72³ windows, its ResidualUNet3D 24-48-72-108 with image
   pyramid and CoordConv at random weights, per-block NMS and de-duplication).
3. Runs ours in fresh processes (so each peak RSS is its own): the full-size picking network
   (24-48-72-108, CoordConv, block 72, the same pad), random weights (seed 0; speed does not depend on the
   weights), :func:`segment` then average-pool NMS and pruning; once as shipped (only each window's kept
   centre computed) and, unless ``--no-reference``, once computing whole windows (the former path), and
   the F1 of the shipped picks against those (tolerance 1 voxel).

Prints one JSON line per run and a final line with the ratios (peer seconds / ours, segmentation and the whole
job) and the memory of each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _ours(path: str, pad: int, batch_size: int, whole: bool, threads: int, picks_out: str) -> dict:
    import torch

    from napari_bioid.engine.io import read_volume
    from napari_bioid.engine.tomo import ParticleClass, PickerConfig, PickerModel, segment
    from napari_bioid.engine.tomo.nms import find_candidates, prune_picks
    from napari_bioid.engine.tomo.picking import DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, default_distance

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = PickerConfig(classes=[ParticleClass(1, "ribosome", 23)], block_size=72, pad_size=pad, channels=(24, 48, 72, 108))
    net = cfg.build_network().eval()
    if whole:  # the former path: whole windows through the network, centre kept by segment
        inner = net

        class Whole(torch.nn.Module):
            def forward(self, x):
                return inner(x)

        net = Whole()
    model = PickerModel(net, cfg)
    vol = read_volume(path, mmap=True).data
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    seg = segment(vol, model, batch_size=batch_size)
    t_seg = time.perf_counter() - t0
    t0 = time.perf_counter()
    picks = prune_picks(find_candidates(seg, 1, DEFAULT_THRESHOLD, cfg.n_pools), DEFAULT_MIN_SCORE, default_distance(model)[1])
    t_nms = time.perf_counter() - t0
    picks.to_csv(picks_out, index=False)
    n = int(np.prod(vol.shape))
    return {"tool": "napari-bioid", "path": "whole windows (former)" if whole else "kept centre only (shipped)",
            "shape_zyx": list(vol.shape), "block": 72, "pad": pad, "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
            "seconds_segmentation": round(t_seg, 2), "seconds_nms_total": round(t_nms, 3), "seconds_total": round(t_seg + t_nms, 2),
            "voxels_per_second_segmentation": round(n / t_seg), "n_picks": int(len(picks)),
            "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "rss_MiB_before_run": round(rss0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="100,256,256")
    ap.add_argument("--pad", type=int, default=18)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--peer-batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--_ours", nargs=5, metavar=("PATH", "PAD", "BATCH", "WHOLE", "PICKS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._ours:
        path, pad, batch, whole, picks = a._ours
        print(json.dumps(_ours(path, int(pad), int(batch), whole == "1", a.threads, picks)), flush=True)
        return
    from napari_bioid.cli.tomo import default_structures_dir
    from napari_bioid.engine.io import write_mrc
    from napari_bioid.engine.io.coords import read_coordinates
    from napari_bioid.engine.tomo import evaluate_picks
    from napari_bioid.engine.tomo.simulate import SimulationParams, load_structures, simulate_tomogram

    shape = tuple(int(s) for s in a.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        structures = load_structures(default_structures_dir(), 10.0)
        n_particles = int(60 * np.prod(shape) / (100 * 256 * 256))
        sim = simulate_tomogram(structures, SimulationParams(shape_zyx=shape, voxel_size_A=10.0, n_particles=n_particles, seed=0))
        tomo = write_mrc(tmp / "tomo.mrc", sim.tomogram, 10.0)
        del sim
        results = {}
        if not a.no_peer:
            peer = ROOT.parent / "shared" / "peers" / "deepetpicker" / "run_peer.sh"
            env = dict(os.environ, TMPDIR=str(tmp))
            out = subprocess.run(["bash", str(peer), sys.executable, "--mode", "seg", "--tomo", str(tomo), "--work", str(tmp / "peer"),
                                  "--batch-size", str(a.peer_batch_size), "--pad", str(a.pad)], capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"peer failed:\n{out.stderr[-3000:]}")
            results["peer"] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(results["peer"]), flush=True)
        runs = [("ours", "0")] + ([] if a.no_reference else [("ours_whole_windows", "1")])
        for name, whole in runs:
            out = subprocess.run([sys.executable, __file__, "--threads", str(a.threads), "--_ours", str(tomo), str(a.pad),
                                  str(a.batch_size), whole, str(tmp / f"{name}.csv")], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(results[name]), flush=True)
        summary = {"shape_zyx": list(shape), "pad": a.pad}
        ours = results["ours"]
        if "peer" in results:
            p = results["peer"]
            summary["speed_ratio_segmentation (peer s / ours s)"] = round(p["seconds_segmentation"] / ours["seconds_segmentation"], 2)
            summary["speed_ratio_whole_job (peer s / ours s)"] = round(p["seconds_test_func_total"] / ours["seconds_total"], 2)
            summary["peak_rss_MiB peer / ours"] = [max(p["peak_rss_MiB_main"], p["peak_rss_MiB_largest_child"]), ours["peak_rss_MiB"]]
        if "ours_whole_windows" in results:
            ref = results["ours_whole_windows"]
            summary["speed_ratio_vs_whole_windows"] = round(ref["seconds_segmentation"] / ours["seconds_segmentation"], 2)
            ev = evaluate_picks(read_coordinates(tmp / "ours.csv"), read_coordinates(tmp / "ours_whole_windows.csv"), 1.0)
            summary["f1_vs_whole_windows_picks"] = round(ev["f1"], 4)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
