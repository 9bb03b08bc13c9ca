"""The "Cell scanner" dock widget: detect and classify cells, correct the boxes, read the statistics, fine-tune.

A thin layer over :mod:`napari_bioid.engine.cells`: *Detect* runs
:func:`~napari_bioid.engine.cells.pipeline.detect_cells` (detector + classifier
of the chosen model) in a worker with a progress bar and *Cancel*, on the
selected image or on every open image. Each image gets one Shapes layer
``<image> cells``: rectangles coloured by class with "class probability" as
text, the features table holding class, probability, score, area and the edit
status; boxes below the fade threshold are drawn faded.

Correction: move, resize, delete and add boxes with napari's shape tools;
*Set class* (or the keys 1–9 on the layer) changes the selected boxes' class.
Every edit is autosaved beside the image as ``<image>.cells.csv`` (atomic, the
previous version kept as ``.bak``; images without a file autosave under
``~/.napari-bioid/autosave/cells``) and restored when the image is opened
again. A new detection keeps every box the user made or changed and drops the
detections that a deleted box covered.

*Fine-tune* continues the chosen model on the corrected images in a worker
with a live loss plot and saves a named personal model (detector, classifier,
``model.json`` with the metrics before and after on a held-back image); it
joins the model picker. *Statistics* computes counts, proportions, sizes and
the density score over every image with boxes (groups: the sub-folders of an
opened folder) and shows the plots; *Export* writes the tables and plots.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
from qtpy.QtCore import QTimer, Signal, QObject
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QScrollArea, QTabWidget, QVBoxLayout,
    QWidget,
)

from ..engine.errors import BioidInputError
from ._form import choose_folder, refill_combo, run_controls, spin
from ._worker import WorkerHost, notify, notify_error, warm_up_imports

AUTOSAVE_DIR = Path.home() / ".napari-bioid" / "autosave" / "cells"
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
PALETTE = [(0.2, 0.9, 0.2), (1.0, 0.3, 0.3), (0.3, 0.6, 1.0), (1.0, 0.8, 0.0), (0.8, 0.2, 1.0), (0.0, 0.9, 0.9), (1.0, 0.5, 0.0), (1.0, 1.0, 1.0)]
FEATURES = ["class", "class_probability", "score", "area_px", "status"]
CHUNK = 100  # boxes drawn per turn of the event loop


class _Losses(QObject):
    point = Signal(str, int, float)


def boxes_to_shapes(df: pd.DataFrame) -> List[np.ndarray]:
    """Boxes (x_min, y_min, x_max, y_max; px) → napari rectangles, corners as [y, x]."""
    return [np.array([[r.y_min, r.x_min], [r.y_min, r.x_max], [r.y_max, r.x_max], [r.y_max, r.x_min]], float) for r in df.itertuples()]


def shapes_to_boxes(data: List[np.ndarray]) -> np.ndarray:
    """napari shapes ([y, x] vertices) → boxes (n, 4) x_min, y_min, x_max, y_max (the bounding box of each)."""
    if not len(data):
        return np.zeros((0, 4))
    return np.array([[d[:, -1].min(), d[:, -2].min(), d[:, -1].max(), d[:, -2].max()] for d in data], float)


class CellScannerWidget(WorkerHost, QWidget):
    """Dock widget over the cells engine (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._init_worker()
        self._models: Dict[str, object] = {}
        self._pending: Dict[int, object] = {}
        self._apply_queue: List = []  # GUI work done a piece per event-loop turn
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self.autosave)
        self._losses = _Losses()
        self._losses.point.connect(self._loss_point)
        self._loss_data: Dict[str, List] = {}
        self.stats = None
        self.last_model = None  # the CellModel of the last detection / fine-tuning
        self._build()
        self.viewer.layers.events.inserted.connect(self._layer_inserted)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        warm_up_imports(("torch", "scipy.ndimage", "skimage.transform", "matplotlib.figure"))

    # ---------------------------------------------------------------- UI
    def _build(self):
        from .seq import _Figure

        root = QVBoxLayout(self)
        f = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("an RGB image layer (H&E); open files or a folder of groups with the buttons below")
        f.addRow("image", self.image_combo)
        row = QHBoxLayout()
        self.open_btn = QPushButton("Open image…")
        self.open_btn.clicked.connect(self._open_dialog)
        self.folder_btn = QPushButton("Open folder…")
        self.folder_btn.setToolTip("every image in a folder; sub-folders are groups (e.g. treated / control)")
        self.folder_btn.clicked.connect(self._folder_dialog)
        row.addWidget(self.open_btn)
        row.addWidget(self.folder_btn)
        f.addRow(row)
        self.um_per_px = spin(0.0, 10.0, 0.5, 0.05, " µm/px", special="unknown", decimals=4)
        self.um_per_px.setToolTip("pixel size of the images; unknown: the model's (with a warning)")
        f.addRow("pixel size", self.um_per_px)
        mrow = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("the shipped default or a personal (fine-tuned) model")
        self.refresh_models_btn = QPushButton("↻")
        self.refresh_models_btn.setMaximumWidth(30)
        self.refresh_models_btn.clicked.connect(self._refresh_models)
        mrow.addWidget(self.model_combo)
        mrow.addWidget(self.refresh_models_btn)
        f.addRow("model", mrow)
        self.conf = spin(0.0, 0.99, 0.0, 0.05, special="model's", decimals=2)
        self.conf.setToolTip("detection confidence; default: the model's operating point (chosen on held-out images)")
        f.addRow("confidence", self.conf)
        self.all_images = QCheckBox("all open images")
        f.addRow(self.all_images)
        root.addLayout(f)
        self.detect_btn = QPushButton("Detect")
        self.detect_btn.setToolTip("detect and classify (worker thread); boxes you made or changed are kept")
        self.detect_btn.clicked.connect(self.detect)
        run_controls(self, root, self.detect_btn)

        tabs = QTabWidget()
        correct = QWidget()
        cf = QFormLayout(correct)
        self.class_combo = QComboBox()
        self.class_combo.setEditable(True)
        self.class_combo.setToolTip("class of new boxes and of 'Set class'; type a name to add a class")
        cf.addRow("class", self.class_combo)
        self.set_class_btn = QPushButton("Set class of selected boxes")
        self.set_class_btn.clicked.connect(lambda: self.set_class())
        cf.addRow(self.set_class_btn)
        self.fade = spin(0.0, 1.0, 0.5, 0.05, decimals=2)
        self.fade.setToolTip("boxes whose class probability is below this are drawn faded")
        self.fade.valueChanged.connect(lambda _: [self._restyle(l) for l in self.cell_layers()])
        cf.addRow("fade below", self.fade)
        self.autosave_label = QLabel("keys 1–9 on a cells layer set the class of the selected boxes; every edit is autosaved")
        self.autosave_label.setWordWrap(True)
        cf.addRow(self.autosave_label)
        tabs.addTab(correct, "Correct")

        tune = QWidget()
        tf = QFormLayout(tune)
        self.model_name = QLineEdit()
        self.model_name.setPlaceholderText("personal model name")
        tf.addRow("name", self.model_name)
        self.det_steps = spin(1, 5000, 200, 50)
        tf.addRow("detector steps", self.det_steps)
        self.cls_epochs = spin(0, 100, 5, 1)
        tf.addRow("classifier epochs", self.cls_epochs)
        self.tune_det = QCheckBox("detector")
        self.tune_det.setChecked(True)
        self.tune_cls = QCheckBox("classifier")
        self.tune_cls.setChecked(True)
        r = QHBoxLayout()
        r.addWidget(self.tune_det)
        r.addWidget(self.tune_cls)
        tf.addRow("tune", r)
        self.finetune_btn = QPushButton("Fine-tune on corrected images")
        self.finetune_btn.setToolTip("continue the chosen model on every image with corrections; one image is held back to measure")
        self.finetune_btn.clicked.connect(lambda: self.finetune())
        tf.addRow(self.finetune_btn)
        self.loss_plot = _Figure((4, 2))
        tf.addRow(self.loss_plot)
        tabs.addTab(tune, "Fine-tune")

        st = QWidget()
        sl = QVBoxLayout(st)
        sf = QFormLayout()
        self.positive_combo = QComboBox()
        self.positive_combo.setToolTip("the target (positive) class of the density score; every other class is 'normal'")
        sf.addRow("positive class", self.positive_combo)
        sl.addLayout(sf)
        r = QHBoxLayout()
        self.stats_btn = QPushButton("Compute")
        self.stats_btn.clicked.connect(lambda: self.compute_statistics())
        self.export_btn = QPushButton("Export…")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(self._export_dialog)
        r.addWidget(self.stats_btn)
        r.addWidget(self.export_btn)
        sl.addLayout(r)
        self.stats_label = QLabel("")
        self.stats_label.setWordWrap(True)
        sl.addWidget(self.stats_label)
        self.plots_box = QWidget()
        self.plots_layout = QVBoxLayout(self.plots_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.plots_box)
        sl.addWidget(scroll)
        tabs.addTab(st, "Statistics")
        root.addWidget(tabs)
        self._refresh_models()

    def _action_buttons(self):
        return [self.detect_btn, self.finetune_btn, self.stats_btn, self.open_btn, self.folder_btn]

    # ---------------------------------------------------------------- images and models
    def image_layers(self):
        from napari.layers import Image

        return [l for l in self.viewer.layers if isinstance(l, Image) and l.rgb]

    def cell_layers(self):
        return [l for l in self.viewer.layers if l.metadata.get("bioid") == "cells"]

    def _refresh_images(self, event=None):
        refill_combo(self.image_combo, [l.name for l in self.image_layers()])

    def _refresh_models(self):
        from ..engine.cells.personal import list_cell_models

        refill_combo(self.model_combo, list_cell_models())

    def model(self):
        """The chosen :class:`~napari_bioid.engine.cells.personal.CellModel` (loaded once)."""
        from ..engine.cells.personal import load_cell_model

        name = self.model_combo.currentText() or "default"
        if name not in self._models:
            self._models[name] = load_cell_model(name)
        return self._models[name]

    def _layer_inserted(self, event):
        self._refresh_images()
        layer = event.value
        from napari.layers import Image

        if isinstance(layer, Image) and layer.rgb and self.cells_layer(layer) is None:
            side = self.sidecar(layer)
            if side.is_file():
                self._restore(layer, side)

    def open_image(self, path, group: Optional[str] = None):
        """Open an RGB image file as a layer (its saved boxes restored). Raises BioidInputError for a grey image."""
        from ..engine.cells.data import read_rgb

        path = Path(path)
        img = read_rgb(path)
        md = {"path": str(path)}
        if group:
            md["group"] = group
        return self.viewer.add_image(img, name=path.stem, rgb=True, metadata=md)

    def open_folder(self, folder) -> List:
        """Open every image of ``folder``; images in sub-folders belong to the group named after the sub-folder."""
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BioidInputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return [self.open_image(p, p.parent.name if p.parent != folder else None) for p in files]

    def _open_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open image", str(Path.home()), "Images (*.png *.tif *.tiff *.jpg *.jpeg *.bmp)")
        if path:
            try:
                self.open_image(path)
            except Exception as exc:
                notify_error(exc)

    def _folder_dialog(self):
        choose_folder(self, "Open a folder of images (sub-folders = groups)", self.open_folder)

    @staticmethod
    def image_path(layer) -> Optional[Path]:
        p = layer.metadata.get("path") or getattr(layer.source, "path", None)
        return Path(p) if p else None

    def sidecar(self, image_layer) -> Path:
        from ..engine.cells.personal import sidecar_path

        p = self.image_path(image_layer)
        if p is not None:
            return sidecar_path(p)
        AUTOSAVE_DIR.mkdir(parents=True, exist_ok=True)
        return AUTOSAVE_DIR / (re.sub(r"[^\w.-]+", "_", image_layer.name) + ".cells.csv")

    def cells_layer(self, image_layer):
        for l in self.cell_layers():
            if l.metadata.get("image") == image_layer.name:
                return l
        return None

    def image_of(self, cells_layer):
        name = cells_layer.metadata.get("image")
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _um(self) -> Optional[float]:
        return self.um_per_px.value() or None

    # ---------------------------------------------------------------- the boxes layer
    def _classes(self, extra=()) -> List[str]:
        names = list(self.model().class_names) if self.model_combo.count() else []
        for l in self.cell_layers():
            names += [str(c) for c in l.features.get("class", [])]
        names += [str(e) for e in extra]
        return list(dict.fromkeys(n for n in names if n and n != "nan"))

    def _refresh_classes(self, extra=()):
        names = self._classes(extra)
        cur = self.class_combo.currentText()
        refill_combo(self.class_combo, names)
        if cur:
            self.class_combo.setCurrentText(cur)
        refill_combo(self.positive_combo, names)

    def _colour(self, df: pd.DataFrame) -> np.ndarray:
        names = self._classes()
        cols = np.ones((len(df), 4))
        for i, c in enumerate(df["class"].astype(str)):
            cols[i, :3] = PALETTE[names.index(c) % len(PALETTE)] if c in names else (1, 1, 1)
        cols[:, 3] = np.where(df["class_probability"].to_numpy(float) < self.fade.value(), 0.35, 1.0)
        return cols

    def _restyle(self, layer):
        df = layer.features
        if len(df):
            layer.edge_color = self._colour(df)
        self._update_labels(layer)

    def _set_boxes(self, image_layer, df: pd.DataFrame, deleted: Optional[np.ndarray] = None, chunk: Optional[int] = None):
        """Show ``df`` (boxes table) as the image's cells layer, creating or replacing it.

        With ``chunk``, only the first ``chunk`` boxes are drawn now and the
        rest in later turns of the event loop (napari draws shapes slowly), so
        the viewer never freezes on a large field."""
        df = df.reset_index(drop=True).copy()
        for col, default in (("class_probability", 1.0), ("score", 1.0), ("status", "detected")):
            if col not in df:
                df[col] = default
        df["class"] = df["class"].astype(str)
        df["area_px"] = (df["x_max"] - df["x_min"]) * (df["y_max"] - df["y_min"])
        feats = df[FEATURES]
        layer = self.cells_layer(image_layer)
        md = {"bioid": "cells", "image": image_layer.name, "sidecar": str(self.sidecar(image_layer)),
              "deleted": np.zeros((0, 4)) if deleted is None else np.asarray(deleted, float).reshape(-1, 4)}
        self._refresh_classes(df["class"])
        shapes = boxes_to_shapes(df)
        first = len(shapes) if chunk is None else min(chunk, len(shapes))
        if layer is None:
            layer = self.viewer.add_shapes(shapes[:first], shape_type="rectangle", name=f"{image_layer.name} cells", features=feats.iloc[:first],
                                           edge_width=1.5, face_color="transparent", edge_color=self._colour(feats.iloc[:first]) if first else "lime",
                                           scale=image_layer.scale[-2:], translate=image_layer.translate[-2:], metadata=md)
            layer.events.data.connect(lambda e, l=layer: self._data_changed(l, e))
            for k in range(1, 10):
                layer.bind_key(str(k), lambda l, k=k: self._key_class(l, k), overwrite=True)
        else:
            with layer.events.data.blocker():
                layer.data = []
                layer.metadata.update(md)
                if first:
                    layer.add_rectangles(shapes[:first])
                layer.features = feats.iloc[:first].reset_index(drop=True)
        layer.metadata["loading"] = first < len(shapes)
        if first < len(shapes):
            self._apply_queue.append(lambda: self._add_chunk(layer, shapes, feats, first, chunk))
            QTimer.singleShot(0, self._drain)
        elif chunk is not None:  # colours, then the class labels, each in its own turn
            self._apply_queue += [lambda: self._recolour(layer), lambda: self._update_labels(layer)]
            QTimer.singleShot(0, self._drain)
        else:
            self._restyle(layer)
        self._defaults(layer)
        return layer

    def _recolour(self, layer):
        """Edge colours from the class features (nothing to do on an empty layer)."""
        if len(layer.features):
            layer.edge_color = self._colour(layer.features)

    def _add_chunk(self, layer, shapes, feats, start, chunk):
        stop = min(start + chunk, len(shapes))
        with layer.events.data.blocker():
            layer.add_rectangles(shapes[start:stop])
            layer.features = feats.iloc[:stop].reset_index(drop=True)
        if stop < len(shapes):
            self._apply_queue.append(lambda: self._add_chunk(layer, shapes, feats, stop, chunk))
        else:
            layer.metadata["loading"] = False
            self._apply_queue += [lambda: self._recolour(layer), lambda: self._update_labels(layer)]

    @property
    def busy(self) -> bool:
        return self._worker is not None or bool(self._apply_queue)

    def _drain(self):
        """Run one queued piece of GUI work, and come back for the next in the next turn of the event loop."""
        if self._apply_queue:
            self._apply_queue.pop(0)()
        if self._apply_queue:
            QTimer.singleShot(0, self._drain)

    def labels_layer(self, cells_layer):
        for l in self.viewer.layers:
            if l.metadata.get("bioid") == "cell_labels" and l.metadata.get("image") == cells_layer.metadata.get("image"):
                return l
        return None

    def _update_labels(self, layer):
        """The class and probability of every box as text, on a points layer at the boxes' corners.

        (A Shapes layer's own text costs O(n²) per redraw in napari; points text is linear.)"""
        if layer not in self.viewer.layers or layer.metadata.get("loading"):
            return
        b = shapes_to_boxes(layer.data)
        pts = b[:, [1, 0]] if len(b) else np.zeros((0, 2))
        f = layer.features
        feats = pd.DataFrame({"class": f["class"].astype(str).to_numpy() if len(f) else [], "class_probability": f["class_probability"].to_numpy(float) if len(f) else []})
        lab = self.labels_layer(layer)
        alpha = np.where(feats["class_probability"].to_numpy(float) < self.fade.value(), 0.45, 1.0)
        if lab is None:
            lab = self.viewer.add_points(pts, name=f"{layer.metadata['image']} cell classes", features=feats, size=0.5, face_color="transparent",
                                         border_width=0, scale=layer.scale, translate=layer.translate,
                                         text={"string": "{class} {class_probability:.2f}", "size": 7, "color": "white", "anchor": "lower_left"},
                                         metadata={"bioid": "cell_labels", "image": layer.metadata["image"]})
            lab.editable = False
            self.viewer.layers.selection.active = layer
        else:
            lab.data = pts
            lab.features = feats
        lab.text.color = np.c_[np.ones((len(pts), 3)), alpha] if len(pts) else "white"
        lab.refresh()

    def _defaults(self, layer):
        cls = self.class_combo.currentText() or (self._classes() or ["nucleus"])[0]
        layer.feature_defaults = {"class": cls, "class_probability": 1.0, "score": 1.0, "area_px": 0.0, "status": "edited"}
        layer.current_edge_color = PALETTE[self._classes([cls]).index(cls) % len(PALETTE)] + (1.0,)

    def table(self, layer) -> pd.DataFrame:
        """The layer's boxes as a boxes table (px of the image; status detected / edited)."""
        b = shapes_to_boxes(layer.data)
        f = layer.features.reset_index(drop=True)
        df = pd.DataFrame(b, columns=["x_min", "y_min", "x_max", "y_max"])
        img = self.image_of(layer)
        path = self.image_path(img) if img is not None else None
        df.insert(0, "image", path.name if path else layer.metadata.get("image"))
        for c in ("score", "class", "class_probability", "status"):
            df[c] = f[c].to_numpy() if c in f else None
        return df

    def _data_changed(self, layer, event):
        action = str(getattr(event, "action", ""))
        if action.endswith(("ADDING", "REMOVING", "CHANGING")) or action in ("adding", "removing", "changing"):
            if action.lower().endswith("removing"):
                idx = list(getattr(event, "data_indices", ()) or ())
                if idx and all(i >= 0 for i in idx):
                    gone = shapes_to_boxes([layer.data[i] for i in idx if i < len(layer.data)])
                    layer.metadata["deleted"] = np.concatenate([layer.metadata.get("deleted", np.zeros((0, 4))), gone])
            return
        idx = [i for i in (getattr(event, "data_indices", ()) or ()) if isinstance(i, (int, np.integer))]
        if action.lower().endswith("changed") and idx:
            f = layer.features
            for i in idx:
                if 0 <= i < len(f):
                    f.loc[f.index[i], "status"] = "edited"
        if len(layer.data):
            layer.features["area_px"] = [(b[2] - b[0]) * (b[3] - b[1]) for b in shapes_to_boxes(layer.data)]
        self._touch(layer)

    def _touch(self, layer):
        self._pending[id(layer)] = layer
        self._timer.start()

    def set_class(self, name: Optional[str] = None, layer=None):
        """Give the selected boxes of ``layer`` (default: the active cells layer) the class ``name`` (default: the picker's)."""
        layer = layer or self.viewer.layers.selection.active
        if layer is None or layer.metadata.get("bioid") != "cells":
            return
        name = name or self.class_combo.currentText()
        if not name:
            return
        sel = sorted(layer.selected_data)
        f = layer.features
        for i in sel:
            f.loc[f.index[i], ["class", "class_probability", "status"]] = [name, 1.0, "edited"]
        layer.features = f
        self._refresh_classes([name])
        self._restyle(layer)
        self._defaults(layer)
        self._touch(layer)

    def _key_class(self, layer, k: int):
        names = self._classes()
        if k <= len(names):
            self.set_class(names[k - 1], layer)

    # ---------------------------------------------------------------- autosave / restore
    def autosave(self, layers=None):
        """Write the edited cells layers now (each to its image's sidecar; atomic, previous kept as .bak)."""
        from ..engine.cells.personal import save_corrections

        self._timer.stop()
        layers = list(self._pending.values()) if layers is None else list(layers)
        self._pending.clear()
        for layer in layers:
            if layer.metadata.get("loading"):  # still being drawn: save it once complete
                self._touch(layer)
                continue
            self._update_labels(layer)
            df = self.table(layer)
            gone = np.asarray(layer.metadata.get("deleted", np.zeros((0, 4))), float).reshape(-1, 4)
            if len(gone):
                d = pd.DataFrame(gone, columns=["x_min", "y_min", "x_max", "y_max"]).assign(image=df["image"].iloc[0] if len(df) else layer.metadata.get("image"),
                                                                                          score=0.0, class_probability=0.0, status="deleted")
                d["class"] = ""
                df = pd.concat([df, d], ignore_index=True)
            df["edited"] = df["status"]
            try:
                save_corrections(df, layer.metadata["sidecar"])
                self.autosave_label.setText(f"autosaved to {layer.metadata['sidecar']}")
            except Exception as exc:
                notify_error(f"autosave of {layer.name} failed: {exc}")

    def _restore(self, image_layer, side: Path):
        from ..engine.cells.personal import load_corrections

        try:
            df = load_corrections(side)
        except Exception as exc:
            notify_error(f"{side}: could not restore the boxes ({exc})")
            return None
        if "edited" in df and "status" not in df:
            df["status"] = df["edited"]
        status = df["status"].astype(str) if "status" in df else pd.Series(["detected"] * len(df))
        gone = df.loc[status == "deleted", ["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)
        df = df[status != "deleted"].copy()
        df["class"] = df["class"].fillna("").astype(str) if "class" in df else "cell"
        layer = self._set_boxes(image_layer, df, gone)
        self.status.setText(f"restored {len(df)} boxes from {side.name}")
        return layer

    # ---------------------------------------------------------------- detection
    def _targets(self):
        if self.all_images.isChecked():
            return self.image_layers()
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise BioidInputError("choose an RGB image layer (or open an image)")
        return [self.viewer.layers[name]]

    def detect(self):
        """Detect and classify on the chosen image(s) in a worker."""
        try:
            targets = self._targets()
        except BioidInputError as exc:
            notify_error(exc)
            return None
        jobs = [(l.name, np.asarray(l.data)) for l in targets]
        um, conf = self._um(), (self.conf.value() or None)
        name = self.model_combo.currentText() or "default"

        def job(progress, cancel):
            import warnings

            from ..engine.cells.pipeline import detect_cells

            model = self.model()
            out = {}
            for k, (lname, img) in enumerate(jobs):
                def sub(d, t, m, k=k):
                    progress(k * 1000 + int(1000 * d / max(t, 1)), 1000 * len(jobs), f"{lname}: {m}")

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out[lname] = detect_cells(img, um, model.detector, model.classifier, conf=conf, progress=sub, cancel=cancel)
            return model, out

        return self.start(job, self._detected, f"detecting with {name}…")

    def _detected(self, result):
        model, out = result
        self.last_model = model
        self._n_shown = 0
        for lname, df in out.items():
            self._apply_queue.append(lambda lname=lname, df=df: self._show_detections(lname, df))
        self._apply_queue.append(lambda: self.status.setText(f"{self._n_shown} cells on {len(out)} image(s) with model {model.name}"))
        QTimer.singleShot(0, self._drain)

    def _show_detections(self, lname: str, df: pd.DataFrame):
        """Put one image's detections on its cells layer, keeping the user's boxes and honouring deletions."""
        import torch

        from ..engine.cells.boxes import box_iou

        if lname not in self.viewer.layers:
            return
        img = self.viewer.layers[lname]
        old = self.cells_layer(img)
        keep, gone = pd.DataFrame(), np.zeros((0, 4))
        if old is not None:
            t = self.table(old)
            keep = t[t["status"] == "edited"]
            gone = np.asarray(old.metadata.get("deleted", gone), float).reshape(-1, 4)
        mine = keep[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float).reshape(-1, 4) if len(keep) else np.zeros((0, 4))
        blockers = np.concatenate([mine, gone])
        if len(blockers) and len(df):
            iou = box_iou(torch.tensor(df[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)), torch.tensor(blockers)).numpy()
            df = df[~(iou > 0.5).any(1)]
        merged = pd.concat([keep.drop(columns=["image"], errors="ignore"), df.assign(status="detected")], ignore_index=True)
        layer = self._set_boxes(img, merged, gone, chunk=CHUNK)
        self._n_shown += len(merged)
        self._touch(layer)

    # ---------------------------------------------------------------- fine-tuning
    def corrected_images(self):
        """(image layer, boxes table) of every image whose boxes the user changed."""
        out = []
        for layer in self.cell_layers():
            t = self.table(layer)
            if (t["status"] == "edited").any() or len(layer.metadata.get("deleted", [])):
                img = self.image_of(layer)
                if img is not None:
                    out.append((img, t))
        return out

    def finetune(self, name: Optional[str] = None):
        """Fine-tune the chosen model on the corrected images and save it as a personal model named ``name``."""
        from ..engine.cells.personal import Corrected, models_root

        name = name or self.model_name.text().strip()
        if not name or not re.fullmatch(r"[\w.-]+", name) or name == "default":
            notify_error("give the personal model a name (letters, digits, . _ -)")
            return None
        if (models_root() / name / "model.json").exists():
            notify_error(f"a model named {name} exists; choose another name")
            return None
        self.autosave()
        pairs = self.corrected_images()
        if not pairs:
            notify_error("no corrected images: correct some boxes first")
            return None
        um = self._um() or self.model().um_per_px
        images = [Corrected(img.name, np.asarray(img.data), t, um) for img, t in pairs]
        steps, epochs = self.det_steps.value(), self.cls_epochs.value()
        tune_det, tune_cls = self.tune_det.isChecked(), self.tune_cls.isChecked() and epochs > 0
        self._loss_data = {}
        self.loss_plot.figure.clear()
        self.loss_plot.canvas.draw_idle()

        def job(progress, cancel):
            from ..engine.cells.personal import finetune

            base = self.model()
            tuned = finetune(base, images, name, detector_steps=steps, classifier_epochs=epochs, tune_detector=tune_det,
                             tune_classifier=tune_cls, progress=progress, cancel=cancel,
                             on_loss=lambda stage, step, loss: self._losses.point.emit(stage, int(step), float(loss)))
            tuned.save(models_root() / name)
            return tuned

        return self.start(job, self._tuned, f"fine-tuning {name} on {len(images)} corrected image(s)…")

    def _loss_point(self, stage: str, step: int, loss: float):
        self._loss_data.setdefault(stage, []).append((step, loss))
        fig = self.loss_plot.figure
        fig.clear()
        ax = fig.add_subplot()
        for k, pts in self._loss_data.items():
            a = np.array(pts)
            ax.plot(a[:, 0], a[:, 1], label=k, lw=1)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("loss", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
        self.loss_plot.canvas.draw_idle()

    def _tuned(self, tuned):
        self._models[tuned.name] = tuned
        self._refresh_models()
        self.model_combo.setCurrentText(tuned.name)
        b, a = tuned.info["metrics_before"], tuned.info["metrics_after"]
        msg = f"saved {tuned.name}: detection F1 {b['f1']:.3f} → {a['f1']:.3f} on {', '.join(tuned.info['measured_on'])}"
        self.status.setText(msg)
        notify(msg)

    # ---------------------------------------------------------------- statistics
    def compute_statistics(self):
        """Statistics over every image with boxes; the plots go into the dock. Returns the tables."""
        from ..engine.cells.stats import cell_statistics, statistics_figures

        tables, sizes, groups = [], {}, {}
        for layer in self.cell_layers():
            img = self.image_of(layer)
            t = self.table(layer)
            key = t["image"].iloc[0] if len(t) else layer.metadata.get("image")
            if img is not None:
                sizes[key] = tuple(np.asarray(img.data).shape[:2])
                if img.metadata.get("group"):
                    groups[key] = img.metadata["group"]
            tables.append(t)
        if not tables:
            notify_error("no boxes yet: detect first")
            return None
        pos = self.positive_combo.currentText()
        self.stats = cell_statistics(pd.concat(tables, ignore_index=True), sizes, groups, positive=[pos] if pos else [], um_per_px=self._um())
        while self.plots_layout.count():
            w = self.plots_layout.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

        for fig in statistics_figures(self.stats).values():
            canvas = FigureCanvasQTAgg(fig)
            canvas.setMinimumHeight(220)
            self.plots_layout.addWidget(canvas)
        pg = self.stats["per_group"]
        self.stats_label.setText("; ".join(f"{r['group']}: {int(r['n_cells'])} cells in {int(r['n_images'])} image(s)" for _, r in pg.iterrows()))
        self.export_btn.setEnabled(True)
        return self.stats

    def export_statistics(self, folder, overwrite: bool = False):
        """Write the statistics tables (CSV) and plots (PNG, SVG) into ``folder``."""
        from ..engine.cells.stats import write_statistics

        if self.stats is None:
            self.compute_statistics()
        return write_statistics(self.stats, folder, overwrite=overwrite)

    def _export_dialog(self):
        def export(path):
            notify(f"wrote {len(self.export_statistics(path))} files to {path}")

        choose_folder(self, "Export statistics to a folder", export)
