"""Train the shipped multi-task (super-resolution + base-calling) network on tiles the project simulates.

    python scripts/train_seq_multitask.py [--tiles 8] [--steps 1200]   (~30 CPU minutes on 2 cores)

Tiles of 256 × 256 px and 40 cycles are simulated from chrM, alternately at the default density (200 K/mm²) and at
twice it (400 K/mm², clusters that touch), seeds 3000 + k (the benchmarks use 5000 + k). Targets come from the
simulator, as METHODS.md §3 says for this network: the noise-free 2× image with a PSF half as wide (standing in for a
structured-illumination reconstruction) and the base of every cluster at its centre pixel. The model and its metrics
go to ``src/napari_bioid/models/seq_multitask_default.pt`` / ``.json``; ``benchmarks/bench_seq_learned.py`` measures it.
"""

import argparse
import json
import os
from pathlib import Path

import torch

from napari_bioid.engine.progress import TqdmProgress
from napari_bioid.engine.seq.io import read_fasta
from napari_bioid.engine.seq.multitask import default_multitask_path, multitask_tile, train_multitask_caller
from napari_bioid.engine.seq.simulate import SeqSimParams, simulate_tile

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=default_multitask_path())
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    ref = read_fasta(SHARED / "data" / "sequencing" / "reference" / "chrM.fasta")
    seq = "".join(ref.values())
    tiles = []
    for k in range(a.tiles):
        density = 200.0 if k % 2 == 0 else 400.0
        sim = simulate_tile(SeqSimParams(height=a.size, width=a.size, n_cycles=a.cycles, density_k_per_mm2=density, seed=3000 + k), seq)
        tiles.append(multitask_tile(sim))
        print(json.dumps({"tile": k, "density": density, "clusters": len(sim.truth)}), flush=True)
    bar = TqdmProgress("training")
    caller = train_multitask_caller(tiles, steps=a.steps, batch_size=a.batch, progress=bar)
    bar.close()
    caller.metrics["tiles"] = {"n": a.tiles, "size": a.size, "cycles": a.cycles, "densities_k_per_mm2": [200.0, 400.0], "seeds_from": 3000}
    caller.save(a.out, overwrite=True)
    a.out.with_suffix(".json").write_text(json.dumps(caller.metrics, indent=1))
    print(json.dumps({k: caller.metrics[k] for k in ("seconds", "steps")} | {"last": caller.metrics["history"][-1]}))


if __name__ == "__main__":
    main()
