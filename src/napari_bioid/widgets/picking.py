"""The particle-picking dock widget: annotate, preview labels, train, pick, export.

A thin layer over :mod:`napari_bioid.engine.tomo`: it gathers inputs from
layers and controls, runs one engine call in a worker thread with a progress
bar and a cancel button, and shows the result as layers.

Everything the user makes is bound to its tomogram for its whole life: each
tomogram has its own annotations layer (autosaved after every edit, to a
sidecar CSV next to the tomogram, or under ``~/.napari-bioid/autosave`` when
that folder is not writable, with the tomogram's voxel size) and its own picks
layer (scaled from it); Train, Preview and Pick use the tomogram chosen in the
layer box. Hand edits of picks (added, moved, deleted) survive re-filtering and
are marked ``source = manual`` without a score. torch is imported in a
background thread and every engine call runs in a worker, so the window never
freezes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
    QPushButton, QSlider, QVBoxLayout, QWidget,
)

from .._layers import class_colour, layer_voxel_size, points_to_table, save_points_layer, table_to_points, with_suffix_for_points
from ..engine.io import read_coordinates, write_coordinates
from ._form import path_row, refill_combo, spin
from ._worker import WorkerHost, warm_up_imports
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


class _TomogramState:
    """What the widget holds for one tomogram layer: its annotations, picks layer and last pick."""

    def __init__(self, layer):
        self.layer = layer
        self.annotations = None  # points layer of clicked centres
        self.picks = None  # points layer of picks
        self.result = None  # PickResult of the last pick


def _alive(layer, viewer) -> bool:
    return layer is not None and layer in viewer.layers


class PickingWidget(WorkerHost, QWidget):
    """Dock widget over the picking engine (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._init_worker()
        self._states: Dict[int, _TomogramState] = {}
        self.model_path: Optional[Path] = None  # last model trained here
        self._diameters: Dict[int, float] = {}
        self._pending: Dict[int, object] = {}  # annotation layers edited since their last autosave
        self._bound: Dict[int, object] = {}  # every annotation layer made here (autosaved on close)
        self._relay.epoch.connect(self._on_epoch)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(300)
        self._autosave_timer.timeout.connect(self.autosave)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        warm_up_imports(("torch",))

    # ---------------------------------------------------------------- UI
    def _build(self):
        root = QVBoxLayout(self)

        box = QGroupBox("Tomogram")
        f = QFormLayout(box)
        self.tomo_combo = QComboBox()
        self.tomo_combo.setToolTip("the tomogram that Annotate, Preview, Train, Pick and Export act on")
        self.tomo_combo.currentIndexChanged.connect(self._tomogram_changed)
        self.voxel_label = QLabel("–")
        self.voxel_label.setToolTip("voxel size in Å, from the MRC header (the layer's scale)")
        f.addRow("layer", self.tomo_combo)
        f.addRow("voxel size", self.voxel_label)
        root.addWidget(box)

        from ._copick_panel import CopickPanel

        self.copick = CopickPanel(self.viewer, lambda: self.tomogram, self._picks_of)
        root.addWidget(self.copick)

        box = QGroupBox("Annotate")
        f = QFormLayout(box)
        self.class_spin = spin(1, 255, 1)
        self.class_spin.setToolTip("class id (1, 2, …) given to the next clicked centre; one colour per class")
        self.class_spin.valueChanged.connect(self._class_changed)
        self.diameter_spin = spin(1.0, 200.0, 11.0, suffix=" vox")
        self.diameter_spin.setToolTip("particle diameter of the current class, in voxels (ring size; label radius and pruning distance follow)")
        self.diameter_spin.valueChanged.connect(self._diameter_changed)
        self.annotate_btn = QPushButton("Annotate (new or restored points layer)")
        self.annotate_btn.setToolTip("a points layer of this tomogram in add mode: click particle centres; every edit is autosaved")
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
        self.shape_combo.setToolTip("weak label drawn around each clicked centre")
        self.radius_spin = spin(0, 50, 0, special="from diameter")
        self.radius_spin.setSuffix(" vox")
        self.radius_spin.setToolTip("weak-label radius in voxels; 0 = (diameter − 1) / 2 of each class")
        self.preview_btn = QPushButton("Preview weak labels")
        self.preview_btn.setToolTip("show the training labels of this tomogram's annotations as a labels layer")
        self.preview_btn.clicked.connect(self.preview_labels)
        f.addRow("shape", self.shape_combo)
        f.addRow("radius", self.radius_spin)
        f.addRow(self.preview_btn)
        root.addWidget(box)

        box = QGroupBox("Train")
        f = QFormLayout(box)
        self.epochs_spin = spin(1, 1000, 20)
        self.epochs_spin.setToolTip("passes over the annotated particles (one sub-tomogram per particle per epoch)")
        self.block_spin = spin(16, 256, 40, step=8)
        self.block_spin.setSuffix(" vox")
        self.block_spin.setToolTip("edge of the cubic training and inference block, in voxels (METHODS: 72 on a GPU)")
        self.pad_spin = spin(0, 64, 6)
        self.pad_spin.setSuffix(" vox")
        self.pad_spin.setToolTip("border of each inference block discarded when stitching, in voxels")
        self.lr_spin = spin(1e-5, 1e-1, 2e-3, step=1e-4, decimals=5)
        self.lr_spin.setToolTip("peak learning rate of the one-cycle AdamW schedule")
        self.net_combo = QComboBox()
        self.net_combo.addItems(["small (8, 16, 32): CPU", "full (24, 48, 72, 108): GPU"])
        self.net_combo.setToolTip("channels per U-Net level")
        self.model_out = QLineEdit(str(Path.home() / "napari-bioid-picker.pt"))
        self.model_out.setToolTip("model file written after training (an existing one is kept as .bak)")
        self.train_btn = QPushButton("Train")
        self.train_btn.setToolTip("train a picker on this tomogram's annotations (worker thread; Cancel stops it)")
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
        self.model_in, row = path_row("shipped default model", "picking model file (.pt); empty = the shipped default",
                                      "Models (*.pt)", title="Picking model", parent=self)
        self.threshold_spin = spin(0.01, 0.99, 0.5, step=0.05)
        self.threshold_spin.setToolTip("foreground probability at which the segmentation is binarised before NMS")
        self.score_slider = QSlider(Qt.Horizontal)
        self.score_slider.setRange(0, 1000)  # thousandths of a score; the maximum follows the scores present
        self.score_slider.setValue(200)
        self.score_slider.setToolTip("minimum pick score (pooled blob value, 0–1); the range follows the scores of the last pick")
        self.score_label = QLabel("0.20")
        self.score_slider.valueChanged.connect(self._refilter)
        srow = QHBoxLayout()
        srow.addWidget(self.score_slider)
        srow.addWidget(self.score_label)
        self.distance_spin = spin(0.0, 200.0, 0.0, suffix=" vox", special="radius + 1")
        self.distance_spin.setToolTip("picks closer than this (voxels) to a higher-scoring pick are dropped; 0 = particle radius + 1")
        self.distance_spin.valueChanged.connect(self._refilter)
        self.pick_btn = QPushButton("Pick")
        self.pick_btn.setToolTip("pick this tomogram (worker thread); then the slider and distance re-filter at once")
        self.pick_btn.clicked.connect(self.pick)
        self.count_label = QLabel("")
        self.count_label.setWordWrap(True)
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
        self.status.setWordWrap(True)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.setToolTip("stop training or picking at the next block (nothing is written)")
        self.cancel_btn.clicked.connect(self.cancel)
        prow = QHBoxLayout()
        prow.addWidget(self.progress)
        prow.addWidget(self.cancel_btn)
        root.addLayout(prow)
        root.addWidget(self.status)

        box = QGroupBox("Export picks")
        h = QHBoxLayout(box)
        self.csv_btn = QPushButton("CSV…")
        self.csv_btn.setToolTip("x, y, z in voxels and Å, class id and name, score, source (model / manual)")
        self.star_btn = QPushButton("STAR…")
        self.star_btn.setToolTip("RELION: _rlnTomoName, _rlnCoordinateX/Y/Z (voxels), centred Å coordinates")
        self.csv_btn.clicked.connect(lambda: self._export_dialog(".csv"))
        self.star_btn.clicked.connect(lambda: self._export_dialog(".star"))
        h.addWidget(self.csv_btn)
        h.addWidget(self.star_btn)
        root.addWidget(box)
        root.addStretch(1)

    # ---------------------------------------------------------------- layers
    def _image_layers(self):
        from napari.layers import Image

        return [l for l in self.viewer.layers if isinstance(l, Image) and l.ndim == 3 and "bioid_output" not in l.metadata]

    def _refresh_layers(self, event=None):
        images = self._image_layers()
        for key in [k for k, st in self._states.items() if st.layer not in images]:
            del self._states[key]  # the tomogram was closed: its annotations keep autosaving to their own file
        self.autosave()
        refill_combo(self.tomo_combo, [l.name for l in images])
        self._tomogram_changed()

    @property
    def tomogram(self):
        name = self.tomo_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _state(self, create: bool = True) -> Optional[_TomogramState]:
        t = self.tomogram
        if t is None:
            return None
        st = self._states.get(id(t))
        if st is None and create:
            st = self._states[id(t)] = _TomogramState(t)
        return st

    @property
    def annotations(self):
        """The current tomogram's annotations layer (None when it has none)."""
        st = self._state(create=False)
        return st.annotations if st is not None and _alive(st.annotations, self.viewer) else None

    @property
    def picks_layer(self):
        """The current tomogram's picks layer (None when it has none)."""
        st = self._state(create=False)
        return st.picks if st is not None and _alive(st.picks, self.viewer) else None

    def _picks_of(self, tomogram):
        """The picks layer made here for ``tomogram`` (None when it has none)."""
        st = self._states.get(id(tomogram))
        return st.picks if st is not None and _alive(st.picks, self.viewer) else None

    @property
    def result(self):
        """The current tomogram's last :class:`PickResult` (None before a pick)."""
        st = self._state(create=False)
        return st.result if st is not None else None

    @property
    def voxel_size(self) -> Optional[float]:
        t = self.tomogram
        return layer_voxel_size(t.metadata, t.scale) if t is not None else None

    def _tomogram_changed(self, *_):
        t = self.tomogram
        vs = self.voxel_size
        self.voxel_label.setText("no tomogram open" if t is None else f"{vs:g} Å" if vs else "unknown (coordinates in voxels only)")
        ann = self.annotations
        self.autosave_label.setText(f"autosaved to {ann.metadata['sidecar']}" if ann is not None else "")
        self._fit_slider()
        self._update_count()

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
    def sidecar_path(self, tomogram=None) -> Path:
        """Where annotations of ``tomogram`` (default: the current one) are autosaved."""
        t = tomogram if tomogram is not None else self.tomogram
        ann = self.annotations if tomogram is None else None
        if ann is not None:
            return Path(ann.metadata["sidecar"])
        src = t.metadata.get("path") if t is not None else None
        stem = Path(src).stem if src else (t.name if t is not None else "annotations")
        if src and not t.metadata.get("sample") and os.access(Path(src).parent, os.W_OK):
            return Path(src).with_name(f"{stem}_annotations.csv")
        AUTOSAVE_DIR.mkdir(parents=True, exist_ok=True)
        return AUTOSAVE_DIR / f"{stem}_annotations.csv"

    def start_annotation(self):
        """Create (or restore from the sidecar) the current tomogram's annotation layer and enter add mode."""
        t = self.tomogram
        if t is None:
            _notify_error("open a tomogram first")
            return None
        st = self._state()
        layer = st.annotations if _alive(st.annotations, self.viewer) else None
        if layer is None:
            side = self.sidecar_path(t)
            vs = self.voxel_size
            if side.is_file():
                table = read_coordinates(side, voxel_size=vs)
                _notify(f"restored {len(table)} annotations from {side}")
            else:
                table = points_to_table(np.zeros((0, 3)))
            data, kw, _ = table_to_points(table, vs, name=f"{t.name} annotations", diameters=self._diameter_map(table), role="annotations")
            kw["scale"] = tuple(t.scale)
            # bound to its tomogram for life: autosave path, voxel size, shape
            kw["metadata"] = {"voxel_size": vs, "bioid": "annotations", "tomogram": t.name, "sidecar": str(side),
                              "shape": list(t.data.shape)}
            layer = self.viewer.add_points(data, ndim=3, **kw)
            layer.events.data.connect(lambda event, layer=layer: self._annotations_edited(layer))
            st.annotations = layer
            self._bound[id(layer)] = layer
        self._set_current_point_style(layer, self.class_spin.value(), self.diameter_spin.value())
        self._show_spheres(max(self._diameter_map(points_to_table(layer.data, layer.features)).values()))
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
        self.autosave_label.setText(f"autosaved to {layer.metadata['sidecar']}")
        return layer

    def _diameter_map(self, table) -> Dict[int, float]:
        return {int(c): self._diameters.get(int(c), self.diameter_spin.value()) for c in set(table["class_id"]) | {self.class_spin.value()}}

    @staticmethod
    def _set_current_point_style(layer, class_id: int, diameter: float):
        """Class, size and colour of the *next* point; existing (selected) points are left alone."""
        layer.selected_data = set()  # napari applies current_* to the selected points: the last click
        layer.feature_defaults["class_id"] = class_id
        if "score" in layer.features:
            layer.feature_defaults["score"] = np.nan
        if "source" in layer.features:
            layer.feature_defaults["source"] = "manual"
            layer.feature_defaults["pick_id"] = -1
        layer.current_size = diameter
        layer.current_border_color = class_colour(class_id)

    def _class_changed(self, value: int):
        self.diameter_spin.blockSignals(True)
        self.diameter_spin.setValue(self._diameters.get(value, self.diameter_spin.value()))
        self.diameter_spin.blockSignals(False)
        for layer in (self.annotations, self.picks_layer):
            if layer is not None:
                self._set_current_point_style(layer, value, self.diameter_spin.value())

    def _diameter_changed(self, value: float):
        """The diameter of the current class: rings of that class's annotations follow."""
        self._diameters[self.class_spin.value()] = float(value)
        layer = self.annotations
        if layer is not None:
            self._set_current_point_style(layer, self.class_spin.value(), value)
            cls = layer.features["class_id"].to_numpy() if len(layer.data) else np.zeros(0)
            if len(cls):
                sizes = np.asarray(layer.size, dtype=float).copy()
                sizes[cls == self.class_spin.value()] = value
                layer.size = sizes

    def _annotations_edited(self, layer):
        if len(layer.data):
            colours = [class_colour(int(c)) for c in layer.features["class_id"].to_numpy()]
            with layer.events.data.blocker():
                layer.border_color = colours
        self._pending[id(layer)] = layer
        self._autosave_timer.start()

    def autosave(self, layers=None):
        """Write edited annotation layers now, each to its own tomogram's sidecar CSV.

        Atomic; the previous file is kept as ``.bak``. ``layers``: all layers
        made here (default: those edited since their last save).
        """
        todo = list(self._pending.values()) if layers is None else list(layers)
        for layer in todo:
            self._pending.pop(id(layer), None)
            meta = layer.metadata
            try:
                table = points_to_table(layer.data, layer.features)
                write_coordinates(table, meta["sidecar"], meta.get("voxel_size"), overwrite=True)
            except Exception as exc:  # never lose the edit silently
                _notify_error(f"autosave of {layer.name} failed: {exc}")

    def closeEvent(self, event):
        self.autosave(self._bound.values())
        super().closeEvent(event)

    def hideEvent(self, event):
        self.autosave(self._bound.values())
        super().hideEvent(event)

    def annotation_table(self):
        """The current tomogram's annotations as a coordinate table; ValueError when there are none."""
        layer = self.annotations
        if layer is None or len(layer.data) == 0:
            name = self.tomogram.name if self.tomogram is not None else "the tomogram"
            raise ValueError(f"no annotations on {name}: press Annotate and click particle centres first")
        return points_to_table(layer.data, layer.features)

    # ---------------------------------------------------------------- labels
    def _config_values(self, table) -> dict:
        """The training configuration as plain values (built into a PickerConfig in the worker)."""
        k = int(table["class_id"].max())
        return {"classes": [(c, f"class{c}", self._diameters.get(c, self.diameter_spin.value()), self.radius_spin.value() or None)
                            for c in range(1, k + 1)],
                "block_size": self.block_spin.value(), "pad_size": self.pad_spin.value(),
                "channels": (24, 48, 72, 108) if self.net_combo.currentIndex() == 1 else (8, 16, 32),
                "label_shape": self.shape_combo.currentText(), "voxel_size": self.voxel_size}

    @staticmethod
    def _config(values: dict):
        from ..engine.tomo import ParticleClass, PickerConfig

        return PickerConfig(classes=[ParticleClass(*c) for c in values["classes"]],
                            **{k: v for k, v in values.items() if k != "classes"})

    def preview_labels(self):
        """Show the weak labels of the current tomogram's annotations as a labels layer (worker thread)."""
        t = self.tomogram
        try:
            table = self.annotation_table()
        except Exception as exc:
            _notify_error(exc)
            return None
        values, shape = self._config_values(table), t.data.shape

        def job(progress, cancel):
            from ..engine.tomo import make_weak_labels

            cfg = self._config(values)
            return make_weak_labels(shape, table, cfg.label_radii, cfg.label_shape)

        def done(labels):
            name = f"{t.name} weak labels"
            if name in self.viewer.layers:
                self.viewer.layers[name].data = labels
            else:
                self.viewer.add_labels(labels, name=name, scale=tuple(t.scale), opacity=0.4, metadata={"bioid_output": "labels"})
            self.status.setText(f"weak labels of {len(table)} annotations")

        return self.start(job, done, "making weak labels…")

    # ---------------------------------------------------------------- workers
    def _action_buttons(self):
        return [self.train_btn, self.pick_btn, self.preview_btn]

    def _on_epoch(self, record: dict):
        self.plot.add(record)

    # ---------------------------------------------------------------- train
    def train(self):
        """Train a picker on the current tomogram and its annotations (worker thread)."""
        from ..engine.io import prepare_output

        try:
            table = self.annotation_table()
            values = self._config_values(table)
            out = Path(self.model_out.text()).expanduser()
            prepare_output(out, overwrite=True)
        except Exception as exc:
            _notify_error(exc)
            return None
        data = self.tomogram.data
        epochs, lr = self.epochs_spin.value(), self.lr_spin.value()
        self.plot.clear()
        relay = self._relay

        def job(progress, cancel):
            import warnings

            from ..engine.tomo import train_picker

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # validating on the training tomogram is the point here
                model = train_picker([np.asarray(data)], [table], self._config(values), epochs=epochs, batch_size=4, lr=lr,
                                     val_every=1, progress=progress, cancel=cancel, on_epoch=relay.epoch.emit)
            model.save(out, overwrite=True)
            return out

        def done(path):
            self.model_path = Path(path)
            self.model_in.setText(str(path))
            self.status.setText(f"model saved to {path}")

        return self.start(job, done, "training…")

    # ---------------------------------------------------------------- pick
    def pick(self):
        """Pick the current tomogram with the chosen model (worker thread; the model loads there too)."""
        t = self.tomogram
        if t is None:
            _notify_error("open a tomogram first")
            return None
        model_path = self.model_in.text().strip()
        if model_path and not Path(model_path).expanduser().is_file():
            _notify_error(f"{model_path}: no such model file")
            return None
        volume, vs = t.data, self.voxel_size
        threshold = self.threshold_spin.value()
        min_score, distance = self._filters()
        st = self._state()

        def job(progress, cancel):
            from ..engine.tomo import load_picker, pick
            from ..engine.tomo.config import default_model_path

            model = load_picker(Path(model_path).expanduser() if model_path else default_model_path(), vs)  # warnings → notifications
            return pick(np.asarray(volume), model, threshold=threshold, min_score=min_score, distance=distance, progress=progress, cancel=cancel)

        return self.start(job, lambda result: self._picked(st, result), "picking…")

    @property
    def min_score(self) -> float:
        return self.score_slider.value() / 1000.0

    def set_min_score(self, value: float) -> None:
        """Move the min-score slider (re-filters the current tomogram's picks)."""
        self.score_slider.setValue(int(round(value * 1000)))

    def _filters(self):
        self.score_label.setText(f"{self.min_score:.2f}")
        distance = self.distance_spin.value() or None
        return self.min_score, distance

    def _fit_slider(self):
        """Slider range 0 … the highest candidate score of the current tomogram's pick (0–1 before one)."""
        res = self.result
        top = float(res.candidates["score"].max()) if res is not None and len(res.candidates) else 1.0
        self.score_slider.blockSignals(True)
        self.score_slider.setMaximum(max(50, int(math.floor(top * 1000))))  # the top pick stays at the far end
        self.score_slider.blockSignals(False)
        self._filters()

    def _picked(self, st: _TomogramState, result):
        if st.result is not None and _alive(st.picks, self.viewer):
            # picks added or moved by hand on the previous pick of this tomogram carry over
            st.result.apply_edits(points_to_table(st.picks.data, st.picks.features))
            result.manual = st.result.manual
        st.result = result
        self.status.setText(f"picked {st.layer.name}" + (f" (NMS skipped: {result.skipped})" if result.skipped else ""))
        if st.layer is self.tomogram:
            self._fit_slider()
        result.refilter(*self._filters())
        self._show_picks(st)

    def _show_picks(self, st: _TomogramState):
        result, t = st.result, st.layer
        table = result.picks
        diameters = {c.class_id: c.diameter for c in result.model.config.classes}
        names = {c.class_id: c.name for c in result.model.config.classes}
        data, kw, _ = table_to_points(table, layer_voxel_size(t.metadata, t.scale), name=f"{t.name} picks", diameters=diameters)
        kw["scale"] = tuple(t.scale)
        kw["metadata"].update(tomogram=t.name, shape=list(t.data.shape), class_names=names)
        if _alive(st.picks, self.viewer):
            layer = st.picks
            layer.selected_data = set()
            layer.data = data
            layer.features = kw["features"]
            if len(data):
                layer.size = kw["size"]
                layer.border_color = kw["border_color"]
            layer.metadata.update(kw["metadata"])
        else:
            st.picks = self.viewer.add_points(data, ndim=3, **kw)
        self._set_current_point_style(st.picks, self.class_spin.value(), diameters.get(self.class_spin.value(), self.diameter_spin.value()))
        self._show_spheres(max(diameters.values()))
        self._update_count()

    def _update_count(self):
        st = self._state(create=False)
        if st is None or st.result is None:
            self.count_label.setText("")
            return
        table, res = st.result.picks, st.result
        names = {c.class_id: c.name for c in res.model.config.classes}
        n_manual = int((table["source"] == "manual").sum()) if "source" in table else 0
        text = f"{len(table)} picks" + (f" ({n_manual} by hand)" if n_manual else "")
        counts = table["class_id"].value_counts().sort_index()
        if len(counts) > 1:
            text += ": " + ", ".join(f"{names.get(int(k), k)} {v}" for k, v in counts.items())
        if res.skipped:
            text += f"; NMS skipped: {res.skipped}"
        elif len(table) - n_manual == 0 and len(res.candidates):
            s = res.candidates["score"]
            text += f"; no model pick ≥ {self.min_score:.2f}: scores run {s.min():.2f}–{s.max():.2f}, lower the min score"
        self.count_label.setText(text)

    def _refilter(self, *_):
        """Re-prune the current tomogram's candidates with the slider values (no network run), keeping hand edits."""
        min_score, distance = self._filters()
        st = self._state(create=False)
        if st is None or st.result is None:
            return
        if _alive(st.picks, self.viewer):
            st.result.apply_edits(points_to_table(st.picks.data, st.picks.features))
        st.result.refilter(min_score, distance)
        self._show_picks(st)

    # ---------------------------------------------------------------- export
    def export(self, path) -> Path:
        """Write the current tomogram's (possibly hand-edited) picks to CSV or STAR.

        A name without a suffix gets ``.csv``; an existing file is kept as ``.bak``.
        Columns as File ▸ Save of the picks layer (see :func:`save_points_layer`).
        """
        layer = self.picks_layer
        if layer is None:
            raise ValueError("no picks to export: run Pick first")
        return save_points_layer(path, layer.data, layer.features, layer.metadata, layer.scale)

    def _export_dialog(self, suffix: str):
        path, _ = QFileDialog.getSaveFileName(self, "Export picks", str(Path.home() / f"picks{suffix}"), f"*{suffix}")
        if not path:
            return
        try:
            out = self.export(with_suffix_for_points(path, suffix))
            _notify(f"picks written to {out}")
        except Exception as exc:
            _notify_error(exc)
