"""Issue 14: the picking widget opens a copick project's run, shows its pick sets, and saves its picks back into the project."""

import json

import numpy as np
import pytest

pytest.importorskip("copick")

from napari_bioid.engine.io import read_coordinates, read_volume
from napari_bioid.engine.tomo import evaluate_picks
from napari_bioid.engine.tomo.config import default_model_path
from napari_bioid.engine.tomo.copick_project import CopickProject

SAMPLE = default_model_path().parents[1] / "sample_data" / "sample_tomogram.mrc"


@pytest.fixture
def project(tmp_path):
    import copick

    cfg = {"config_type": "filesystem", "name": "sample", "description": "", "version": "1.0.0",
           "pickable_objects": [{"name": "particle", "is_particle": True, "label": 1, "radius": 60.0}],
           "overlay_root": f"local://{tmp_path}/overlay", "static_root": f"local://{tmp_path}/static",
           "overlay_fs_args": {"auto_mkdir": True}, "static_fs_args": {"auto_mkdir": True}}
    path = tmp_path / "copick.json"
    path.write_text(json.dumps(cfg))
    root = copick.from_file(str(path))
    run = root.new_run("TS_1")
    run.new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(np.asarray(read_volume(SAMPLE).data, np.float32))
    truth = read_coordinates(SAMPLE.with_name("sample_truth.csv"))
    picks = run.new_picks("particle", "0", "annotator")
    picks.from_numpy(truth[["x", "y", "z"]].to_numpy() * 10.0)
    picks.store()
    return path, truth


def test_open_a_run_pick_it_and_save_the_picks_into_the_project(make_napari_viewer, qtbot, project):
    from napari_bioid.widgets.picking import PickingWidget

    path, truth = project
    viewer = make_napari_viewer()
    w = PickingWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.copick.load(path)
    assert w.copick.run_combo.currentText() == "TS_1" and w.copick.tomo_combo.currentText() == "10 Å wbp"
    image = w.copick.open_run()
    assert image.name == "TS_1 wbp" and tuple(image.scale) == (10.0,) * 3 and image.data.shape == (64, 128, 128)
    annot = viewer.layers["TS_1 particle (annotator/0)"]
    assert len(annot.data) == len(truth) and tuple(annot.scale) == (10.0,) * 3
    np.testing.assert_allclose(np.sort(annot.data[:, 2]), np.sort(truth["x"].to_numpy()))

    assert w.tomogram is image and w.voxel_size == pytest.approx(10.0)
    w.copick.save_picks()  # nothing picked yet: a message, nothing written
    assert len(CopickProject(path).pick_sets()) == 1
    w.pick()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    n = len(w.picks_layer.data)
    assert evaluate_picks(CopickProject(path).read_picks("TS_1", 10.0, user_id="annotator"), truth, 4.0)["f1"] == 1.0
    assert w.copick.save_picks() == ["napari-bioid_0_particle"]
    ours = CopickProject(path).read_picks("TS_1", 10.0, user_id="napari-bioid")
    assert len(ours) == n and evaluate_picks(ours, truth, 4.0)["f1"] >= 0.8
    # a second save does not replace the first unless asked; then the old points are kept as a backup session
    w.picks_layer.selected_data = {0}
    w.picks_layer.remove_selected()
    assert w.copick.save_picks() is None
    assert len(CopickProject(path).read_picks("TS_1", 10.0, user_id="napari-bioid", session_id="0")) == n
    w.copick.replace_check.setChecked(True)
    w.copick.save_picks()
    sets = CopickProject(path).pick_sets()
    sets = sets[sets["user_id"] == "napari-bioid"].set_index("session_id")["n"]
    assert sets["0"] == n - 1 and sets["0-backup"] == n
