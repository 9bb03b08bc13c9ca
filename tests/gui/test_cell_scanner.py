"""The Cell scanner widget, whole flow on real CRC H&E tiles: open a folder of groups, detect, correct, autosave and
restore, fine-tune a personal model and use it, statistics and their files (issue 12)."""

import shutil
import time

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QTimer

from conftest import SHARED

CRC_VAL = SHARED / "data" / "he_nuclei" / "crc_phenotypes" / "validation"


@pytest.fixture
def groups(tmp_path):
    if not CRC_VAL.is_dir():
        pytest.skip("CRCHistoPhenotypes not found")
    root = tmp_path / "scan"
    for group, names in (("treated", ["img16", "img25"]), ("control", ["img4"])):
        (root / group).mkdir(parents=True)
        for n in names:
            shutil.copy(CRC_VAL / f"{n}.png", root / group / f"{n}.png")
    return root


def _move(layer, i, dx, dy):
    """What napari's select-mode drag does: shift a shape, then announce the change of that shape."""
    from napari.layers.base import ActionType

    layer._data_view.shift(i, np.array([dy, dx], float))
    layer.events.data(value=layer.data, action=ActionType.CHANGED, data_indices=(i,), vertex_indices=((),))


def test_whole_flow(make_napari_viewer, qtbot, groups, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOID_CELL_MODELS", str(tmp_path / "models"))
    from napari_bioid.widgets.cells import CellScannerWidget

    viewer = make_napari_viewer()
    w = CellScannerWidget(viewer)
    viewer.window.add_dock_widget(w)
    imgs = w.open_folder(groups)
    assert [l.metadata["group"] for l in imgs] == ["control", "treated", "treated"]
    w.um_per_px.setValue(0.5)
    w.all_images.setChecked(True)
    # detection in a worker: the event loop keeps turning
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append((time.perf_counter(), w._worker is not None and not w._apply_queue)))
    timer.start(20)
    w.detect()
    qtbot.waitUntil(lambda: w._worker is None, timeout=300_000)  # detection (worker) done
    timer.stop()
    during = [t for t, detecting in ticks if detecting]  # ticks while the worker detects (the boxes are drawn after)
    assert len(during) > 10 and max(np.diff(during)) < 0.5, max(np.diff(during))
    qtbot.waitUntil(lambda: not w.busy, timeout=60_000)  # boxes drawn, a chunk per turn of the event loop
    layers = {l.metadata["image"]: l for l in w.cell_layers()}
    assert set(layers) == {"img16", "img25", "img4"}
    a = layers["img16"]
    assert len(a.data) > 30 and set(a.features["class"]) <= {"epithelial", "fibroblast", "inflammatory", "others"}
    assert {"class", "class_probability", "score", "area_px"} <= set(a.features.columns)
    # correct: move, delete, add, re-class (picker and key)
    before = a.data[0].copy()
    _move(a, 0, 5.0, -3.0)
    a.selected_data = {1}
    gone = a.data[1].copy()
    a.remove_selected()
    w.class_combo.setCurrentText("others")
    w._defaults(a)
    a.add_rectangles([np.array([[10.0, 10], [10, 24], [24, 24], [24, 10]])])
    a.selected_data = {2}
    w.set_class("inflammatory", a)
    a.selected_data = {3}
    w._key_class(a, w._classes().index("fibroblast") + 1)
    b = layers["img25"]
    b.selected_data = {0}
    b.remove_selected()
    qtbot.wait(600)  # the autosave timer
    side = groups / "treated" / "img16.png.cells.csv"
    saved = pd.read_csv(side)
    assert (saved["edited"] == "deleted").sum() == 1 and (saved["edited"] == "edited").sum() == 4
    assert saved.iloc[-2]["class"] == "others" and np.isclose(saved.iloc[-2]["x_min"], 10)  # the added box (before the deleted row)
    n_boxes = len(a.data)
    moved = a.data[0].copy()
    np.testing.assert_allclose(moved - before, [[-3, 5]] * 4)
    classes = list(a.features["class"])
    # restore: close the image and its boxes, open it again
    viewer.layers.remove(a)
    viewer.layers.remove("img16")
    again = w.open_image(groups / "treated" / "img16.png", "treated")
    r = w.cells_layer(again)
    assert r is not None and len(r.data) == n_boxes and list(r.features["class"]) == classes
    np.testing.assert_allclose(r.data[0], moved, atol=0.01)  # saved to 0.01 px
    assert len(r.metadata["deleted"]) == 1 and np.allclose(r.metadata["deleted"][0], [gone[:, 1].min(), gone[:, 0].min(), gone[:, 1].max(), gone[:, 0].max()], atol=0.01)
    # fine-tune one short round → a personal model in the picker, then used
    assert len(w.corrected_images()) == 2
    w.model_name.setText("mine")
    w.det_steps.setValue(4)
    w.cls_epochs.setValue(1)
    w.finetune()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert (tmp_path / "models" / "mine" / "model.json").is_file(), w.status.text()
    assert "mine" in [w.model_combo.itemText(i) for i in range(w.model_combo.count())] and w.model_combo.currentText() == "mine"
    info = w.model().info
    assert info["tuned_from"] == "default" and sorted(info["measured_on"] + info["tuned_on"]) == ["img16", "img25"] and len(info["tuned_on"]) == 1 and "f1" in info["metrics_after"]
    assert any(len(v) for v in w._loss_data.values())  # the live loss plot got points
    w.all_images.setChecked(False)
    w.image_combo.setCurrentText("img16")
    w.detect()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert w.last_model.name == "mine" and "mine" in w.status.text()
    r = w.cells_layer(again)
    kept = r.features["status"] == "edited"
    assert kept.sum() == 4  # the user's boxes survive a new detection
    assert any(np.allclose(d, moved, atol=0.01) for d in r.data)
    # statistics over the two groups, shown and written
    w.positive_combo.setCurrentText("inflammatory")
    st = w.compute_statistics()
    assert len(st["per_image"]) == 3 and set(st["per_group"]["group"]) == {"control", "treated"}
    assert w.plots_layout.count() == 4 and len(st["density"]) > 0
    files = w.export_statistics(tmp_path / "stats")
    assert len(pd.read_csv(files["per_image.csv"])) == 3 and (tmp_path / "stats" / "density.png").is_file()
