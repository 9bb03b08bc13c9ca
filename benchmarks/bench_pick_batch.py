"""Many tomograms: serial picking against `bioid tomo pick-batch` on a local dask cluster (issue 14).

    python benchmarks/bench_pick_batch.py [--n 8] [--shape 64,128,128] [--workers 2]

Simulates ``--n`` tomograms (the sample tomogram's settings, seeds 1..n, real density maps from
../shared/data/cryoet/structures) and adds one corrupt file. Then:

* serial: one process picks them one after another with torch using every core (what a loop over
  ``bioid tomo pick`` does, without the start-up cost of each call);
* cluster: :func:`napari_bioid.engine.tomo.batch.pick_batch` on a LocalCluster of ``--workers``
  processes, one torch thread each (start-up of the cluster included);
* resume: the same batch again, which must skip every finished tomogram.

Printed (JSON lines): wall times, the speed-up cluster/serial, the workers' utilisation (task
seconds / (workers × wall)), the failures reported (the corrupt file must be the only one), and
that the picks of both paths agree.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from napari_bioid.cli.tomo import default_structures_dir
from napari_bioid.engine.io import read_volume, write_mrc
from napari_bioid.engine.tomo import load_picker, pick
from napari_bioid.engine.tomo.batch import pick_batch
from napari_bioid.engine.tomo.config import default_model_path
from napari_bioid.engine.tomo.simulate import SimulationParams, load_structures, simulate_tomogram


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--shape", default="64,128,128")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    model_path = default_model_path()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        structures = load_structures(default_structures_dir(), 10.0)
        paths = []
        t0 = time.perf_counter()
        for seed in range(1, a.n + 1):
            params = SimulationParams(shape_zyx=shape, voxel_size_A=10.0, n_particles=int(30 * (shape[0] * shape[1] * shape[2]) / (64 * 128 * 128)),
                                      n_vesicles=1, n_fiducials=3, seed=seed)
            paths.append(write_mrc(d / f"tomo{seed:02d}.mrc", simulate_tomogram(structures, params).tomogram, 10.0))
        corrupt = d / "corrupt.mrc"
        corrupt.write_bytes(b"not an MRC file" * 100)
        print(json.dumps({"simulated": a.n, "shape": shape, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)

        torch.set_num_threads(os.cpu_count() or 2)
        model = load_picker(model_path, 10.0)
        t0 = time.perf_counter()
        serial = {}
        for p in paths:
            serial[p.name] = pick(read_volume(p).data, model).picks
        t_serial = time.perf_counter() - t0
        print(json.dumps({"path": "serial", "tomograms": a.n, "torch_threads": torch.get_num_threads(), "seconds": round(t_serial, 1)}), flush=True)

        out = d / "out"
        t0 = time.perf_counter()
        summary = pick_batch([str(p) for p in paths] + [str(corrupt)], out, model_path, n_workers=a.workers,
                             on_dashboard=lambda link: print(json.dumps({"dashboard": link}), flush=True))
        t_cluster = time.perf_counter() - t0
        done = summary[summary["status"] == "done"]
        failed = summary[summary["status"] == "failed"]
        same = all(len(pd.read_csv(out / f"{Path(p).stem}_picks.csv")) == len(serial[Path(p).name]) for p in done["tomogram"])
        print(json.dumps({"path": "dask LocalCluster", "workers": a.workers, "threads_per_worker": max(1, (os.cpu_count() or 2) // a.workers),
                          "seconds": round(t_cluster, 1), "speedup_vs_serial": round(t_serial / t_cluster, 2),
                          "worker_utilisation": round(float(done["seconds"].sum()) / (a.workers * t_cluster), 2),
                          "done": int(len(done)), "failed": failed["tomogram"].map(lambda p: Path(p).name).tolist(),
                          "failure_reason": failed["error"].tolist(), "same_pick_counts_as_serial": bool(same)}), flush=True)

        t0 = time.perf_counter()
        again = pick_batch([str(p) for p in paths] + [str(corrupt)], out, model_path, n_workers=a.workers)
        print(json.dumps({"path": "resume", "seconds": round(time.perf_counter() - t0, 1),
                          "skipped": int((again["status"] == "skipped").sum()), "recomputed": int((again["status"] == "done").sum()),
                          "failed_again": int((again["status"] == "failed").sum())}), flush=True)


if __name__ == "__main__":
    main()
