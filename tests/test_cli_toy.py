"""The CLI contract end to end, on the real DeepFinder toy tomograms.

A small picker is trained on tomograms 1–6 (the picks' F1 on tomogram 6 chooses
the checkpoint), then picks tomograms 7–8, which it never saw, not even for
checkpoint selection; the class-agnostic F1 at a tolerance of 4 voxels must
reach 0.8.
"""

import json

import pandas as pd
import pytest

from napari_bioid.cli import main

SMALL = ["--epochs", "6", "--block-size", "40", "--pad-size", "6", "--channels", "8,16,32", "--lr", "2e-3",
         "--diameter", "11", "--label-radius", "4", "--val-every", "3", "--batch-size", "8", "--merge-classes"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy_dir_module):
    out = tmp_path_factory.mktemp("model") / "toy.pt"
    args = ["tomo", "train", "--out", str(out)] + SMALL
    for i in range(1, 7):
        args += ["--tomogram", str(toy_dir_module / f"tomo{i}.mrc"), "--coords", str(toy_dir_module / f"tomo{i}_particles.csv")]
    args += ["--val-tomogram", str(toy_dir_module / "tomo6.mrc"), "--val-coords", str(toy_dir_module / "tomo6_particles.csv")]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def toy_dir_module():
    from conftest import TOY

    if not TOY.is_dir():
        pytest.skip(f"real data not found at {TOY}")
    return TOY


def test_small_model_picks_unseen_toy_tomograms(trained, toy_dir_module, tmp_path, capsys):
    f1 = []
    for i in (7, 8):
        picks = tmp_path / f"picks{i}.csv"
        star = tmp_path / f"picks{i}.star"
        assert main(["tomo", "pick", str(toy_dir_module / f"tomo{i}.mrc"), "--model", str(trained), "--out", str(picks), "--star", str(star)]) == 0
        table = pd.read_csv(picks)
        assert list(table.columns[:8]) == ["x", "y", "z", "class_id", "score", "x_A", "y_A", "z_A"]
        assert table["x_A"].to_numpy() == pytest.approx(table["x"].to_numpy() * 10.0)  # voxel size from the MRC header
        assert star.read_text().count("_rlnCoordinate") == 3
        capsys.readouterr()
        assert main(["tomo", "evaluate", str(picks), str(toy_dir_module / f"tomo{i}_particles.csv"), "--tolerance", "4"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert {"precision", "recall", "f1", "per_class"} <= set(result)
        f1.append(result["f1"])
    # pick with an overview image and an evaluation against the truth in one call
    png = tmp_path / "sub" / "overview.png"
    assert main(["tomo", "pick", str(toy_dir_module / "tomo8.mrc"), "--model", str(trained), "--out", str(tmp_path / "again.csv"),
                 "--overview", str(png), "--truth", str(toy_dir_module / "tomo8_particles.csv"), "--tolerance", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluation"]["f1"] == pytest.approx(f1[1], abs=1e-4)
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] == 800
    print("class-agnostic F1 on tomograms 7, 8:", f1)
    assert min(f1) >= 0.8


def test_pick_refuses_to_overwrite_and_bad_inputs_write_nothing(trained, toy_dir_module, tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("my precious annotations\n")
    assert main(["tomo", "pick", str(toy_dir_module / "tomo7.mrc"), "--model", str(trained), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "my precious annotations\n"
    assert main(["tomo", "pick", str(tmp_path / "missing.mrc"), "--model", str(trained), "--out", str(tmp_path / "q.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "q.csv").exists()


def test_train_rejects_coordinates_outside_the_tomogram(toy_dir_module, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,z,class_id\n10,10,10,1\n150,20,20,1\n")
    out = tmp_path / "m.pt"
    assert main(["tomo", "train", "--tomogram", str(toy_dir_module / "tomo1.mrc"), "--coords", str(bad), "--out", str(out)] + SMALL) == 2
    assert "outside the volume" in capsys.readouterr().err
    assert not out.exists()
