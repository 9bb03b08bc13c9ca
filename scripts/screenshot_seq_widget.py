"""Open napari with the base-calling widget on a simulated flow-cell tile, call it, save a screenshot.

Run:  xvfb-run -a python scripts/screenshot_seq_widget.py [docs/seq_widget.png]
      xvfb-run -a python scripts/screenshot_seq_widget.py docs/seq_widget_multitask.png multitask
        (a tile at twice the default density called by the multi-task network; its 2x layers shown, the raw stack hidden)
"""

import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_bioid.engine.seq.io import read_fasta, write_stack
from napari_bioid.engine.seq.simulate import SeqSimParams, simulate_tile
from napari_bioid.widgets.seq import BaseCallingWidget

ROOT = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "seq_widget.png")
caller = sys.argv[2] if len(sys.argv) > 2 else "classical"
ref = ROOT.parent / "shared" / "data" / "sequencing" / "reference" / "chrM.fasta"
dense = caller == "multitask"
tile = simulate_tile(SeqSimParams(height=256, width=256, n_cycles=20 if dense else 60, density_k_per_mm2=400.0 if dense else 200.0, seed=4),
                     "".join(read_fasta(ref).values()))
path = write_stack(tile.stack, Path(tempfile.mkdtemp()) / "tile_1101.tif")

viewer = napari.Viewer(title="napari-bioid: base calling")
viewer.window.resize(1500, 950)
viewer.open(str(path), plugin="napari-bioid")
widget = BaseCallingWidget(viewer)
viewer.window.add_dock_widget(widget, name="Base calling", area="right")
widget.reference.setText(str(ref))
widget.caller_combo.setCurrentText(caller)
widget.call()
app = QApplication.instance()
while widget.busy:
    app.processEvents()
    time.sleep(0.05)
if dense:
    for layer in viewer.layers:
        if "seq_stack" in layer.metadata:
            layer.visible = False
viewer.dims.set_current_step(0, 12 if dense else 44)
viewer.camera.center = (0, 64, 64)
viewer.camera.zoom = 9
widget.points.selected_data = {10}
for _ in range(20):
    app.processEvents()
    time.sleep(0.05)
out.parent.mkdir(parents=True, exist_ok=True)
viewer.screenshot(str(out), canvas_only=False)
print(widget.status.text(), f"; screenshot saved to {out}")
viewer.close()
