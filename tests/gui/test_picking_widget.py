"""The picking widget end to end on the bundled sample tomogram."""

import time

import numpy as np
import pandas as pd
import pytest

from napari_bioid.engine.io import read_coordinates


@pytest.fixture
def viewer_widget(make_napari_viewer):
    from napari_bioid.widgets.picking import PickingWidget

    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-bioid", "sample_tomogram")
    assert [l.name for l in layers] == ["sample_tomogram", "sample truth"]
    widget = PickingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _wait(qtbot, widget, timeout=300_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def test_full_flow_annotate_train_pick_filter_export(viewer_widget, qtbot, tmp_path):
    viewer, w = viewer_widget
    assert w.tomogram.name == "sample_tomogram" and w.voxel_size == pytest.approx(10.0)
    truth = read_coordinates(w.tomogram.metadata["path"].replace("sample_tomogram.mrc", "sample_truth.csv"))

    # annotate: a points layer in add mode; clicks add points with the current class
    layer = w.start_annotation()
    assert layer.mode == "add"
    w.class_spin.setValue(2)
    layer.add(truth[["z", "y", "x"]].to_numpy()[:3])
    w.class_spin.setValue(1)
    layer.add(truth[["z", "y", "x"]].to_numpy()[3:12])
    assert layer.features["class_id"].tolist() == [2] * 3 + [1] * 9
    qtbot.waitUntil(lambda: w.sidecar_path().is_file(), timeout=3000)
    assert len(read_coordinates(w.sidecar_path())) == 12  # autosaved

    w.preview_labels()
    _wait(qtbot, w)
    labels = viewer.layers["sample_tomogram weak labels"]
    assert set(np.unique(labels.data)) == {0, 1, 2}

    # train one tiny epoch
    w.epochs_spin.setValue(1)
    w.block_spin.setValue(24)
    w.pad_spin.setValue(4)
    w.model_out.setText(str(tmp_path / "tiny.pt"))
    w.train()
    _wait(qtbot, w)
    assert (tmp_path / "tiny.pt").is_file() and len(w.plot.records) == 1
    assert w.model_in.text() == str(tmp_path / "tiny.pt")

    # pick with the shipped default model
    w.model_in.setText("")
    w.set_min_score(0)
    w.pick()
    _wait(qtbot, w)
    n_all = len(w.picks_layer.data)
    assert n_all >= len(truth) * 0.8
    assert set(w.picks_layer.features.columns) >= {"class_id", "score"}

    # the score slider re-filters at once, without the network
    w.set_min_score(0.35)
    n_high = len(w.picks_layer.data)
    assert 0 < n_high < n_all
    assert (w.picks_layer.features["score"] >= 0.35).all()

    # hand edit, then export: the file holds exactly the layer's points
    w.picks_layer.selected_data = {0}
    w.picks_layer.remove_selected()
    out = w.export(tmp_path / "picks.csv")
    table = pd.read_csv(out)
    assert len(table) == n_high - 1
    assert {"x", "y", "z", "x_A", "y_A", "z_A", "class_id", "score"} <= set(table.columns)
    np.testing.assert_allclose(table["x_A"], table["x"] * 10.0)
    star = w.export(tmp_path / "picks.star")
    assert len(read_coordinates(star)) == n_high - 1


def test_pick_keeps_the_event_loop_responsive(viewer_widget, qtbot):
    from qtpy.QtCore import QTimer

    viewer, w = viewer_widget
    ticks = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    w.pick()
    _wait(qtbot, w)
    timer.stop()
    assert len(w.picks_layer.data) > 0
    gaps = np.diff(ticks)
    assert len(gaps) > 10 and gaps.max() < 0.5, f"longest event-loop stall {gaps.max():.2f} s"


def test_errors_are_notifications_not_crashes(viewer_widget, qtbot, tmp_path):
    viewer, w = viewer_widget
    w.model_in.setText(str(tmp_path / "missing.pt"))
    assert w.pick() is None  # a notification, no worker started
    assert not w.busy
    assert w.train() is None  # no annotations yet
