"""Open napari with the Cell scanner on real CRC H&E tiles in two groups, detect and classify, show the statistics.

Run:  xvfb-run -a python scripts/screenshot_cells_widget.py [docs/cells_widget.png]
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication, QTabWidget

from napari_bioid.widgets.cells import CellScannerWidget

ROOT = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "cells_widget.png")
crc = ROOT.parent / "shared" / "data" / "he_nuclei" / "crc_phenotypes" / "validation"
tmp = Path(tempfile.mkdtemp())
for group, names in (("group A", ["img16", "img25"]), ("group B", ["img4", "img43"])):
    (tmp / group).mkdir()
    for n in names:
        shutil.copy(crc / f"{n}.png", tmp / group / f"{n}.png")

viewer = napari.Viewer(title="napari-bioid: cell scanner")
viewer.window.resize(1500, 950)
widget = CellScannerWidget(viewer)
viewer.window.add_dock_widget(widget, name="Cell scanner", area="right")
widget.open_folder(tmp)
widget.um_per_px.setValue(0.5)
widget.all_images.setChecked(True)
app = QApplication.instance()
widget.detect()
while widget.busy:
    app.processEvents()
    time.sleep(0.05)
for layer in viewer.layers:
    layer.visible = layer.metadata.get("image", layer.name) == "img16"
widget.positive_combo.setCurrentText("inflammatory")
widget.compute_statistics()
widget.findChild(QTabWidget).setCurrentIndex(2)
viewer.camera.center = (150, 150)
viewer.camera.zoom = 3.2
for _ in range(20):
    app.processEvents()
    time.sleep(0.05)
out.parent.mkdir(parents=True, exist_ok=True)
viewer.screenshot(str(out), canvas_only=False)
print(widget.status.text(), f"; screenshot saved to {out}")
viewer.close()
