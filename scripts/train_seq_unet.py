"""Train the shipped semi-supervised U-Net base caller on tiles the project simulates.

    python scripts/train_seq_unet.py [--tiles 8] [--epochs 48] [--max-label-error 0.15] [--no-consistency --out M]   (~10 CPU minutes)

Tiles of 256 × 256 px and 40 cycles are simulated from chrM at the default density (200 K/mm²) and at twice it
(400 K/mm², clusters that touch), half each. Labels come the way METHODS.md §3 says and never from the simulator's
truth: the classical caller's pass-filter reads are aligned to chrM (edlib) and the clusters whose whole read aligns
with ≤ 15 % mismatches are labelled with the reference bases (≤ 5 % labelled fewer dense clusters and called worse:
2× density all-cluster error 9.74 % against 9.39 %, ISS tile 228 against 250 decoded spots); every other cluster is unlabelled (consistency term).
``--no-consistency`` trains the supervised-only ablation with the same budget. The model and its metrics go to
``src/napari_bioid/models/seq_unet_default.pt`` / ``.json``; ``benchmarks/bench_seq_learned.py`` measures it.
"""

import argparse
import json
import os
from pathlib import Path

import torch

from napari_bioid.engine.progress import TqdmProgress
from napari_bioid.engine.seq.io import read_fasta
from napari_bioid.engine.seq.simulate import SeqSimParams, simulate_tile
from napari_bioid.engine.seq.unet import default_unet_path, labels_from_reference, train_unet_caller

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=48)
    ap.add_argument("--steps", type=int, default=50, help="steps per epoch")
    ap.add_argument("--max-label-error", type=float, default=0.15, help="label clusters whose read aligns with at most this mismatch rate")
    ap.add_argument("--no-consistency", action="store_true")
    ap.add_argument("--out", type=Path, default=default_unet_path())
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    ref = read_fasta(SHARED / "data" / "sequencing" / "reference" / "chrM.fasta")
    seq = "".join(ref.values())
    tiles = []
    for k in range(a.tiles):
        density = 200.0 if k % 2 == 0 else 400.0
        tile = simulate_tile(SeqSimParams(height=a.size, width=a.size, n_cycles=a.cycles, density_k_per_mm2=density, seed=1000 + k), seq)
        tiles.append(labels_from_reference(tile.stack, ref, max_label_error=a.max_label_error))
        lab = tiles[-1].labels[:, 0] >= 0
        print(json.dumps({"tile": k, "density": density, "clusters": int(len(lab)), "labelled": int(lab.sum())}), flush=True)
    bar = TqdmProgress("training")
    caller = train_unet_caller(tiles, epochs=a.epochs, steps_per_epoch=a.steps, consistency=not a.no_consistency, progress=bar)
    bar.close()
    caller.metrics["max_label_error"] = a.max_label_error
    caller.metrics["tiles"] = {"n": a.tiles, "size": a.size, "cycles": a.cycles, "densities_k_per_mm2": [200.0, 400.0], "seeds_from": 1000}
    caller.save(a.out, overwrite=True)
    a.out.with_suffix(".json").write_text(json.dumps(caller.metrics, indent=1))
    print(json.dumps({k: caller.metrics[k] for k in ("seconds", "labelled_clusters", "unlabelled_clusters", "consistency")}))


if __name__ == "__main__":
    main()
