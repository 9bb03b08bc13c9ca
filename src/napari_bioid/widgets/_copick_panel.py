"""The picking widget's copick box: open a project's run, show its pick sets, save our picks back.

Thin over :class:`napari_bioid.engine.tomo.copick_project.CopickProject`: the
tomogram opens lazily (OME-Zarr) at its voxel spacing as an image layer
scaled in Å, each pick set (object, user, session) as a points layer, and the
current tomogram's picks go into the project as pick sets of the user
``napari-bioid`` (one per class, named by the class's object).
"""

from __future__ import annotations

from typing import Callable, Optional

from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QLabel, QLineEdit, QPushButton

from .._layers import layer_voxel_size, points_to_table, table_to_points
from ._form import path_row, refill_combo
from ._worker import notify as _notify
from ._worker import notify_error as _notify_error


class CopickPanel(QGroupBox):
    """Open a copick project's runs in the viewer and save picks into it.

    ``picks_of(tomogram_layer)`` returns that tomogram's picks layer (or None);
    ``current_tomogram()`` the tomogram chosen in the picking widget.
    """

    def __init__(self, viewer, current_tomogram: Callable, picks_of: Callable):
        super().__init__("copick project")
        self.viewer, self._current, self._picks_of = viewer, current_tomogram, picks_of
        self.project = None
        f = QFormLayout(self)
        self.config_edit, row = path_row("copick configuration .json",
                                         "a copick project (filesystem or CryoET Data Portal); its runs open below",
                                         "copick config (*.json)", title="copick configuration", then=self.load, parent=self)
        self.load_btn = QPushButton("Load")
        self.load_btn.setToolTip("open the project: its runs and pickable objects")
        self.load_btn.clicked.connect(lambda: self.load(self.config_edit.text()))
        row.addWidget(self.load_btn)
        self.run_combo = QComboBox()
        self.run_combo.setToolTip("the run (tilt series) to open")
        self.run_combo.currentIndexChanged.connect(self._run_changed)
        self.tomo_combo = QComboBox()
        self.tomo_combo.setToolTip("voxel spacing (Å) and tomogram type")
        self.open_btn = QPushButton("Open run (tomogram and pick sets)")
        self.open_btn.setToolTip("the tomogram as an image scaled in Å (lazy OME-Zarr) and one points layer per pick set (object, user, session)")
        self.open_btn.clicked.connect(self.open_run)
        self.session_edit = QLineEdit("0")
        self.session_edit.setToolTip("copick session id of the picks saved (user id: napari-bioid)")
        self.replace_check = QCheckBox("replace (old points kept as session <id>-backup)")
        self.replace_check.setToolTip("when this session already has picks of an object: replace them (a backup session keeps the old ones)")
        self.save_btn = QPushButton("Save picks to project")
        self.save_btn.setToolTip("the current tomogram's picks → one copick pick set per class (object = class name)")
        self.save_btn.clicked.connect(self.save_picks)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        f.addRow("project", row)
        f.addRow("run", self.run_combo)
        f.addRow("tomogram", self.tomo_combo)
        f.addRow(self.open_btn)
        f.addRow("session", self.session_edit)
        f.addRow(self.replace_check)
        f.addRow(self.save_btn)
        f.addRow(self.info)

    def load(self, config) -> bool:
        """Open a project; fills the run list. Errors are notifications."""
        from ..engine.tomo.copick_project import CopickProject

        try:
            self.project = CopickProject(config)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            _notify_error(exc)
            return False
        self.config_edit.setText(str(config))
        self._tomograms = self.project.tomograms()
        refill_combo(self.run_combo, self.project.runs)
        self._run_changed()
        objects = ", ".join(self.project.objects["name"])
        self.info.setText(f"{len(self.project.runs)} runs; objects: {objects}")
        return True

    def _run_changed(self, *_):
        if self.project is None:
            return
        t = self._tomograms[self._tomograms["run"] == self.run_combo.currentText()]
        refill_combo(self.tomo_combo, [f"{vs:g} Å {tt}" for vs, tt in zip(t["voxel_size"], t["tomo_type"])])

    def open_run(self):
        """Add the chosen tomogram (lazy, scaled in Å) and one points layer per pick set of the run."""
        if self.project is None:
            return _notify("load a copick project first")
        run, choice = self.run_combo.currentText(), self.tomo_combo.currentText()
        if not run or not choice:
            return _notify("this run has no tomogram")
        vs_text, tomo_type = choice.split(" Å ", 1)
        try:
            vol = self.project.read_tomogram(run, voxel_size=float(vs_text), tomo_type=tomo_type, check_finite=False)
            sets = self.project.pick_sets([run])
            tables = [(r, self.project.read_picks(run, vol.voxel_size, [r.object_name], r.user_id, r.session_id)) for r in sets.itertuples()]
        except Exception as exc:  # noqa: BLE001
            return _notify_error(exc)
        name = f"{run} {tomo_type}"
        meta = dict(vol.metadata, voxel_size=vol.voxel_size, copick_config=str(self.project.config_path), run=run, tomo_type=tomo_type)
        image = self.viewer.add_image(vol.data, name=name, scale=(vol.voxel_size,) * 3, metadata=meta, colormap="gray")
        objects = self.project.objects.set_index("name")
        for r, table in tables:
            radius = objects.loc[r.object_name, "radius_A"] if r.object_name in objects.index else float("nan")
            diameter = 2 * radius / vol.voxel_size + 1 if radius == radius else 11.0
            data, kw, _ = table_to_points(table, vol.voxel_size, name=f"{run} {r.object_name} ({r.user_id}/{r.session_id})",
                                          default_diameter=diameter, role="annotations" if r.user_id != "napari-bioid" else "picks")
            kw["metadata"].update(tomogram=image.name, shape=list(vol.shape), class_names={int(c): r.object_name for c in table["class_id"].unique()},
                                  copick={"run": run, "object_name": r.object_name, "user_id": r.user_id, "session_id": r.session_id})
            self.viewer.add_points(data, ndim=3, **kw)
        self.info.setText(f"{name}: {vol.shape[0]}×{vol.shape[1]}×{vol.shape[2]} voxels at {vol.voxel_size:g} Å; {len(tables)} pick sets")
        return image

    def save_picks(self) -> Optional[list]:
        """Write the current tomogram's picks into its copick run (a tomogram opened from the project)."""
        t = self._current()
        meta = t.metadata if t is not None else {}
        if t is None or "copick_config" not in meta:
            return _notify("the current tomogram was not opened from a copick project")
        layer = self._picks_of(t)
        if layer is None or not len(layer.data):
            return _notify("no picks on this tomogram yet: pick first")
        from ..engine.tomo.copick_project import CopickProject

        try:
            project = self.project if self.project is not None and str(self.project.config_path) == meta["copick_config"] \
                else CopickProject(meta["copick_config"])
            table = points_to_table(layer.data, layer.features)
            names = {int(k): v for k, v in (layer.metadata.get("class_names") or {}).items()}
            written = project.write_picks(meta["run"], table, layer_voxel_size(meta, t.scale), names, session_id=self.session_edit.text() or "0",
                                          overwrite=self.replace_check.isChecked())
        except Exception as exc:  # noqa: BLE001 - FileExistsError included: shown, nothing written
            return _notify_error(exc)
        self.info.setText(f"saved {len(table)} picks to run {meta['run']}: {', '.join(written)}")
        return written
