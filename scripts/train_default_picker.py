"""Train the picking model shipped in the package (``bioid tomo pick`` without ``--model``).

Run:  python scripts/train_default_picker.py [--epochs 14] [--device cuda]

Training data: simulated tomograms (``engine.tomo.simulate``; 64 × 160 × 160 at
10 Å/voxel from the real structures and the SHREC 2019 shapes, SNR 0.06–0.2,
defocus −2 to −4 µm, vesicles and gold fiducials, seeds 100–109) plus the
DeepFinder toy tomograms 1–6, all particles as one class ("particle",
class-agnostic picking). Validation (checkpoint choice): simulated seed 200 and
toy tomogram 7. Test, never seen: fresh simulations at the default parameters
(seeds 9001–9002, SNR 0.1) with a tolerance of each particle's radius, and toy
tomogram 8 with a tolerance of 4 voxels.

Writes ``src/napari_bioid/models/tomo_picker_default.pt`` and the metrics it
reached to ``tomo_picker_default.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from napari_bioid.cli.tomo import default_structures_dir
from napari_bioid.engine.io import read_coordinates, read_volume
from napari_bioid.engine.progress import TqdmProgress
from napari_bioid.engine.tomo import ParticleClass, PickerConfig, evaluate_picks, pick, train_picker
from napari_bioid.engine.tomo.evaluate import pool_tomograms
from napari_bioid.engine.tomo.simulate import SimulationParams, load_structures, simulate_tomogram

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "src" / "napari_bioid" / "models"
SHARED = Path(os.environ.get("BIOID_SHARED", ROOT.parent / "shared"))
TOY = SHARED / "data" / "cryoet" / "deepfinder_toy"


def simulated(structures, seed, rng=None, **fixed):
    if rng is not None:
        fixed = dict(snr=float(rng.uniform(0.06, 0.2)), defocus_um=float(rng.uniform(-4, -2)), n_particles=int(rng.integers(30, 61)),
                     n_vesicles=int(rng.integers(0, 3)), n_fiducials=int(rng.integers(0, 6)), **fixed)
    params = SimulationParams(shape_zyx=(64, 160, 160), voxel_size_A=10.0, seed=seed, **fixed)
    sim = simulate_tomogram(structures, params)
    return sim


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--n-sim", type=int, default=10)
    ap.add_argument("--channels", default="8,16,32")
    ap.add_argument("--block-size", type=int, default=40)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=MODELS / "tomo_picker_default.pt")
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    t_start = time.perf_counter()
    structures = load_structures(default_structures_dir(), 10.0)
    rng = np.random.default_rng(0)

    def merged(table):
        table = table.copy()
        table["class_id"] = 1
        return table

    train_v, train_t = [], []
    for seed in range(100, 100 + args.n_sim):
        sim = simulated(structures, seed, rng)
        train_v.append(sim.tomogram)
        train_t.append(merged(sim.truth))
    for i in range(1, 7):
        train_v.append(read_volume(TOY / f"tomo{i}.mrc").data)
        train_t.append(merged(read_coordinates(TOY / f"tomo{i}_particles.csv")))
    val_sim = simulated(structures, 200)
    val_v = [val_sim.tomogram, read_volume(TOY / "tomo7.mrc").data]
    val_t = [merged(val_sim.truth), merged(read_coordinates(TOY / "tomo7_particles.csv"))]

    channels = tuple(int(c) for c in args.channels.split(","))
    cfg = PickerConfig(classes=[ParticleClass(1, "particle", 13.0, 4)], block_size=args.block_size, pad_size=args.block_size // 6,
                       channels=channels, voxel_size=10.0)
    bar = TqdmProgress("train")
    model = train_picker(train_v, train_t, cfg, epochs=args.epochs, batch_size=8, lr=args.lr, val_tomograms=val_v, val_tables=val_t,
                         val_every=2, device=args.device, progress=bar,
                         on_epoch=lambda r: print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True))
    bar.close()
    model.save(args.out, overwrite=True)  # saved again below with the test metrics

    # test: fresh simulations at the default parameters, tolerance = each particle's radius
    radius = {i + 1: s.diameter / 2 for i, s in enumerate(structures)}
    sims = [simulated(structures, seed) for seed in (9001, 9002)]
    picks = pool_tomograms([pick(sim.tomogram, model, device=args.device).picks for sim in sims])
    truth = pool_tomograms([sim.truth for sim in sims])
    ev = evaluate_picks(picks, truth, radius)
    # per-class recall: which true particles of each structure were found (class-agnostic picks)
    from napari_bioid.engine.tomo import match_points
    from napari_bioid.engine.io.coords import table_zyx

    found = np.zeros(len(truth), bool)
    m = match_points(table_zyx(picks), table_zyx(truth), truth["class_id"].map(radius).to_numpy())
    found[m[:, 1]] = True
    per_class = {}
    for cid, grp in truth.groupby("class_id"):
        per_class[structures[cid - 1].name] = {"n": int(len(grp)), "recall": round(float(found[grp.index].mean()), 3),
                                               "diameter_voxels": round(structures[cid - 1].diameter, 1)}
    toy8 = evaluate_picks(pick(read_volume(TOY / "tomo8.mrc").data, model, device=args.device).picks,
                          read_coordinates(TOY / "tomo8_particles.csv"), 4.0)
    metrics = {
        "trained_by": "scripts/train_default_picker.py",
        "epochs": args.epochs, "best_epoch": model.metrics["best_epoch"], "best_val_f1": round(model.metrics["best_val_f1"], 4),
        "simulated_test": {"seeds": [9001, 9002], "snr": 0.1, "tolerance": "particle radius",
                           "precision": round(ev["precision"], 4), "recall": round(ev["recall"], 4), "f1": round(ev["f1"], 4),
                           "n_true": ev["n_true"], "n_pred": ev["n_pred"], "recall_per_structure": per_class},
        "toy_tomo8": {"tolerance": 4.0, "precision": round(toy8["precision"], 4), "recall": round(toy8["recall"], 4), "f1": round(toy8["f1"], 4)},
        "total_seconds": round(time.perf_counter() - t_start),
    }
    model.metrics.update(metrics)
    model.save(args.out, overwrite=True)
    args.out.with_suffix(".json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
