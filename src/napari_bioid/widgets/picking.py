"""The particle-picking dock widget: annotate, preview labels, train, pick, export.

A thin layer over :mod:`napari_bioid.engine.tomo`: it gathers inputs from
layers and controls, runs one engine call in a worker thread with a progress
bar and a cancel button, and shows the result as layers. Annotations are
autosaved to a sidecar CSV next to the tomogram (or under
``~/.napari-bioid/autosave`` when that folder is not writable) after every
edit, so closing the widget or napari never loses them.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
    QPushButton, QSlider, QVBoxLayout, QWidget,
)

from .._layers import class_colour, points_to_table, table_to_points
from ..engine.io import read_coordinates, write_coordinates
from ._form import refill_combo, spin
from ._worker import WorkerHost
from ._worker import notify as _notify
from ._worker import notify_error as _notify_error

AUTOSAVE_DIR = Path.home() / ".napari-bioid" / "autosave"


class LossPlot(QWidget):
    """A small live plot of training loss and validation F1 per epoch."""

    def __init__(self):
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3, 1.8), dpi=80, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.ax = self.figure.add_subplot(111)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self.setMinimumHeight(150)
        self.records = []
        self.redraw()

    def clear(self):
        self.records = []
        self.redraw()

    def add(self, record: dict):
        self.records.append(record)
        self.redraw()

    def redraw(self):
        ax = self.ax
        ax.clear()
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if self.records:
            ep = [r["epoch"] for r in self.records]
            ax.plot(ep, [r["loss"] for r in self.records], "-o", ms=3, label="Dice loss")
            f1 = [(r["epoch"], r["val_f1"]) for r in self.records if not math.isnan(r["val_f1"])]
            if f1:
                ax.plot(*zip(*f1), "-s", ms=3, label="val F1")
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=7, loc="lower left")
        self.canvas.draw_idle()


class PickingWidget(WorkerHost, QWidget):
    """Dock widget over the picking engine (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._init_worker()
        self.result = None  # PickResult of the last pick
        self.picks_layer = None
        self.annotations = None  # the current annotation points layer
        self.model_path: Optional[Path] = None  # last model trained here
        self._diameters: Dict[int, float] = {}
        self._relay.epoch.connect(self._on_epoch)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(300)
        self._autosave_timer.timeout.connect(self.autosave)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ---------------------------------------------------------------- UI
    def _build(self):
        root = QVBoxLayout(self)

        box = QGroupBox("Tomogram")
        f = QFormLayout(box)
        self.tomo_combo = QComboBox()
        self.tomo_combo.currentIndexChanged.connect(self._tomogram_changed)
        self.voxel_label = QLabel("–")
        f.addRow("layer", self.tomo_combo)
        f.addRow("voxel size", self.voxel_label)
        root.addWidget(box)

        box = QGroupBox("Annotate")
        f = QFormLayout(box)
        self.class_spin = spin(1, 255, 1)
        self.class_spin.valueChanged.connect(self._class_changed)
        self.diameter_spin = spin(1.0, 200.0, 11.0, suffix=" vox")
        self.diameter_spin.valueChanged.connect(self._diameter_changed)
        self.annotate_btn = QPushButton("Annotate (new or restored points layer)")
        self.annotate_btn.clicked.connect(self.start_annotation)
        self.autosave_label = QLabel("")
        self.autosave_label.setWordWrap(True)
        f.addRow("class", self.class_spin)
        f.addRow("diameter", self.diameter_spin)
        f.addRow(self.annotate_btn)
        f.addRow(self.autosave_label)
        root.addWidget(box)

        box = QGroupBox("Labels")
        f = QFormLayout(box)
        self.shape_combo = QComboBox()
        self.shape_combo.addItems(["sphere", "gaussian", "cube"])
        self.radius_spin = spin(0, 50, 0, special="from diameter")
        self.preview_btn = QPushButton("Preview weak labels")
        self.preview_btn.clicked.connect(self.preview_labels)
        f.addRow("shape", self.shape_combo)
        f.addRow("radius", self.radius_spin)
        f.addRow(self.preview_btn)
        root.addWidget(box)

        box = QGroupBox("Train")
        f = QFormLayout(box)
        self.epochs_spin = spin(1, 1000, 20)
        self.block_spin = spin(16, 256, 40, step=8)
        self.pad_spin = spin(0, 64, 6)
        self.lr_spin = spin(1e-5, 1e-1, 2e-3, step=1e-4, decimals=5)
        self.net_combo = QComboBox()
        self.net_combo.addItems(["small (8, 16, 32): CPU", "full (24, 48, 72, 108): GPU"])
        self.model_out = QLineEdit(str(Path.home() / "napari-bioid-picker.pt"))
        self.train_btn = QPushButton("Train")
        self.train_btn.clicked.connect(self.train)
        self.plot = LossPlot()
        f.addRow("epochs", self.epochs_spin)
        f.addRow("block size", self.block_spin)
        f.addRow("pad", self.pad_spin)
        f.addRow("learning rate", self.lr_spin)
        f.addRow("network", self.net_combo)
        f.addRow("save model to", self.model_out)
        f.addRow(self.train_btn)
        f.addRow(self.plot)
        root.addWidget(box)

        box = QGroupBox("Pick")
        f = QFormLayout(box)
        self.model_in = QLineEdit()
        self.model_in.setPlaceholderText("shipped default model")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_in)
        row.addWidget(browse)
        self.threshold_spin = spin(0.01, 0.99, 0.5, step=0.05)
        self.score_slider = QSlider(Qt.Horizontal)
        self.score_slider.setRange(0, 100)
        self.score_slider.setValue(20)
        self.score_label = QLabel("0.20")
        self.score_slider.valueChanged.connect(self._refilter)
        srow = QHBoxLayout()
        srow.addWidget(self.score_slider)
        srow.addWidget(self.score_label)
        self.distance_spin = spin(0.0, 200.0, 0.0, suffix=" vox", special="radius + 1")
        self.distance_spin.valueChanged.connect(self._refilter)
        self.pick_btn = QPushButton("Pick")
        self.pick_btn.clicked.connect(self.pick)
        self.count_label = QLabel("")
        f.addRow("model", row)
        f.addRow("threshold", self.threshold_spin)
        f.addRow("min score", srow)
        f.addRow("distance", self.distance_spin)
        f.addRow(self.pick_btn)
        f.addRow(self.count_label)
        root.addWidget(box)

        self.progress = QProgressBar()
        self.progress.setFormat("%p% %v/%m")
        self.status = QLabel("")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        prow = QHBoxLayout()
        prow.addWidget(self.progress)
        prow.addWidget(self.cancel_btn)
        root.addLayout(prow)
        root.addWidget(self.status)

        box = QGroupBox("Export picks")
        h = QHBoxLayout(box)
        self.csv_btn = QPushButton("CSV…")
        self.star_btn = QPushButton("STAR…")
        self.csv_btn.clicked.connect(lambda: self._export_dialog(".csv"))
        self.star_btn.clicked.connect(lambda: self._export_dialog(".star"))
        h.addWidget(self.csv_btn)
        h.addWidget(self.star_btn)
        root.addWidget(box)
        root.addStretch(1)

    # ---------------------------------------------------------------- layers
    def _image_layers(self):
        from napari.layers import Image

        return [l for l in self.viewer.layers if isinstance(l, Image) and l.ndim == 3]

    def _refresh_layers(self, event=None):
        refill_combo(self.tomo_combo, [l.name for l in self._image_layers()])
        self._tomogram_changed()

    @property
    def tomogram(self):
        name = self.tomo_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def voxel_size(self) -> Optional[float]:
        t = self.tomogram
        if t is None:
            return None
        vs = t.metadata.get("voxel_size")
        if vs:
            return float(vs)
        return float(t.scale[-1]) if float(t.scale[-1]) != 1.0 else None

    def _tomogram_changed(self, *_):
        vs = self.voxel_size
        self.voxel_label.setText(f"{vs:g} Å" if vs else "unknown (coordinates in voxels only)")

    def _show_spheres(self, diameter: float):
        """Thicken the z slice so particles appear as the cut of their sphere near the slice."""
        t = self.tomogram
        if t is None or t.ndim != 3:
            return
        axis = self.viewer.dims.ndim - 3
        half = diameter / 2 * float(t.scale[0])
        left, right = list(self.viewer.dims.margin_left), list(self.viewer.dims.margin_right)
        if left[axis] < half or right[axis] < half:
            left[axis] = right[axis] = half
            self.viewer.dims.margin_left, self.viewer.dims.margin_right = tuple(left), tuple(right)

    # ---------------------------------------------------------------- annotate
    def sidecar_path(self) -> Path:
        """Where annotations of the current tomogram are autosaved."""
        t = self.tomogram
        src = t.metadata.get("path") if t is not None else None
        stem = Path(src).stem if src else (t.name if t is not None else "annotations")
        if src and not t.metadata.get("sample") and os.access(Path(src).parent, os.W_OK):
            return Path(src).with_name(f"{stem}_annotations.csv")
        AUTOSAVE_DIR.mkdir(parents=True, exist_ok=True)
        return AUTOSAVE_DIR / f"{stem}_annotations.csv"

    def start_annotation(self):
        """Create (or restore from the sidecar) the annotation points layer and enter add mode."""
        t = self.tomogram
        if t is None:
            _notify_error("open a tomogram first")
            return None
        name = f"{t.name} annotations"
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
        else:
            side = self.sidecar_path()
            if side.is_file():
                table = read_coordinates(side)
                _notify(f"restored {len(table)} annotations from {side}")
            else:
                table = points_to_table(np.zeros((0, 3)))
            data, kw, _ = table_to_points(table, self.voxel_size, name=name, diameters=self._diameter_map(table))
            kw["scale"] = tuple(t.scale)
            kw["metadata"] = {"voxel_size": self.voxel_size, "bioid": "annotations", "tomogram": t.name}
            layer = self.viewer.add_points(data, ndim=3, **kw)
            layer.events.data.connect(self._annotations_edited)
        layer.feature_defaults["class_id"] = self.class_spin.value()
        layer.feature_defaults["score"] = np.nan
        layer.current_size = self.diameter_spin.value()
        layer.current_border_color = class_colour(self.class_spin.value())
        self.annotations = layer
        self._show_spheres(max(self._diameter_map(points_to_table(layer.data, layer.features)).values()))
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
        self.autosave_label.setText(f"autosaved to {self.sidecar_path()}")
        return layer

    def _diameter_map(self, table) -> Dict[int, float]:
        return {int(c): self._diameters.get(int(c), self.diameter_spin.value()) for c in set(table["class_id"]) | {self.class_spin.value()}}

    def _class_changed(self, value: int):
        self.diameter_spin.blockSignals(True)
        self.diameter_spin.setValue(self._diameters.get(value, self.diameter_spin.value()))
        self.diameter_spin.blockSignals(False)
        if self.annotations is not None:
            self.annotations.feature_defaults["class_id"] = value
            self.annotations.current_border_color = class_colour(value)
            self.annotations.current_size = self.diameter_spin.value()

    def _diameter_changed(self, value: float):
        self._diameters[self.class_spin.value()] = float(value)
        layer = self.annotations
        if layer is not None:
            layer.current_size = value
            cls = layer.features["class_id"].to_numpy() if len(layer.data) else np.zeros(0)
            if len(cls):
                sizes = np.asarray(layer.size, dtype=float).copy()
                sizes[cls == self.class_spin.value()] = value
                layer.size = sizes

    def _annotations_edited(self, event=None):
        layer = self.annotations
        if layer is not None and len(layer.data):
            cls = layer.features["class_id"].to_numpy()
            colours = [class_colour(int(c)) for c in cls]
            with layer.events.data.blocker():
                layer.border_color = colours
        self._autosave_timer.start()

    def autosave(self):
        """Write the annotation layer to its sidecar CSV now (atomic; the previous one kept as .bak)."""
        layer = self.annotations
        if layer is None:
            return
        try:
            table = points_to_table(layer.data, layer.features)
            write_coordinates(table, self.sidecar_path(), self.voxel_size, overwrite=True)
        except Exception as exc:  # never lose the edit silently
            _notify_error(f"autosave failed: {exc}")

    def closeEvent(self, event):
        self.autosave()
        super().closeEvent(event)

    def hideEvent(self, event):
        self.autosave()
        super().hideEvent(event)

    def annotation_table(self):
        if self.annotations is None or len(self.annotations.data) == 0:
            raise ValueError("no annotations: click particle centres first (Annotate)")
        return points_to_table(self.annotations.data, self.annotations.features)

    # ---------------------------------------------------------------- labels
    def _config(self, table):
        from ..engine.tomo import ParticleClass, PickerConfig

        k = int(table["class_id"].max())
        radius = self.radius_spin.value() or None
        classes = [ParticleClass(c, f"class{c}", self._diameters.get(c, self.diameter_spin.value()), radius) for c in range(1, k + 1)]
        full = self.net_combo.currentIndex() == 1
        return PickerConfig(classes=classes, block_size=self.block_spin.value(), pad_size=self.pad_spin.value(),
                            channels=(24, 48, 72, 108) if full else (8, 16, 32), label_shape=self.shape_combo.currentText(),
                            voxel_size=self.voxel_size)

    def preview_labels(self):
        """Show the weak labels the current annotations make, as a labels layer."""
        from ..engine.tomo import make_weak_labels

        try:
            table = self.annotation_table()
            cfg = self._config(table)
            labels = make_weak_labels(self.tomogram.data.shape, table, cfg.label_radii, cfg.label_shape)
        except Exception as exc:
            _notify_error(exc)
            return None
        name = "weak labels"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
        else:
            self.viewer.add_labels(labels, name=name, scale=tuple(self.tomogram.scale), opacity=0.4)
        return self.viewer.layers[name]

    # ---------------------------------------------------------------- workers
    def _action_buttons(self):
        return [self.train_btn, self.pick_btn, self.preview_btn]

    def _on_epoch(self, record: dict):
        self.plot.add(record)

    # ---------------------------------------------------------------- train
    def train(self):
        """Train a picker on the current tomogram and its annotations (worker thread)."""
        from ..engine.io import prepare_output
        from ..engine.tomo import train_picker

        try:
            table = self.annotation_table()
            cfg = self._config(table)
            out = Path(self.model_out.text()).expanduser()
            prepare_output(out, overwrite=True)
        except Exception as exc:
            _notify_error(exc)
            return None
        volume = np.asarray(self.tomogram.data)
        epochs, lr = self.epochs_spin.value(), self.lr_spin.value()
        self.plot.clear()
        relay = self._relay

        def job(progress, cancel):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # validating on the training tomogram is the point here
                model = train_picker([volume], [table], cfg, epochs=epochs, batch_size=4, lr=lr, val_every=1,
                                     progress=progress, cancel=cancel, on_epoch=relay.epoch.emit)
            model.save(out, overwrite=True)
            return out

        def done(path):
            self.model_path = Path(path)
            self.model_in.setText(str(path))
            self.status.setText(f"model saved to {path}")

        return self.start(job, done, "training…")

    # ---------------------------------------------------------------- pick
    def _browse_model(self):
        path, _ = QFileDialog.getOpenFileName(self, "Picking model", str(Path.home()), "Models (*.pt)")
        if path:
            self.model_in.setText(path)

    def pick(self):
        """Pick the current tomogram with the chosen model (worker thread)."""
        from ..engine.tomo import load_picker, pick
        from ..engine.tomo.config import default_model_path

        t = self.tomogram
        if t is None:
            _notify_error("open a tomogram first")
            return None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = load_picker(self.model_in.text().strip() or default_model_path(), self.voxel_size)
            for w in caught:
                _notify(str(w.message))
        except Exception as exc:
            _notify_error(exc)
            return None
        volume = t.data
        threshold = self.threshold_spin.value()
        min_score, distance = self._filters()

        def job(progress, cancel):
            return pick(np.asarray(volume), model, threshold=threshold, min_score=min_score, distance=distance, progress=progress, cancel=cancel)

        return self.start(job, self._picked, "picking…")

    def _filters(self):
        min_score = self.score_slider.value() / 100.0
        self.score_label.setText(f"{min_score:.2f}")
        distance = self.distance_spin.value() or None
        return min_score, distance

    def _picked(self, result):
        self.result = result
        self.status.setText("picked")
        self._show_picks(result.picks)

    def _show_picks(self, table):
        diameters = {c.class_id: c.diameter for c in self.result.model.config.classes}
        data, kw, _ = table_to_points(table, self.voxel_size, name="picks", diameters=diameters)
        kw["scale"] = tuple(self.tomogram.scale)
        if self.picks_layer is not None and self.picks_layer in self.viewer.layers:
            layer = self.picks_layer
            layer.data = data
            layer.features = kw["features"]
            if len(data):
                layer.size = kw["size"]
                layer.border_color = kw["border_color"]
        else:
            self.picks_layer = self.viewer.add_points(data, ndim=3, **kw)
        self._show_spheres(max(diameters.values()))
        names = {c.class_id: c.name for c in self.result.model.config.classes}
        counts = table["class_id"].value_counts().sort_index()
        self.count_label.setText(f"{len(table)} picks" + (": " + ", ".join(f"{names.get(int(k), k)} {v}" for k, v in counts.items()) if len(counts) > 1 else ""))

    def _refilter(self, *_):
        """Re-prune the last pick's candidates with the slider values (no network run)."""
        min_score, distance = self._filters()
        if self.result is None:
            return
        self._show_picks(self.result.refilter(min_score, distance))

    # ---------------------------------------------------------------- export
    def picks_table(self):
        layer = self.picks_layer
        if layer is None or layer not in self.viewer.layers:
            raise ValueError("no picks to export: run Pick first")
        return points_to_table(layer.data, layer.features)  # hand edits included

    def export(self, path) -> Path:
        """Write the (possibly hand-edited) picks to CSV or STAR; an existing file is kept as .bak."""
        t = self.tomogram
        return write_coordinates(self.picks_table(), path, self.voxel_size, t.data.shape if t is not None else None, overwrite=True,
                                 tomo_name=t.name if t is not None else None)

    def _export_dialog(self, suffix: str):
        path, _ = QFileDialog.getSaveFileName(self, "Export picks", str(Path.home() / f"picks{suffix}"), f"*{suffix}")
        if not path:
            return
        try:
            self.export(path)
            _notify(f"picks written to {path}")
        except Exception as exc:
            _notify_error(exc)
