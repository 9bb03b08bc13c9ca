"""Make the bundled sample tomogram with its truth picks.

Run:  python scripts/make_sample_data.py   (writes src/napari_bioid/sample_data/sample_tomogram.mrc,
src/napari_bioid/sample_data/sample_truth.csv and src/napari_bioid/sample_data/sample_params.json; ~10 s)

A 64 × 128 × 128 tomogram at 10 Å/voxel simulated by
``napari_bioid.engine.tomo.simulate`` from the real density maps (4V94, 4CR2,
5MRC) and the SHREC 2019 shape masks in ../shared/data/cryoet/structures, with
one vesicle and gold fiducials, default tilt range, CTF and SNR, seed 2026.
"""

import json
import sys
from pathlib import Path

from napari_bioid.cli.tomo import default_structures_dir
from napari_bioid.engine.io import write_coordinates, write_mrc
from napari_bioid.engine.tomo.simulate import SimulationParams, load_structures, params_dict, simulate_tomogram

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_bioid" / "sample_data"
PARAMS = SimulationParams(shape_zyx=(64, 128, 128), voxel_size_A=10.0, n_particles=30, n_vesicles=1, n_fiducials=3, seed=2026)


def main(overwrite: bool = "--overwrite" in sys.argv) -> None:
    structures = load_structures(default_structures_dir(), PARAMS.voxel_size_A)
    sim = simulate_tomogram(structures, PARAMS)
    write_mrc(OUT / "sample_tomogram.mrc", sim.tomogram, PARAMS.voxel_size_A, overwrite=overwrite)
    write_coordinates(sim.truth, OUT / "sample_truth.csv", PARAMS.voxel_size_A, overwrite=overwrite)
    meta = params_dict(PARAMS)
    meta["classes"] = {i + 1: {"name": s.name, "diameter_voxels": round(s.diameter, 2)} for i, s in enumerate(structures)}
    (OUT / "sample_params.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(sim.truth)} particles -> {OUT}")


if __name__ == "__main__":
    main()
