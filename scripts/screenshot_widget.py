"""Open napari on the sample tomogram with the picking widget, pick, save a screenshot.

Run:  xvfb-run -a python scripts/screenshot_widget.py [docs/picking_widget.png]
"""

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_bioid.widgets.picking import PickingWidget

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "picking_widget.png")
out.parent.mkdir(parents=True, exist_ok=True)
viewer = napari.Viewer(title="napari-bioid: particle picking")
viewer.window.resize(1400, 900)
viewer.open_sample("napari-bioid", "sample_tomogram")
viewer.layers["sample truth"].visible = False
widget = PickingWidget(viewer)
viewer.window.add_dock_widget(widget, name="Particle picking", area="right")
widget.pick()
app = QApplication.instance()
while widget.busy:
    app.processEvents()
    time.sleep(0.05)
viewer.dims.set_point(0, 32 * 10.0)  # the central slice (world units: Å)
viewer.reset_view()
for _ in range(20):
    app.processEvents()
    time.sleep(0.05)
viewer.screenshot(str(out), canvas_only=False)
print(f"{len(widget.picks_layer.data)} picks; screenshot saved to {out}")
viewer.close()
