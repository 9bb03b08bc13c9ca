"""Open napari with the chromosome review widget on one held-out karyogram case, save a screenshot.

The case's crops are written at random angles to a temporary folder (as crops arrive from a
segmentation), oriented with the shipped model, and shown least confident first.

Run:  xvfb-run -a python scripts/screenshot_karyo_widget.py [docs/karyo_widget.png]
"""

import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_bioid.engine.karyo import list_crops, read_crop, rotate_image, split_by_case
from napari_bioid.widgets.karyo import KaryogramWidget

ROOT = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "karyo_widget.png")
test = split_by_case(list_crops(ROOT.parent / "shared" / "data" / "chromosomes" / "karyogram_crops"), 0.3, seed=0)[1]
case = sorted({c.case for c in test})[1]
tmp = Path(tempfile.mkdtemp()) / case
rng = np.random.default_rng(0)
for c in (c for c in test if c.case == case):
    (tmp / c.chromosome).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rotate_image(read_crop(c.path), float(rng.uniform(0, 360)))).save(tmp / c.chromosome / f"{c.path.stem}.png")

viewer = napari.Viewer(title="napari-bioid: chromosome orientation review")
viewer.window.resize(1500, 950)
widget = KaryogramWidget(viewer)
viewer.window.add_dock_widget(widget, name="Chromosome orientation review", area="right")
widget.folder.setText(str(tmp))
widget.threshold.setValue(0.995)  # outline the few crops the classifier is least sure of
widget.orient()
app = QApplication.instance()
while widget.busy:
    app.processEvents()
    time.sleep(0.05)
viewer.reset_view()
for _ in range(20):
    app.processEvents()
    time.sleep(0.05)
out.parent.mkdir(parents=True, exist_ok=True)
viewer.screenshot(str(out), canvas_only=False)
print(widget.status.text(), f"; screenshot saved to {out}")
viewer.close()
