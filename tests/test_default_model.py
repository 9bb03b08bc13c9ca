"""The shipped default picking model on a tomogram it has never seen."""

import warnings

import pytest

from napari_bioid.engine.tomo import evaluate_picks, load_picker, pick
from napari_bioid.engine.tomo.config import default_model_path
from napari_bioid.engine.tomo.simulate import SimulationParams, load_structures, simulate_tomogram

from conftest import SHARED

STRUCTURES = SHARED / "data" / "cryoet" / "structures"


def test_default_model_picks_a_fresh_simulation():
    if not STRUCTURES.is_dir():
        pytest.skip(f"structures not found at {STRUCTURES}")
    structures = load_structures(STRUCTURES, 10.0)
    # a seed no training or validation run used, default SNR, tilt range and CTF
    sim = simulate_tomogram(structures, SimulationParams(shape_zyx=(64, 160, 160), n_particles=40, n_vesicles=1, n_fiducials=3, seed=4242))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # trained at this voxel size: no warning
        model = load_picker(default_model_path(), voxel_size=10.0)
    picks = pick(sim.tomogram, model).picks
    radius = {i + 1: s.diameter / 2 for i, s in enumerate(structures)}
    ev = evaluate_picks(picks, sim.truth, radius)
    print({k: round(ev[k], 3) for k in ("precision", "recall", "f1")}, ev["n_true"], ev["n_pred"])
    assert ev["f1"] >= 0.8, ev


def test_pick_without_model_uses_the_shipped_one(tmp_path, capsys):
    from napari_bioid.cli import main

    sample = default_model_path().parents[1] / "sample_data" / "sample_tomogram.mrc"
    if not sample.is_file():
        pytest.skip("sample data not in this installation")
    assert main(["tomo", "pick", str(sample), "--out", str(tmp_path / "p.csv"), "--truth", str(sample.with_name("sample_truth.csv"))]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluation"]["f1"] >= 0.8, summary


def test_pick_bin_auto_picks_a_finer_tomogram_at_the_models_voxel_size(tmp_path, capsys):
    """A 5 Å tomogram and the 10 Å model: --bin auto bins 2× and writes picks in the tomogram's own voxels."""
    import json

    import mrcfile
    import pandas as pd
    from scipy import ndimage as ndi

    from napari_bioid.cli import main
    from napari_bioid.engine.io import write_mrc

    sample = default_model_path().parents[1] / "sample_data" / "sample_tomogram.mrc"
    if not sample.is_file():
        pytest.skip("sample data not in this installation")
    fine = ndi.zoom(mrcfile.read(sample).astype("float32"), 2, order=3)  # the same specimen at 5 Å (cubic: linear blurs it)
    write_mrc(tmp_path / "fine.mrc", fine, 5.0)
    truth = pd.read_csv(sample.with_name("sample_truth.csv"))
    pd.DataFrame({f"{c}_A": truth[c] * 10.0 for c in ("x", "y", "z")}).to_csv(tmp_path / "truth_A.csv", index=False)
    args = ["tomo", "pick", str(tmp_path / "fine.mrc"), "--out", str(tmp_path / "p.csv"), "--truth", str(tmp_path / "truth_A.csv"),
            "--tolerance", "6"]
    assert main(args + ["--bin", "auto"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bin"] == 2 and summary["evaluation"]["f1"] >= 0.8, summary
    picks = pd.read_csv(tmp_path / "p.csv")
    assert picks["x"].max() > 130  # in the 5 Å tomogram's voxels (256 wide), not the binned 128
    assert main(args[:4] + [str(tmp_path / "q.csv"), "--bin", "0"]) != 0
    assert not (tmp_path / "q.csv").exists()
