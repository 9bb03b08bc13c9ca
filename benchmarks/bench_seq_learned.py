"""Learned base callers against the classical one on fresh simulated tiles, at the default and at twice the density.

    python benchmarks/bench_seq_learned.py [--model M] [--ablation M] [--size 256] [--cycles 40] [--tiles 2]

For each density (200 K/mm², and 400 K/mm² where clusters touch) ``--tiles`` tiles are simulated with seeds never
used in training; every caller calls the same tiles at the same clusters (the classical detection). Printed per
caller: clusters passing filter, per-base error rate of those, and of all detected clusters, against the simulator's truth (each called cluster
matched to the truth cluster within 2 px whose read it agrees with most; no truth is used by any caller), the share
aligning to chrM, and megapixels per second per cycle. ``--ablation``: the U-Net trained without the consistency term.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from napari_bioid.engine.seq.align import align_reads
from napari_bioid.engine.seq.classical import call_stack
from napari_bioid.engine.seq.io import read_fasta
from napari_bioid.engine.seq.simulate import SeqSimParams, simulate_tile
from napari_bioid.engine.seq.unet import UNetCaller, default_unet_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))


def truth_error(calls, tile, radius=2.0, only_pf=True):
    """(errors, bases) of the (pass-filter) clusters against the best-agreeing truth read within ``radius`` px."""
    truth = np.array([[c for c in r] for r in tile.truth["read"]])
    called = np.array([[c for c in r] for r in calls.reads])
    near = cKDTree(tile.truth[["y", "x"]].to_numpy()).query_ball_point(calls.positions[["y", "x"]].to_numpy(), r=radius)
    err = n = 0
    for i in (np.flatnonzero(calls.pass_filter) if only_pf else range(len(called))):
        if near[i]:
            e = min(int((truth[j] != called[i]).sum()) for j in near[i])
            err, n = err + e, n + called.shape[1]
    return err, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=default_unet_path())
    ap.add_argument("--ablation", type=Path, default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--tiles", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    ref = read_fasta(SHARED / "data" / "sequencing" / "reference" / "chrM.fasta")
    seq = "".join(ref.values())
    callers = {"U-Net": UNetCaller.load(a.model)}
    if a.ablation:
        callers["U-Net, no consistency"] = UNetCaller.load(a.ablation)
    print(f"{'density':>10} {'caller':<24} {'clusters PF':>12} {'error PF':>9} {'aligned':>8} {'error, all clusters':>20} {'MP/s/cycle':>11}")
    for density in (200.0, 400.0):
        rows = {name: [0, 0, 0, 0, 0.0, 0, 0] for name in ["classical", *callers]}  # pf, err, n, aligned, seconds, err all, n all
        for k in range(a.tiles):
            tile = simulate_tile(SeqSimParams(height=a.size, width=a.size, n_cycles=a.cycles, density_k_per_mm2=density, seed=5000 + k), seq)
            t0 = time.perf_counter()
            base = call_stack(tile.stack)
            results = {"classical": (base, time.perf_counter() - t0)}
            for name, c in callers.items():
                t0 = time.perf_counter()
                results[name] = (c.call(tile.stack, base), time.perf_counter() - t0)
            for name, (calls, secs) in results.items():
                e, n = truth_error(calls, tile)
                pf = np.flatnonzero(calls.pass_filter)
                al = align_reads([calls.reads[i] for i in pf], ref, n_cycles=a.cycles)
                r = rows[name]
                ea, na = truth_error(calls, tile, only_pf=False)
                r[0] += len(pf); r[1] += e; r[2] += n; r[3] += int(al.aligned.sum()); r[4] += secs; r[5] += ea; r[6] += na
        mp = a.tiles * a.size * a.size / 1e6 * a.cycles
        for name, (pf, e, n, aligned, secs, ea, na) in rows.items():
            print(f"{density:>8.0f} K {name:<24} {pf:>12d} {e / max(n, 1):>9.4f} {aligned / max(pf, 1):>8.3f} {ea / max(na, 1):>20.4f} "
                  f"{mp / secs:>11.3f}", flush=True)
            print("   ", json.dumps({"density_k_per_mm2": density, "caller": name, "clusters_pf": pf, "error_rate": e / max(n, 1),
                                    "error_rate_all_clusters": ea / max(na, 1),
                                    "aligned_fraction": aligned / max(pf, 1), "megapixel_cycles_per_s": mp / secs}), flush=True)


if __name__ == "__main__":
    main()
