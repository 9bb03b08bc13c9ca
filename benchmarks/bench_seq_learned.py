"""Learned base callers against the classical one on fresh simulated tiles, at the default and at twice the density.

    python benchmarks/bench_seq_learned.py [--unet M] [--ablation M] [--multitask M] [--size 256] [--cycles 40] [--tiles 2]

For each density (200 K/mm², and 400 K/mm² where clusters touch) ``--tiles`` tiles are simulated with seeds never
used in training (5000 + k). The classical caller and the U-Net call the classical detection's clusters; the
multi-task network calls the clusters of its own detection. No caller sees the simulator's truth; the benchmark
uses it to score:

* clusters detected, and the share of true clusters *resolved*: matched one-to-one within 1 px (Hungarian);
* clusters passing filter (PF), and their per-base error rate: called clusters are paired one-to-one with true
  clusters within 2 px (Hungarian on mismatches, so touching neighbours pair with the read they carry); PF clusters
  left unpaired (duplicates, noise) are counted apart as "spurious";
* usable reads: PF reads paired with a true cluster and at most 2 errors in the read;
* error at the classical yield: each caller's clusters ranked by their mean chastity (no truth), the error rate of
  its best N where N is the number of clusters the classical caller passes on that tile (like for like);
* the error rate over all detected clusters, the share of PF reads aligning to chrM, and speed (megapixels per
  second per cycle; the learned callers' time excludes the classical run they start from).

The multi-task network's 2× images are scored against the simulator's noise-free 2× truth (PSNR, SSIM per cycle
and channel, scikit-image), beside bicubic up-sampling of the same normalised input.
The real ISS tile (``../shared/data/sequencing/iss_tile``) is decoded by each caller at the same anchor spots: spots
decoded into the codebook at an estimated FDR ≤ 5 % (no truth exists for it).
``--ablation``: the U-Net trained without the consistency term, same budget. "U-Net at multi-task clusters" reads the
U-Net's bases at the multi-task network's detection (an analysis of what limits the U-Net, not a shipped caller).
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_bioid.engine.cells.boxes import match_points
from napari_bioid.engine.seq.align import align_reads
from napari_bioid.engine.seq.classical import call_stack
from napari_bioid.engine.seq.io import read_fasta
from napari_bioid.engine.seq.multitask import MultiTaskCaller, default_multitask_path
from napari_bioid.engine.seq.simulate import SeqSimParams, render_super_resolution, simulate_tile
from napari_bioid.engine.seq.unet import UNetCaller, default_unet_path, normalised_stack

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))


def pair_reads(calls, truth_yx, truth_codes, radius=2.0):
    """One-to-one pairs (called, true) within ``radius`` px minimising mismatches; returns (pairs, mismatches per pair)."""
    yx = calls.positions[["y", "x"]].to_numpy(float)
    near = cKDTree(yx).sparse_distance_matrix(cKDTree(truth_yx), radius, output_type="coo_matrix")
    if near.nnz == 0:
        return np.zeros((0, 2), int), np.zeros(0, int)
    pi, ti = np.unique(near.row), np.unique(near.col)
    mism = (calls.bases[near.row] != truth_codes[near.col]).sum(1)
    cost = np.full((len(pi), len(ti)), 1e6)
    cost[np.searchsorted(pi, near.row), np.searchsorted(ti, near.col)] = mism + 0.01 * near.data
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < 1e5
    pairs = np.stack([pi[r[ok]], ti[c[ok]]], 1)
    return pairs, (calls.bases[pairs[:, 0]] != truth_codes[pairs[:, 1]]).sum(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unet", type=Path, default=default_unet_path())
    ap.add_argument("--ablation", type=Path, default=None)
    ap.add_argument("--multitask", type=Path, default=default_multitask_path())
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--tiles", type=int, default=2)
    ap.add_argument("--densities", default="200,400")
    ap.add_argument("--no-iss", action="store_true", help="skip the real ISS tile")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    ref = read_fasta(SHARED / "data" / "sequencing" / "reference" / "chrM.fasta")
    seq = "".join(ref.values())
    callers = {"U-Net": UNetCaller.load(a.unet)}
    if a.ablation:
        callers["U-Net, no consistency"] = UNetCaller.load(a.ablation)
    callers["multi-task"] = MultiTaskCaller.load(a.multitask)
    if not a.no_iss:
        iss_per_caller(callers)
    lut = {b: i for i, b in enumerate("ACGT")}
    print(f"{'density':>9} {'caller':<22} {'detected':>8} {'resolved':>8} {'PF':>6} {'error PF':>8} {'spurious':>8} {'usable':>6} "
          f"{'err all':>7} {'aligned':>7} {'err@N':>7} {'MP/s/cyc':>8}")
    for density in map(float, a.densities.split(",")):
        names = ["classical", *callers, "U-Net at multi-task clusters"]
        rows = {n: dict(detected=0, resolved=0, truth=0, pf=0, err=0, bases=0, spurious=0, usable=0, err_all=0, bases_all=0,
                        aligned=0, seconds=0.0, err_top=0, bases_top=0) for n in names}
        sr_scores = {"multi-task": [], "bicubic": []}
        for k in range(a.tiles):
            tile = simulate_tile(SeqSimParams(height=a.size, width=a.size, n_cycles=a.cycles, density_k_per_mm2=density, seed=5000 + k), seq)
            t0 = time.perf_counter()
            base = call_stack(tile.stack)
            results = {"classical": (base, time.perf_counter() - t0)}
            for name, c in callers.items():
                t0 = time.perf_counter()
                results[name] = (c.call(tile.stack, base), time.perf_counter() - t0)
            # analysis: the U-Net's bases at the multi-task network's clusters (is detection what limits it?)
            t0 = time.perf_counter()
            results["U-Net at multi-task clusters"] = (callers["U-Net"].call(tile.stack, results["multi-task"][0]), time.perf_counter() - t0)
            offset = (tile.shifts - base.info["shifts"]).reshape(-1, 2).mean(0)  # truth → the registration's frame
            truth_yx = tile.extra["positions_yx"] + offset
            truth_codes = np.array([[lut[b] for b in r] for r in tile.truth["read"]], np.uint8)
            for name, (calls, secs) in results.items():
                r = rows[name]
                yx = calls.positions[["y", "x"]].to_numpy(float)
                r["detected"] += len(yx)
                r["resolved"] += len(match_points(yx, truth_yx, 1.0))
                r["truth"] += len(truth_yx)
                pairs, mism = pair_reads(calls, truth_yx, truth_codes)
                T = calls.bases.shape[1]
                pf_pair = calls.pass_filter[pairs[:, 0]]
                r["pf"] += int(calls.pass_filter.sum())
                r["err"] += int(mism[pf_pair].sum())
                r["bases"] += int(pf_pair.sum()) * T
                r["spurious"] += int(calls.pass_filter.sum() - pf_pair.sum())
                r["usable"] += int((mism[pf_pair] <= 2).sum())
                r["err_all"] += int(mism.sum())
                r["bases_all"] += len(mism) * T
                pf = np.flatnonzero(calls.pass_filter)
                r["aligned"] += int(align_reads(calls.reads_at(pf), ref, n_cycles=T).aligned.sum())
                r["seconds"] += secs
                n_top = int(results["classical"][0].pass_filter.sum())
                top = np.argsort(-calls.chastity.mean(1), kind="stable")[:n_top]
                mism_of = np.full(len(calls.bases), -1)
                mism_of[pairs[:, 0]] = mism
                m_top = mism_of[top][mism_of[top] >= 0]
                r["err_top"] += int(m_top.sum())
                r["bases_top"] += len(m_top) * T
            # super-resolution against the truth, and bicubic up-sampling of the same input
            norm, scales = normalised_stack(tile.stack, base.info["shifts"], return_scales=True)
            truth_sr = render_super_resolution(tile, 2, frame_offset=offset) / scales[:, :, None, None]
            out_sr = results["multi-task"][0].info["super_resolution"].astype(np.float32)
            for t in range(0, a.cycles, 4):
                for c in range(4):
                    gt = truth_sr[t, c]
                    rng = float(gt.max() - gt.min())
                    bic = ndimage.zoom(norm[t, c], 2, order=3, grid_mode=True, mode="grid-mirror")
                    for key, img in (("multi-task", out_sr[t, c]), ("bicubic", bic)):
                        sr_scores[key].append((peak_signal_noise_ratio(gt, img, data_range=rng), structural_similarity(gt, img, data_range=rng)))
        mp = a.tiles * a.size * a.size / 1e6 * a.cycles
        for name, r in rows.items():
            out = {"density_k_per_mm2": density, "caller": name, "clusters_detected": r["detected"], "true_clusters": r["truth"],
                   "resolved_fraction": r["resolved"] / r["truth"], "clusters_pf": r["pf"], "error_rate_pf": r["err"] / max(r["bases"], 1),
                   "spurious_pf": r["spurious"], "usable_reads": r["usable"], "error_rate_all": r["err_all"] / max(r["bases_all"], 1),
                   "aligned_fraction": r["aligned"] / max(r["pf"], 1), "megapixel_cycles_per_s": mp / r["seconds"],
                   "error_rate_at_classical_yield": r["err_top"] / max(r["bases_top"], 1)}
            print(f"{density:>7.0f} K {name:<22} {r['detected']:>8d} {out['resolved_fraction']:>8.3f} {r['pf']:>6d} {out['error_rate_pf']:>8.4f} "
                  f"{r['spurious']:>8d} {r['usable']:>6d} {out['error_rate_all']:>7.4f} {out['aligned_fraction']:>7.3f} "
                  f"{out['error_rate_at_classical_yield']:>7.4f} {out['megapixel_cycles_per_s']:>8.3f}", flush=True)
            print("   ", json.dumps(out), flush=True)
        for key, vals in sr_scores.items():
            v = np.array(vals)
            print(f"{density:>7.0f} K 2x image, {key:<12} PSNR {v[:, 0].mean():.2f} dB  SSIM {v[:, 1].mean():.3f}", flush=True)
            print("   ", json.dumps({"density_k_per_mm2": density, "super_resolution": key, "psnr_db": float(v[:, 0].mean()),
                                    "ssim": float(v[:, 1].mean())}), flush=True)


def iss_per_caller(callers):
    from napari_bioid.engine.seq.io import read_codebook, read_stack
    from napari_bioid.engine.seq.iss import decode_iss

    folder = SHARED / "data" / "sequencing" / "iss_tile"
    stack, _ = read_stack(folder / "iss_X12_Y1_left.tif")
    book = read_codebook(folder / "codebook.csv")
    for name, model in [("classical", None), *callers.items()]:
        kind = "classical" if model is None else ("multitask" if name == "multi-task" else "unet")
        t0 = time.perf_counter()
        _, summary = decode_iss(stack, book, caller=kind, model=model)
        summary.pop("crosstalk", None)
        print(f"ISS tile, {name:<22} spots {summary['spots']}, in codebook {100 * summary['codebook_share']:.1f} %, "
              f"decoded at FDR <= 5 %: {summary['decoded_at_target_fdr']}", flush=True)
        print("   ", json.dumps({"iss_tile": "iss_X12_Y1_left", "caller": name, **summary, "seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
