"""Issue 14: many tomograms on a 2-worker dask LocalCluster; a corrupt file is reported, the rest complete; a rerun resumes."""

import json
import shutil

import pandas as pd
import pytest

from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.io import read_coordinates
from napari_bioid.engine.tomo import evaluate_picks
from napari_bioid.engine.tomo.config import default_model_path

SAMPLE = default_model_path().parents[1] / "sample_data" / "sample_tomogram.mrc"


def test_batch_on_a_local_cluster_reports_failures_and_resumes(tmp_path, capsys):
    pytest.importorskip("distributed")
    from napari_bioid.cli import main
    from napari_bioid.engine.tomo.batch import pick_batch

    if not SAMPLE.is_file():
        pytest.skip("sample data not in this installation")
    src = tmp_path / "in"
    src.mkdir()
    paths = []
    for name in ("ts_01", "ts_02", "ts_03"):
        paths.append(shutil.copy(SAMPLE, src / f"{name}.mrc"))
    bad = src / "ts_bad.mrc"
    bad.write_bytes(b"not an MRC file at all" * 10)
    paths.insert(1, bad)
    out = tmp_path / "out"
    with pytest.raises(BioidInputError, match="same name"):
        pick_batch([paths[0], paths[0]], out, default_model_path())
    assert not out.exists()  # nothing written for bad input

    summary = pick_batch(paths, out, default_model_path(), n_workers=2)
    assert list(summary["tomogram"]) == [str(p) for p in paths]
    assert list(summary["status"]) == ["done", "failed", "done", "done"]
    assert "ts_bad" in summary.loc[1, "tomogram"] and summary.loc[1, "error"]
    truth = read_coordinates(SAMPLE.with_name("sample_truth.csv"), 10.0, (64, 128, 128))
    for name in ("ts_01", "ts_02", "ts_03"):
        picks = read_coordinates(out / f"{name}_picks.csv", 10.0, (64, 128, 128))
        assert evaluate_picks(picks, truth, 5.0)["f1"] >= 0.8
    assert pd.read_csv(out / "summary.csv")["status"].tolist() == ["done", "failed", "done", "done"]
    mtime = (out / "ts_01_picks.csv").stat().st_mtime_ns

    # rerun through the CLI, from a list file: the finished ones are skipped, the corrupt one fails again (exit 1)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, paths)) + "\n")
    capsys.readouterr()
    assert main(["tomo", "pick-batch", "--list", str(listing), "--out-dir", str(out), "--workers", "2"]) == 1
    printed = capsys.readouterr().out
    assert "dask dashboard" in printed
    res = json.loads(printed[printed.index("{"):])
    assert res["skipped"] == 3 and res["failed"] == {str(bad): pd.read_csv(out / "summary.csv").loc[1, "error"]}
    assert (out / "ts_01_picks.csv").stat().st_mtime_ns == mtime
