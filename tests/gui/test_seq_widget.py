"""The base-calling widget: open a simulated stack, call it, read bases per cycle, inspect a cluster, export."""

import numpy as np
import pytest

from napari_bioid.engine.seq.io import read_fasta, read_fastq, write_stack
from napari_bioid.engine.seq.simulate import SeqSimParams, simulate_tile

from conftest import SHARED

REF = SHARED / "data" / "sequencing" / "reference" / "chrM.fasta"


@pytest.fixture
def stack_file(tmp_path):
    if not REF.is_file():
        pytest.skip("reference not found")
    tile = simulate_tile(SeqSimParams(height=160, width=160, n_cycles=40, seed=9), "".join(read_fasta(REF).values()))
    return write_stack(tile.stack, tmp_path / "tile.tif"), tile


def test_call_show_inspect_export(make_napari_viewer, qtbot, stack_file, tmp_path):
    from napari_bioid.widgets.seq import BaseCallingWidget

    path, tile = stack_file
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-bioid")
    assert [l.name for l in layers] == ["tile A", "tile C", "tile G", "tile T"]
    assert all(l.blending == "additive" and l.data.shape == (40, 160, 160) for l in layers)
    w = BaseCallingWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.stack_combo.currentText() == "tile"
    w.reference.setText(str(REF))
    w.call()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert w.run is not None, w.status.text()
    pts = viewer.layers["tile calls"]
    c = w.run.calls
    assert len(pts.data) == len(c.bases) > 0.5 * len(tile.truth)
    assert "aligned" in w.status.text() and w.report["error_rate"] < 0.03
    # the text follows the cycle slider: the base called at that cycle
    for t in (0, 17, 39):
        viewer.dims.set_current_step(0, t)
        assert list(pts.features["label"]) == ["ACGT"[b] for b in c.bases[:, t]]
    # low-quality calls are faded
    viewer.dims.set_current_step(0, 39)
    alpha = np.asarray(pts.border_color)[:, 3]
    assert ((alpha < 0.5) == (c.qualities[:, 39] < 20)).all()
    # selecting a cluster shows its read and trace
    pts.selected_data = {3}
    assert c.reads[3] in w.cluster_label.text()
    assert len(w.trace.figure.axes[0].lines) == 4
    # export: FASTQ of the pass-filter reads, named by tile and position
    out = w.export(tmp_path / "reads")
    names, reads, quals = read_fastq(out["fastq"])
    assert len(reads) == int(c.pass_filter.sum()) and names[0].startswith("tile:")
    assert out["csv"].is_file()


def test_multitask_caller_shows_the_super_resolved_image(make_napari_viewer, qtbot, tmp_path):
    """The multi-task caller: its own clusters, the 2× image as one layer per channel over the stack, separated clusters."""
    from napari_bioid.widgets.seq import BaseCallingWidget

    if not REF.is_file():
        pytest.skip("reference not found")
    tile = simulate_tile(SeqSimParams(height=96, width=96, n_cycles=8, density_k_per_mm2=400.0, seed=19), "".join(read_fasta(REF).values()))
    path = write_stack(tile.stack, tmp_path / "dense.tif")
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-bioid")
    w = BaseCallingWidget(viewer)
    w.caller_combo.setCurrentText("multitask")
    w.call()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert w.run is not None, w.status.text()
    c = w.run.calls
    assert c.info["caller"] == "multitask" and "separated" in w.status.text()
    sr = [viewer.layers[f"dense 2x {b}"] for b in "ACGT"]
    assert all(l.data.shape == (8, 192, 192) and tuple(l.scale) == (1.0, 0.5, 0.5) for l in sr)
    # the 2× layers lie over the stack: their extent matches the 96 px tile
    assert np.allclose(sr[0].extent.world[1][1:], [95.25, 95.25], atol=0.01)
    pts = viewer.layers["dense calls"]
    assert len(pts.data) == len(c.bases) and pts.features["separated"].sum() == c.info["separated_clusters"]
    # a second call replaces the 2× layers instead of piling them up
    w.call()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert sum(l.name.startswith("dense 2x") for l in viewer.layers) == 4
