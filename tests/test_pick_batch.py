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


def test_one_tomogram_split_over_the_workers_gives_the_whole_tomogram_picks(tmp_path):
    pytest.importorskip("distributed")
    from napari_bioid.engine.io import read_volume
    from napari_bioid.engine.tomo import load_picker, pick
    from napari_bioid.engine.tomo.batch import pick_batch

    if not SAMPLE.is_file():
        pytest.skip("sample data not in this installation")
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"\0" * 4096)
    summary = pick_batch([SAMPLE, bad], tmp_path / "out", default_model_path(), n_workers=2, slab_slices=24)  # 2 slabs of 28 and 36 slices
    assert list(summary["status"]) == ["done", "failed"] and summary.loc[1, "error"]
    ours = pd.read_csv(tmp_path / "out" / "sample_tomogram_picks.csv")
    whole = pick(read_volume(SAMPLE).data, load_picker(default_model_path(), 10.0)).picks
    pd.testing.assert_frame_equal(ours[["x", "y", "z", "class_id"]], whole[["x", "y", "z", "class_id"]].reset_index(drop=True), check_dtype=False)
    assert ours["score"].to_numpy() == pytest.approx(whole["score"].to_numpy(), abs=1e-6)
