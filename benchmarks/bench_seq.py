"""Base-calling benchmarks (issue 9): accuracy against AYB2 on real PhiX intensities, ISS decoding against a
naive decoder, and speed. Prints one JSON object per part.

    python benchmarks/bench_seq.py [--skip-ayb] [--skip-speed]

* Real Illumina intensities (``ayb/test100_int.txt``: 100 PhiX clusters × 45 cycles; ``ayb/s_2_0001.cif`` is not
  PhiX, neither caller's reads align to phiX174, so it is left out): our classical caller and AYB2 (Massingham & Goldman 2012, built beside the checkout
  by ``../shared/peers/build_ayb2.sh`` and run as its README says) on the same file, both scored the same way
  (edlib against phiX174): reads with ≤ 2 mismatches in the first 25 cycles, aligned fraction and error rate of
  aligned reads over all cycles.
* The real ISS tile: spots decoded at an estimated FDR ≤ 5 %, ours against the naive per-cycle brightest channel.
* Speed (2 CPU cores): clusters per second on the real 153,010-cluster CIF tile (4 cycles), and seconds per cycle
  for a simulated 2048 × 2048 four-channel image (registration, detection, extraction, calling).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
SEQ = SHARED / "data" / "sequencing"


def score(reads, reference):
    from napari_bioid.engine.seq.align import align_reads

    first25 = align_reads([r[:25] for r in reads], reference, max_error_rate=0.0801)  # ≤ 2 mismatches in 25
    full = align_reads(reads, reference).summary()
    return {"reads": len(reads), "le2_mismatches_first25": float(first25.aligned.mean()), "aligned_fraction": full["aligned_fraction"],
            "error_rate_aligned": full["error_rate"], "perfect_reads": full["perfect_reads"]}


def run_ayb(path: Path, work: Path):
    build = SHARED / "peers" / "build_ayb2.sh"
    binary = subprocess.run(["bash", str(build)], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    inp, out = work / "in", work / "out"
    inp.mkdir(parents=True, exist_ok=True)
    out.mkdir(exist_ok=True)
    (inp / path.name).symlink_to(path)
    if path.suffix == ".cif":
        stem, args = path.stem, []
    else:
        stem, args = path.name.replace("_int.txt", ""), ["-d", "txt"]
    t0 = time.perf_counter()
    subprocess.run([binary, *args, "-i", str(inp), "-o", str(out), stem], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    fq = next(iter(sorted(out.glob(f"{stem}*.f*q*"))) or sorted(out.glob(f"{stem}_seq.txt")), None)
    if fq is None:
        fq = next(iter(out.glob(f"{stem}*seq*")))
    from napari_bioid.engine.seq.io import read_fastq

    _n, reads, _q = read_fastq(fq)
    return reads, seconds


def accuracy(skip_ayb: bool):
    from napari_bioid.engine.seq.classical import call_intensities
    from napari_bioid.engine.seq.io import read_cif, read_fasta, read_int_txt

    phix = read_fasta(SEQ / "reference" / "phiX174.fasta")
    for path in (SEQ / "ayb" / "test100_int.txt",):
        x, pos = read_int_txt(path) if path.suffix == ".txt" else (read_cif(path), None)
        t0 = time.perf_counter()
        calls = call_intensities(x, pos)
        ours = score(calls.reads, phix)
        ours["seconds"] = time.perf_counter() - t0
        ours["pass_filter_fraction"] = float(calls.pass_filter.mean())
        out = {"input": path.name, "clusters": int(x.shape[0]), "cycles": int(x.shape[1]), "ours": ours}
        if not skip_ayb:
            with tempfile.TemporaryDirectory() as work:
                try:
                    reads, seconds = run_ayb(path, Path(work))
                    out["ayb2"] = {**score(reads, phix), "seconds": seconds}
                    out["ratio_le2_mismatches_ours_over_ayb2"] = ours["le2_mismatches_first25"] / max(out["ayb2"]["le2_mismatches_first25"], 1e-9)
                except (subprocess.CalledProcessError, StopIteration) as exc:
                    out["ayb2"] = {"error": str(exc)}
        print(json.dumps(out), flush=True)


def iss():
    from napari_bioid.engine.seq.io import read_codebook, read_stack
    from napari_bioid.engine.seq.iss import decode_iss, naive_decode

    stack, _ = read_stack(SEQ / "iss_tile" / "iss_X12_Y1_left.tif")
    book = read_codebook(SEQ / "iss_tile" / "codebook.csv")
    t0 = time.perf_counter()
    _spots, ours = decode_iss(stack, book)
    seconds = time.perf_counter() - t0
    _s, naive = naive_decode(stack, book)
    ours.pop("crosstalk", None)
    print(json.dumps({"iss_tile": "iss_X12_Y1_left", "ours": ours, "naive": naive, "seconds": seconds}), flush=True)


def speed():
    import torch

    from napari_bioid.engine.seq.classical import call_intensities, call_stack
    from napari_bioid.engine.seq.io import read_cif_cycles, read_fasta
    from napari_bioid.engine.seq.simulate import SeqSimParams, simulate_tile

    torch.set_num_threads(2)
    cifs = [SEQ / "picard_cif" / f"C{c}.1" / "s_1_1.cif" for c in range(1, 5)]
    x = read_cif_cycles(cifs)
    t0 = time.perf_counter()
    calls = call_intensities(x)
    dt = time.perf_counter() - t0
    print(json.dumps({"cif_tile": "picard s_1_1", "clusters": int(x.shape[0]), "cycles": int(x.shape[1]), "seconds": dt,
                      "clusters_per_second": x.shape[0] / dt, "pass_filter_fraction": float(calls.pass_filter.mean())}), flush=True)
    ref = "".join(read_fasta(SEQ / "reference" / "chrM.fasta").values())
    cycles = 6
    tile = simulate_tile(SeqSimParams(height=2048, width=2048, n_cycles=cycles, seed=5), ref)
    t0 = time.perf_counter()
    calls = call_stack(tile.stack)
    dt = time.perf_counter() - t0
    print(json.dumps({"image": "simulated 2048 x 2048 x 4 channels", "cycles": cycles, "clusters_called": int(len(calls.bases)),
                      "seconds": dt, "seconds_per_cycle": dt / cycles}), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-ayb", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    accuracy(a.skip_ayb)
    iss()
    if not a.skip_speed:
        speed()
