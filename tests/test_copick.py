"""Issue 14: copick projects. Picks round-trip unchanged (Å and voxels); a model trains from a project's picks and its picks go back in."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("copick")

from napari_bioid.cli import main
from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.tomo import evaluate_picks
from napari_bioid.engine.tomo.copick_project import CopickProject

from conftest import synthetic_balls

VOXEL = 12.0  # Å
RUNS = ["TS_0", "TS_1", "TS_2", "TS_3", "TS_4"]
SEEDS = [0, 1, 2, 10, 99]  # as test_training: three to train on, one to validate, one to pick


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A filesystem copick project: 5 runs of bright balls at 12 Å/voxel, an annotator's picks of 'blob' in Å."""
    import copick

    root_dir = tmp_path_factory.mktemp("copick")
    cfg = {"config_type": "filesystem", "name": "balls", "description": "test", "version": "1.0.0",
           "pickable_objects": [{"name": "blob", "is_particle": True, "label": 1, "radius": 3 * VOXEL},
                                {"name": "other", "is_particle": True, "label": 2, "radius": 60.0}],
           "overlay_root": f"local://{root_dir}/overlay", "static_root": f"local://{root_dir}/static",
           "overlay_fs_args": {"auto_mkdir": True}, "static_fs_args": {"auto_mkdir": True}}
    path = root_dir / "copick.json"
    path.write_text(json.dumps(cfg))
    root = copick.from_file(str(path))
    truth = {}
    for name, seed in zip(RUNS, SEEDS):
        vol, table = synthetic_balls(seed)
        run = root.new_run(name)
        run.new_voxel_spacing(VOXEL).new_tomogram("wbp").from_numpy(vol)
        if name != "TS_4":  # the run left for picking has no annotations
            picks = run.new_picks("blob", "0", "annotator")
            picks.from_numpy(table[["x", "y", "z"]].to_numpy() * VOXEL)
            picks.store()
        truth[name] = table
    return path, truth


def test_listing_and_reading_tomograms(project):
    path, _ = project
    p = CopickProject(path)
    assert p.runs == RUNS and list(p.objects["name"]) == ["blob", "other"]
    assert set(p.tomograms()["voxel_size"]) == {VOXEL} and set(p.tomograms()["tomo_type"]) == {"wbp"}
    vol = p.read_tomogram("TS_1", target_voxel_size=VOXEL)
    assert vol.shape == (48, 48, 48) and vol.voxel_size == VOXEL and vol.metadata["level"] == 0
    assert p.read_tomogram("TS_1", target_voxel_size=2 * VOXEL).voxel_size == 2 * VOXEL  # the pyramid's next level
    with pytest.raises(BioidInputError, match="no run 'TS_9'.*TS_0"):
        p.read_tomogram("TS_9")
    with pytest.raises(BioidInputError, match="no 'denoised' tomogram.*wbp"):
        p.read_tomogram("TS_1", tomo_type="denoised")
    with pytest.raises(BioidInputError, match="no voxel spacing 7"):
        p.read_tomogram("TS_1", voxel_size=7.0)
    with pytest.raises(BioidInputError, match="no such copick configuration"):
        CopickProject(path.with_name("missing.json"))


def test_picks_round_trip_in_voxels_and_angstrom(project):
    path, truth = project
    p = CopickProject(path)
    read = p.read_picks("TS_1", VOXEL, user_id="annotator")
    np.testing.assert_allclose(read[["x", "y", "z"]].to_numpy(), truth["TS_1"][["x", "y", "z"]].to_numpy())
    assert set(read["object_name"]) == {"blob"} and set(read["class_id"]) == {1}
    # at another voxel size the same Å positions are other voxels
    np.testing.assert_allclose(p.read_picks("TS_1", 2 * VOXEL, user_id="annotator")["x"].to_numpy(), truth["TS_1"]["x"].to_numpy() / 2)
    ours = pd.DataFrame({"x": [3.25, 10.5, 20.0], "y": [4.0, 5.5, 6.0], "z": [7.0, 8.0, 9.75], "class_id": [1, 2, 1], "score": [0.9, 0.4, np.nan]})
    written = p.write_picks("TS_2", ours, VOXEL, {1: "blob", 2: "other"}, session_id="7")
    assert sorted(written) == ["napari-bioid_7_blob", "napari-bioid_7_other"]
    back = CopickProject(path).read_picks("TS_2", VOXEL, user_id="napari-bioid", session_id="7").sort_values("x").reset_index(drop=True)
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), ours[["x", "y", "z"]].to_numpy(), atol=1e-9)
    assert list(back["class_id"]) == [1, 2, 1] and list(back["score"]) == [0.9, 0.4, 1.0]  # NaN (a hand pick) is stored as 1
    raw = json.loads(next((path.parent / "overlay").rglob("napari-bioid_7_blob.json")).read_text())
    assert raw["points"][0]["location"] == {"x": 3.25 * VOXEL, "y": 4.0 * VOXEL, "z": 7.0 * VOXEL}  # Å on disk
    # nothing is overwritten unasked; with overwrite the old points are kept as a backup session
    with pytest.raises(FileExistsError):
        p.write_picks("TS_2", ours, VOXEL, {1: "blob", 2: "other"}, session_id="7")
    p.write_picks("TS_2", ours.iloc[:1], VOXEL, {1: "blob"}, session_id="7", overwrite=True)
    sets = CopickProject(path).pick_sets(["TS_2"]).set_index(["session_id", "object_name"])["n"]
    assert sets[("7", "blob")] == 1 and sets[("7-backup", "blob")] == 2
    with pytest.raises(BioidInputError, match="not a pickable object"):
        p.write_picks("TS_2", ours, VOXEL, {1: "blob", 2: "ribosome"})


def test_a_model_trains_from_the_project_and_its_picks_go_back_in(project, tmp_path, capsys):
    path, truth = project
    model = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["tomo", "train", "--copick", str(path), "--object", "blob", "--user-id", "annotator", "--val-runs", "TS_3",
                     "--out", str(model), "--epochs", "8", "--batch-size", "4", "--lr", "3e-3", "--block-size", "24", "--pad-size", "4",
                     "--channels", "4,8", "--val-every", "2", "--label-radius", "3"]) == 0
    from napari_bioid.engine.tomo import load_picker

    cfg = load_picker(model).config
    assert [c.name for c in cfg.classes] == ["blob"] and cfg.classes[0].diameter == pytest.approx(7.0) and cfg.voxel_size == VOXEL
    capsys.readouterr()
    assert main(["tomo", "pick", "--copick", str(path), "--run", "TS_4", "--model", str(model)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["copick"]["pick_sets"] == ["napari-bioid_0_blob"]
    picks = CopickProject(path).read_picks("TS_4", VOXEL, user_id="napari-bioid")
    assert evaluate_picks(picks, truth["TS_4"], 2.0)["f1"] >= 0.9
    # picking again refuses to replace them before any work
    assert main(["tomo", "pick", "--copick", str(path), "--run", "TS_4", "--model", str(model)]) == 2
    assert "already has picks" in capsys.readouterr().err
