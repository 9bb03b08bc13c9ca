"""The chromosome review dock widget: orient crops, review each flip, export.

A thin layer over :mod:`napari_bioid.engine.karyo`: load a folder of crops or
take an image layer plus a labels layer of segmented chromosomes, run the
chain (rotate upright → polarity → 180° if down) in a worker thread with a
progress bar, and show a karyogram-style gallery: every upright result with
its predicted polarity and confidence, crops below the review threshold
outlined in orange. Clicking a crop flips it (a reviewer override, outlined
blue; clicking again restores the classifier's call); its ✓ button confirms it
(green). The same sheet is shown as a "karyogram" image layer. Every review
action is autosaved under ``~/.napari-bioid/autosave`` and restored when the
same input is oriented again; export writes the upright crops and
``decisions.csv`` (overrides marked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QFrame, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
    QPushButton, QScrollArea, QVBoxLayout, QWidget,
)

from ..engine.errors import BioidInputError
from ..engine.karyo.karyogram import ORDER, chromosome_name, layout
from ..engine.karyo.orient import Decision, oriented_image, read_decisions, write_decisions, write_oriented
from ._form import choose_folder, path_row, refill_combo, spin
from ._worker import WorkerHost, notify, notify_error, warm_up_imports

AUTOSAVE_DIR = Path.home() / ".napari-bioid" / "autosave"
TILE_HEIGHT = 100
COLOURS = {"low": "#f39c12", "overridden": "#3498db", "confirmed": "#2ecc71", "plain": "#555555"}


TILE_WIDTH = 84


def _pixmap(grey: np.ndarray, height: int = TILE_HEIGHT, zoom: float = 1.5, width: int = TILE_WIDTH) -> QPixmap:
    """A crop at a common zoom (so relative chromosome lengths stay visible), within ``width`` × ``height`` px."""
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    h, w = grey.shape
    img = QImage(grey.data, w, h, w, QImage.Format_Grayscale8).copy()
    f = min(zoom, height / max(h, 1), width / max(w, 1))
    return QPixmap.fromImage(img).scaled(max(1, int(w * f)), max(1, int(h * f)), Qt.KeepAspectRatio, Qt.SmoothTransformation)


def decision_confidence(d: Decision) -> float:
    """The classifier's probability of the *final* polarity (the reviewer's, when overridden)."""
    return float(d.p_up if d.polarity == "up" else 1.0 - d.p_up)


class CropTile(QFrame):
    """One upright chromosome: image (click = flip), caption, ✓ (confirm)."""

    flip_requested = Signal(int)
    confirm_requested = Signal(int)

    def __init__(self, index: int):
        super().__init__()
        self.index = index
        lay = QVBoxLayout(self)
        lay.setContentsMargins(3, 3, 3, 3)
        lay.setSpacing(1)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignHCenter | Qt.AlignBottom)
        self.image.setMinimumHeight(TILE_HEIGHT)
        self.image.setCursor(Qt.PointingHandCursor)
        self.image.setToolTip("click: flip 180° (override); click again: back to the classifier's call")
        self.image.mousePressEvent = lambda ev: self.flip_requested.emit(self.index)
        self.caption = QLabel()
        self.caption.setAlignment(Qt.AlignHCenter)
        self.caption.setStyleSheet("font-size: 9px")
        self.ok_btn = QPushButton("✓")
        self.ok_btn.setCheckable(True)
        self.ok_btn.setFixedHeight(18)
        self.ok_btn.setToolTip("confirm this polarity")
        self.ok_btn.clicked.connect(lambda: self.confirm_requested.emit(self.index))
        lay.addWidget(self.image)
        lay.addWidget(self.caption)
        lay.addWidget(self.ok_btn)

    def show_state(self, grey: np.ndarray, decision: Decision, label: str, state: str):
        self.image.setPixmap(_pixmap(grey))
        arrow = "p↑" if decision.polarity == "up" else "p↓→↑"
        self.caption.setText(f"{label}\n{arrow} {decision_confidence(decision):.0%}" + (" ✎" if decision.overridden else ""))
        self.caption.setToolTip("the classifier's probability of the polarity shown" + (" (set by the reviewer ✎)" if decision.overridden else ""))
        self.ok_btn.setChecked(state == "confirmed")
        self.setStyleSheet(f"CropTile {{ border: 2px solid {COLOURS[state]}; border-radius: 3px; }}")
        self.state = state


class KaryogramWidget(WorkerHost, QWidget):
    """Dock widget over the chromosome chain (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._init_worker()
        self.images: List[np.ndarray] = []  # input crops as loaded (any angle)
        self._uprights: Dict[int, tuple] = {}  # crop index → (total rotation, oriented image)
        self.decisions: List[Decision] = []
        self.classes: List[Optional[str]] = []
        self.confirmed: List[bool] = []
        self.source: Optional[str] = None  # folder path or "layers:<image>"
        self.tiles: List[CropTile] = []
        self.sheet_layer = None
        self.marks_layer = None  # polarity marks on the whole image (labels input)
        self._boxes = None
        self._scale = (1.0, 1.0)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        warm_up_imports(("torch",))

    # ---------------------------------------------------------------- UI
    def _build(self):
        root = QVBoxLayout(self)
        form = QFormLayout()
        self.mode = QComboBox()
        self.mode.addItems(["folder of crops", "image + labels layers"])
        form.addRow("Input", self.mode)
        self.folder, row = path_row("folder of chromosome crops (searched recursively)",
                                    "a folder of crops, each cut around one chromosome (any angle)", folder=True,
                                    title="Folder of chromosome crops", then=lambda _: self.mode.setCurrentIndex(0), parent=self)
        form.addRow("Folder", row)
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        form.addRow("Image layer", self.image_combo)
        form.addRow("Labels layer", self.labels_combo)
        self.model_in = QLineEdit()
        self.model_in.setPlaceholderText("shipped polarity model")
        form.addRow("Model", self.model_in)
        self.threshold = spin(0.5, 1.0, 0.9, 0.01, decimals=2)
        self.threshold.setToolTip("crops the classifier is less sure of than this are outlined for review")
        self.threshold.valueChanged.connect(lambda *_: (self._restyle(), self._summarise()))
        form.addRow("Review below", self.threshold)
        self.turns = QCheckBox("second look at unsure crops")
        self.turns.setChecked(True)
        self.turns.setToolTip("crops the model is unsure of go through the chain again at four turned angles and the "
                              "answers are averaged (the model's test-time turns): fewer errors on other labs' crops, "
                              "slower where many crops are unsure; off = one pass (bioid karyo orient --one-pass)")
        form.addRow("", self.turns)
        self.sort = QComboBox()
        self.sort.addItems(["karyogram order", "least confident first"])
        self.sort.currentIndexChanged.connect(lambda *_: self._populate())
        form.addRow("Gallery", self.sort)
        root.addLayout(form)

        buttons = QHBoxLayout()
        self.run_btn = QPushButton("Orient")
        self.run_btn.clicked.connect(self.orient)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.export_btn = QPushButton("Export…")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(self._export_dialog)
        for b in (self.run_btn, self.cancel_btn, self.export_btn):
            buttons.addWidget(b)
        root.addLayout(buttons)
        self.progress = QProgressBar()
        root.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        root.addWidget(self.status)

        self.gallery = QWidget()
        self.grid = QGridLayout(self.gallery)
        self.grid.setSpacing(4)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # tiles wrap to the dock's width instead
        self.scroll = scroll
        scroll.setWidget(self.gallery)
        scroll.setMinimumHeight(320)
        root.addWidget(scroll, stretch=1)

    def _refresh_layers(self, event=None):
        from napari.layers import Image, Labels

        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            refill_combo(combo, [l.name for l in self.viewer.layers if isinstance(l, kind) and "bioid_output" not in l.metadata])

    # ---------------------------------------------------------------- run
    def _action_buttons(self):
        return [self.run_btn, self.export_btn]

    def _finished(self):
        super()._finished()
        self.export_btn.setEnabled(bool(self.decisions))
        self._summarise()

    def _inputs(self):
        """(source key, crops, names, classes) from the folder or from the layers; raises BioidInputError."""
        from ..engine.karyo.data import read_crop
        from ..engine.karyo.orient import crops_from_labels, list_images

        if self.mode.currentIndex() == 0:
            text = self.folder.text().strip()
            if not text:
                raise BioidInputError("choose a folder of crops")
            folder = Path(text).expanduser()
            files = list_images(folder)
            names = [str(f.relative_to(folder)) for f in files]
            return str(folder.resolve()), files, names, [chromosome_name(f.parent.name) for f in files], read_crop
        image_name, labels_name = self.image_combo.currentText(), self.labels_combo.currentText()
        if not image_name or not labels_name:
            raise BioidInputError("choose an image layer and a labels layer of segmented chromosomes")
        image = np.asarray(self.viewer.layers[image_name].data)
        labels = np.asarray(self.viewer.layers[labels_name].data)
        crops, ids, boxes = crops_from_labels(image, labels)
        self._boxes, self._scale = boxes, tuple(self.viewer.layers[image_name].scale[:2])
        return f"layers_{image_name}", crops, [f"label_{i:04d}.png" for i in ids], [None] * len(crops), None

    def orient(self):
        """Run the chain on the chosen input in a worker thread; fills the gallery when done."""
        try:
            self._boxes = None
            source, items, names, classes, reader = self._inputs()
            model_path = self.model_in.text().strip() or None
            one_pass = not self.turns.isChecked()
            if model_path and not Path(model_path).expanduser().is_file():
                raise BioidInputError(f"{model_path}: no such model file")
        except Exception as exc:
            notify_error(exc)
            return None

        def job(progress, cancel):
            from ..engine.karyo.orient import orient_images
            from ..engine.karyo.polarity import load_polarity_model

            model = load_polarity_model(model_path)  # torch loads here, off the GUI thread
            if one_pass:
                model.turns_below = 0.0
            images = [reader(f) for f in items] if reader else list(items)
            return source, images, names, classes, orient_images(images, names, model, progress=progress, cancel=cancel)

        return self.start(job, self._oriented, "orienting…")

    def _oriented(self, result):
        self.source, self.images, names, self.classes, self.decisions = result
        self._uprights = {}
        self.confirmed = [False] * len(self.decisions)
        self._restored = self._restore()
        self._populate()
        self._summarise()
        self.export_btn.setEnabled(True)

    def _summarise(self):
        """Status line: counts, and how many crops are below the review threshold now."""
        if not self.decisions:
            return
        n_down = sum(d.polarity == "down" for d in self.decisions)
        restored = getattr(self, "_restored", 0)
        self.status.setText(f"{len(self.decisions)} chromosomes, {n_down} turned 180°, {self.n_low} to review (below "
                            f"{self.threshold.value():.2f})" + (f"; {restored} earlier review decisions restored" if restored else ""))

    # ---------------------------------------------------------------- gallery
    def _label(self, i: int) -> str:
        c = self.classes[i]
        return f"chr {c}" if c else Path(self.decisions[i].file).stem

    def _state(self, i: int) -> str:
        if self.confirmed[i]:
            return "confirmed"
        if self.decisions[i].overridden:
            return "overridden"
        return "low" if self.decisions[i].confidence < self.threshold.value() else "plain"

    @property
    def n_low(self) -> int:
        return sum(d.confidence < self.threshold.value() for d in self.decisions)

    def order(self) -> List[int]:
        """Gallery order: karyogram classes (then name), or least confident first."""
        idx = list(range(len(self.decisions)))
        if self.sort.currentIndex() == 1:
            return sorted(idx, key=lambda i: self.decisions[i].confidence)
        rank = {c: k for k, c in enumerate(ORDER)}
        return sorted(idx, key=lambda i: (rank.get(self.classes[i], len(ORDER)), self.decisions[i].file))

    def _populate(self):
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.tiles = [CropTile(i) for i in range(len(self.decisions))]
        for t in self.tiles:
            t.flip_requested.connect(self.flip)
            t.confirm_requested.connect(self.confirm)
        order = self.order()
        if self.sort.currentIndex() == 0 and any(self.classes):
            # karyogram: one row per chromosome class (the pair side by side), unknown classes after
            rows: Dict[str, List[int]] = {}
            for i in order:
                rows.setdefault(self.classes[i] or "?", []).append(i)
            r = 0
            for name, members in rows.items():
                head = QLabel(name)
                head.setStyleSheet("font-weight: bold")
                self.grid.addWidget(head, r, 0, Qt.AlignRight | Qt.AlignVCenter)
                for k, i in enumerate(members):
                    self.grid.addWidget(self.tiles[i], r + k // 4, 1 + k % 4)
                r += (len(members) + 3) // 4
        else:
            columns = self._columns()
            for k, i in enumerate(order):
                self.grid.addWidget(self.tiles[i], k // columns, k % columns)
        self._laid_columns = self._columns()
        self._restyle()
        self._update_sheet()

    def _columns(self) -> int:
        """Tiles per row that fit the gallery's visible width (no horizontal scrolling)."""
        width = self.scroll.viewport().width() if self.scroll.isVisible() else self.width()
        return max(1, min(4, (width - 8) // (TILE_WIDTH + 14)))

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self.tiles and not (self.sort.currentIndex() == 0 and any(self.classes)):
            columns = self._columns()
            if columns != getattr(self, "_laid_columns", None):
                self._populate()

    def upright(self, i: int) -> np.ndarray:
        """Crop ``i`` as its current decision orients it (rotated once per decision, then reused)."""
        total = self.decisions[i].total_rotation_deg
        cached = self._uprights.get(i)
        if cached is None or cached[0] != total:
            cached = self._uprights[i] = (total, oriented_image(self.images[i], self.decisions[i]))
        return cached[1]

    def _render(self, i: int):
        self.tiles[i].show_state(self.upright(i), self.decisions[i], self._label(i), self._state(i))

    def _restyle(self):
        """Tiles and marks after a change of state or threshold (the sheet depends on neither)."""
        for i in range(len(self.tiles)):
            self._render(i)
        self._update_marks()

    def _update_marks(self):
        """Labels input: the decision of each chromosome written beside it on the whole image."""
        if not self._boxes or len(self._boxes) != len(self.decisions):
            return
        centres = np.array([[(y0 + y1) / 2, (x0 + x1) / 2] for y0, x0, y1, x1 in self._boxes])
        text = [f"{'↑' if d.polarity == 'up' else '↻'} {decision_confidence(d):.0%}{' ✎' if d.overridden else ''}" for d in self.decisions]
        colours = [COLOURS[self._state(i)] for i in range(len(self.decisions))]
        style = {"string": "{label}", "color": "yellow", "size": 9, "anchor": "upper_left"}
        if self.marks_layer is not None and self.marks_layer in self.viewer.layers:
            self.marks_layer.data = centres
            self.marks_layer.features = {"label": text}
            self.marks_layer.face_color = colours
            self.marks_layer.text = style
        else:
            self.marks_layer = self.viewer.add_points(centres, name="polarity", size=6, scale=self._scale, face_color=colours,
                                                      features={"label": text}, text=style)

    def _update_sheet(self):
        if not self.decisions:
            return
        sheet, _ = layout([self.upright(i) for i in range(len(self.decisions))], self.classes)
        if self.sheet_layer is not None and self.sheet_layer in self.viewer.layers:
            self.sheet_layer.data = sheet
        else:
            self.sheet_layer = self.viewer.add_image(sheet, name="karyogram", colormap="gray", contrast_limits=(0, 255),
                                                     metadata={"bioid_output": "karyogram"})

    def flip(self, i: int):
        """Reviewer override of crop ``i``: turn it 180° (again: back to the classifier's call)."""
        self.decisions[i] = self.decisions[i].flipped()
        self.confirmed[i] = False
        self._after_review(i)
        self._update_sheet()

    def confirm(self, i: int):
        """Mark crop ``i``'s current polarity as checked by the reviewer (toggles)."""
        self.confirmed[i] = not self.confirmed[i]
        self._after_review(i)

    def _after_review(self, i: int):
        self._render(i)
        self._update_marks()
        self.autosave()

    # ---------------------------------------------------------------- saving
    def autosave_path(self) -> Path:
        import hashlib

        key = hashlib.sha1((self.source or "").encode()).hexdigest()[:10]
        return AUTOSAVE_DIR / f"karyo_review_{Path(self.source or 'none').name}_{key}.csv"

    def autosave(self):
        """Write the review (decisions with overrides; confirmed crops listed) so it survives a crash."""
        if not self.decisions:
            return
        try:
            path = self.autosave_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_decisions(self.decisions, path, overwrite=True)
            confirmed = path.with_suffix(".confirmed.txt")
            confirmed.write_text("\n".join(d.file for d, c in zip(self.decisions, self.confirmed) if c))
        except OSError as exc:
            notify_error(f"could not autosave the review: {exc}")

    def _restore(self) -> int:
        """Re-apply an autosaved review of the same input (same files, same classifier angles)."""
        path = self.autosave_path()
        if not path.is_file():
            return 0
        try:
            saved = {d.file: d for d in read_decisions(path)}
        except BioidInputError:
            return 0
        confirmed_path = path.with_suffix(".confirmed.txt")
        confirmed = set(confirmed_path.read_text().split("\n")) if confirmed_path.is_file() else set()
        n = 0
        for i, d in enumerate(self.decisions):
            old = saved.get(d.file)
            if old is not None and old.overridden and abs(old.upright_angle_deg - d.upright_angle_deg) < 1e-6:
                self.decisions[i] = d.flipped() if d.polarity != old.polarity else d
                n += 1
            if d.file in confirmed:
                self.confirmed[i] = True
                n += 1
        return n

    def decisions_table(self) -> List[Dict[str, str]]:
        return [d.row() for d in self.decisions]

    def export(self, folder) -> Path:
        """Write the upright crops and ``decisions.csv`` (overrides marked) to ``folder``.

        The input folder itself is refused (the originals are never replaced);
        existing files elsewhere are replaced, each first kept as ``.bak``.

        Raises
        ------
        BioidInputError
            Nothing oriented yet, or ``folder`` is the input folder.
        """
        if not self.decisions:
            raise BioidInputError("nothing to export: orient some crops first")
        if self.source and Path(self.source).is_dir():
            src, dst = Path(self.source).resolve(), Path(folder).expanduser().resolve()
            if dst == src:
                raise BioidInputError(f"{folder} is the input folder: exporting there would replace the original crops; "
                                      "choose another folder")
        path = write_oriented(folder, self.images, self.decisions, overwrite=True)
        notify(f"exported {len(self.decisions)} upright crops and {path.name} to {folder}")
        return path

    def _export_dialog(self):
        choose_folder(self, "Export upright crops to", self.export)
