"""The base-calling dock widget: call a cycle stack, see each cluster's base per cycle, inspect, export.

A thin layer over :func:`napari_bioid.engine.seq.run.call_run`: choose a cycle
stack (opened by the plugin's reader as one additive layer per channel, the
cycle on the slider, or any 4D ``[cycle, channel, y, x]`` image layer), an
optional reference FASTA (qualities calibrated on the reads that align to it)
and an optional ISS codebook; *Call* runs in a worker with a progress bar and
*Cancel*. The clusters become a points layer whose text is the base of the
cycle on the slider (coloured per base; calls below Q20 faded), or the gene
for ISS. Selecting a cluster shows its read, qualities and its 4-channel
intensity trace over the cycles; the QC plots sit in the dock; *Export*
writes FASTQ and the per-cluster CSV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from qtpy.QtWidgets import (
    QComboBox, QFileDialog, QFormLayout, QLabel, QPushButton, QTabWidget, QVBoxLayout, QWidget,
)

from .._seq_layers import BASE_COLOURS, gather_stacks

#: the caller choices: (caller, where the U-Net reads its bases)
CALLERS = {"classical": ("classical", "classical"), "unet": ("unet", "classical"),
           "unet at multi-task clusters": ("unet", "multitask"), "multitask": ("multitask", "classical")}
from ..engine.errors import BioidInputError
from ._form import path_row, refill_combo, run_controls
from ._worker import WorkerHost, notify, notify_error, warm_up_imports

LOW_QUALITY = 20


class _Figure(QWidget):
    def __init__(self, size=(4, 2.2)):
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=size, dpi=80)
        self.canvas = FigureCanvasQTAgg(self.figure)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)


class BaseCallingWidget(WorkerHost, QWidget):
    """Dock widget over the base-calling engine (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._init_worker()
        self.run = None  # SeqRun of the last call
        self.points = None
        self._stacks = {}
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.dims.events.current_step.connect(self._cycle_changed)
        self._refresh_layers()
        warm_up_imports(("scipy.ndimage", "skimage.registration", "edlib"))

    # ---------------------------------------------------------------- UI
    def _build(self):
        root = QVBoxLayout(self)
        f = QFormLayout()
        self.stack_combo = QComboBox()
        self.stack_combo.setToolTip("a cycle stack [cycle, A/C/G/T(, anchor), y, x]: open a stack TIFF, or any 4D image layer")
        f.addRow("stack", self.stack_combo)
        self.reference, row = path_row("reference FASTA (optional)", "reads passing filter are aligned to it and the Phred "
                                        "qualities calibrated on them; without it the shipped quality table is used", "FASTA (*.fa *.fasta *.fna)")
        f.addRow("reference", row)
        self.codebook, row = path_row("ISS codebook CSV (optional)", "Name,Code: in-situ sequencing spots are decoded to genes",
                                       "CSV (*.csv)")
        f.addRow("codebook", row)
        self.caller_combo = QComboBox()
        self.caller_combo.addItems(list(CALLERS))
        self.caller_combo.setToolTip("classical pipeline; the semi-supervised U-Net (shipped model) at the classical clusters or at the "
                                     "multi-task network's; or the multi-task network (shipped model): its own detection, separating "
                                     "touching clusters, and a 2x super-resolved image shown as its own layers")
        f.addRow("caller", self.caller_combo)
        root.addLayout(f)
        self.call_btn = QPushButton("Call")
        self.call_btn.setToolTip("register, detect clusters, extract, correct crosstalk and phasing, call, qualities (worker thread)")
        self.call_btn.clicked.connect(self.call)
        self.export_btn = QPushButton("Export FASTQ + CSV…")
        self.export_btn.setToolTip("FASTQ (Phred+33) of the pass-filter reads and a per-cluster CSV (x, y in px, pass filter, read, qualities)")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(self._export_dialog)
        run_controls(self, root, self.call_btn, self.export_btn)
        self.cancel_btn.setToolTip("stop at the next cycle (nothing is written)")
        tabs = QTabWidget()
        cluster = QWidget()
        cl = QVBoxLayout(cluster)
        self.cluster_label = QLabel("select a cluster (points layer, select mode) to see its read")
        self.cluster_label.setWordWrap(True)
        self.cluster_label.setStyleSheet("font-family: monospace")
        self.trace = _Figure((4, 2.2))
        cl.addWidget(self.cluster_label)
        cl.addWidget(self.trace)
        tabs.addTab(cluster, "Cluster")
        self.qc = _Figure((8, 4.5))
        self.qc.setMinimumHeight(330)
        tabs.addTab(self.qc, "QC")
        root.addWidget(tabs, stretch=1)

    def _refresh_layers(self, event=None):
        self._stacks = gather_stacks(self.viewer.layers)
        refill_combo(self.stack_combo, list(self._stacks))

    def _action_buttons(self):
        return [self.call_btn, self.export_btn]

    def _finished(self):
        super()._finished()
        self.export_btn.setEnabled(self.run is not None)

    # ---------------------------------------------------------------- call
    def call(self):
        """Call the chosen stack in a worker; shows clusters, QC and enables export when done."""
        from ..engine.seq.io import read_codebook, read_fasta

        try:
            name = self.stack_combo.currentText()
            if name not in self._stacks:
                raise BioidInputError("open a cycle stack first ([cycle, A/C/G/T, y, x] TIFF, or a 4D image layer)")
            stack = self._stacks[name]
            ref = read_fasta(self.reference.text().strip()) if self.reference.text().strip() else None
            book = read_codebook(self.codebook.text().strip()) if self.codebook.text().strip() else None
        except Exception as exc:
            notify_error(exc)
            return None

        caller, clusters = CALLERS[self.caller_combo.currentText()]

        def job(progress, cancel):
            from ..engine.seq.run import call_run, qc_report

            run = call_run(np.asarray(stack), ref, None, book, tile=name, caller=caller, clusters=clusters, progress=progress,
                           cancel=cancel)
            return run, qc_report(run)

        return self.start(job, self._called, "calling…")

    def _called(self, result):
        self.run, self.report = result
        c = self.run.calls
        text = f"{len(c.bases)} clusters, {100 * c.pass_filter.mean():.1f} % pass filter, {self.report.get('percent_q30', 0):.1f} % ≥ Q30"
        if "error_rate" in self.report:
            text += f", {100 * self.report['aligned_fraction']:.1f} % aligned, error {100 * self.report['error_rate']:.2f} %"
        if "separated_clusters" in c.info:
            text += (f"; {c.info['separated_clusters']} clusters separated that the classical detection merged "
                     f"({c.info['classical_clusters']} classical clusters)")
        if self.run.iss is not None:
            s = self.run.iss[1]
            text += f"; ISS: {s['decoded_at_target_fdr']} spots decoded at FDR ≤ {100 * s['target_fdr']:.0f} %"
        self.status.setText(text)
        self._show_super_resolution()
        self._show_points()
        self._draw_qc()

    def _show_super_resolution(self):
        """The multi-task caller's 2× images as one layer per channel (replacing an earlier run's)."""
        from .._seq_layers import super_resolution_layers

        sr = self.run.calls.info.get("super_resolution")
        if sr is None:
            return
        for data, kwargs, _ in super_resolution_layers(sr, self.run.tile):
            if kwargs["name"] in self.viewer.layers:
                self.viewer.layers.remove(kwargs["name"])
            self.viewer.add_image(data, **kwargs)

    def _cycle(self) -> int:
        step = self.viewer.dims.current_step
        return int(step[0]) if len(step) >= 3 else 0

    def _show_points(self):
        c = self.run.calls
        yx = c.positions[["y", "x"]].to_numpy(float)
        name = f"{self.run.tile} calls"
        features = {"cluster": np.arange(len(yx)), "pass_filter": c.pass_filter, "label": [""] * len(yx),
                    "separated": c.positions["separated"].to_numpy() if "separated" in c.positions else np.zeros(len(yx), bool)}
        if self.points is not None and self.points in self.viewer.layers:
            self.viewer.layers.remove(self.points)
        self.points = self.viewer.add_points(yx, name=name, size=3, face_color="transparent", border_width=0.1,
                                             features=features, text={"string": "{label}", "size": 8, "color": "white"},
                                             metadata={"bioid_output": "seq calls"})
        self.points.selected_data.events.items_changed.connect(self._selection_changed)
        self._cycle_changed()
        if self.run.iss is not None:  # in-situ sequencing: each decoded spot with its gene
            spots = self.run.iss[0]
            name = f"{self.run.tile} genes"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            colours = np.where(spots["accepted"].to_numpy()[:, None], [[1.0, 0.6, 0.1, 1.0]], [[0.6, 0.6, 0.6, 0.3]])
            self.viewer.add_points(spots[["y", "x"]].to_numpy(float), name=name, size=4, face_color="transparent", border_color=colours,
                                   features={"gene": spots["gene"].where(spots["accepted"], "").to_numpy(), "barcode": spots["barcode"].to_numpy()},
                                   text={"string": "{gene}", "size": 8, "color": "orange"}, metadata={"bioid_output": "iss genes"})

    def labels_for_cycle(self, t: int):
        """(text, colours) of every cluster at cycle ``t`` (0-based): the base, or the gene for ISS spots."""
        c = self.run.calls
        t = int(np.clip(t, 0, c.bases.shape[1] - 1))
        bases = np.array(list("ACGT"))[c.bases[:, t]]
        q = c.qualities[:, t]
        colours = np.array([[int(BASE_COLOURS[b][i : i + 2], 16) / 255 for i in (1, 3, 5)] + [1.0] for b in bases])
        colours[q < LOW_QUALITY, 3] = 0.3  # faded: low-quality calls
        return list(bases), colours

    def _cycle_changed(self, event=None):
        if self.run is None or self.points is None or self.points not in self.viewer.layers:
            return
        text, colours = self.labels_for_cycle(self._cycle())
        self.points.features["label"] = text
        self.points.refresh_text()
        self.points.border_color = colours
        self.points.text.color = "white"

    # ---------------------------------------------------------------- inspect
    def _selection_changed(self, event=None):
        sel = sorted(self.points.selected_data) if self.points is not None else []
        if sel:
            self.show_cluster(int(sel[-1]))

    def show_cluster(self, i: int):
        """Read, qualities and 4-channel intensity trace of cluster ``i`` in the dock."""
        from ..engine.seq.io import phred_string

        c = self.run.calls
        read, q = c.reads_at([i])[0], c.qualities[i]
        x, y = c.positions["x"].iloc[i], c.positions["y"].iloc[i]
        self.cluster_label.setText(f"cluster {i} at x {x:.1f}, y {y:.1f} px; {'passes' if c.pass_filter[i] else 'fails'} the chastity filter\n"
                                   f"{read}\n{phred_string(q)}\nmean Q {q.mean():.1f}")
        fig = self.trace.figure
        fig.clear()
        ax = fig.add_subplot(111)
        for k, b in enumerate("ACGT"):
            ax.plot(np.arange(1, len(read) + 1), c.corrected[i, :, k], color=BASE_COLOURS[b], label=b, lw=1)
        ax.set_xlabel("cycle", fontsize=7)
        learned = c.info.get("caller") in ("unet", "multitask")
        ax.set_ylabel("base probability" if learned else "corrected intensity", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, ncol=4)
        fig.tight_layout()
        self.trace.canvas.draw_idle()

    def _draw_qc(self):
        from ..engine.seq.run import draw_qc

        self.qc.figure.clear()
        draw_qc(self.qc.figure, self.report)
        self.qc.canvas.draw_idle()

    # ---------------------------------------------------------------- export
    def export(self, fastq, csv: Optional[str] = None):
        """Write FASTQ (and the per-cluster CSV beside it); existing files are kept as .bak."""
        from ..engine.seq.run import write_run

        if self.run is None:
            raise BioidInputError("nothing to export: call a stack first")
        fastq = Path(fastq)
        if fastq.suffix.lower() not in (".fastq", ".fq"):
            fastq = fastq.with_name(fastq.name + ".fastq")
        return write_run(self.run, fastq, Path(csv) if csv else fastq.with_suffix(".csv"), overwrite=True)

    def _export_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Export reads", str(Path.home() / "reads.fastq"), "FASTQ (*.fastq *.fq)")
        if path:
            try:
                out = self.export(path)
                notify(f"wrote {', '.join(str(p) for p in out.values())}")
            except Exception as exc:
                notify_error(exc)
