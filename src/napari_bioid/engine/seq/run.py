"""One base-calling run: inputs → calls → qualities → alignment → FASTQ / CSV / QC report.

This is the single engine call behind ``bioid seq call`` and the napari
widget: :func:`call_run` takes a cycle stack (or cluster intensities),
calls it with the classical caller, calibrates qualities on the reads that
align to a reference (or applies a saved / the shipped quality table), and
:func:`write_run` writes FASTQ, the per-cluster CSV, the quality table and
the QC report (JSON + PNG).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write, prepare_output
from ..progress import ProgressCallback, check_cancel, report
from .align import Alignment, align_reads
from .classical import Calls, call_intensities, call_stack
from .io import BASES, write_fastq
from .quality import QualityTable, calibrate, default_quality_table, reliability


@dataclass
class SeqRun:
    """Everything one call produced.

    Attributes
    ----------
    calls : Calls
        With ``qualities`` filled in.
    quality_table : QualityTable
    quality_source : str
        "calibrated on <reference>", a file name, or "shipped default".
    alignment : Alignment or None
        Of the pass-filter reads (rows follow ``np.flatnonzero(calls.pass_filter)``).
    iss : (DataFrame, dict) or None
        Decoded spots and summary (with a codebook).
    tile : str
        Name used in the FASTQ read names.
    """

    calls: Calls
    quality_table: QualityTable
    quality_source: str
    alignment: Optional[Alignment] = None
    iss: Optional[tuple] = None
    tile: str = "tile"
    info: Dict[str, Any] = field(default_factory=dict)

    def read_names(self) -> List[str]:
        pos = self.calls.positions
        return [f"{self.tile}:{x:.1f}:{y:.1f}" for x, y in zip(pos["x"], pos["y"])]


def call_run(source, reference: Optional[Dict[str, str]] = None, quality_table: Optional[QualityTable] = None,
             codebook: Optional[Dict[str, str]] = None, positions: Optional[pd.DataFrame] = None, tile: str = "tile",
             caller: str = "classical", model=None, clusters: str = "classical", progress: Optional[ProgressCallback] = None,
             cancel: Any = None) -> SeqRun:
    """Call a cycle stack ``[cycle, 4|5, y, x]`` or intensities ``[cluster, cycle, 4]``.

    Parameters
    ----------
    source : array
        4D: an image stack (a 5th channel is taken as the ISS anchor); 3D:
        cluster intensities (CIF / Bustard), channels A, C, G, T.
    reference : {name: sequence}, optional
        Reads passing filter are aligned to it (edlib) and the quality table is
        calibrated on them (:mod:`.quality`).
    quality_table : QualityTable, optional
        Used when there is no reference (default: the shipped table).
    codebook : {barcode: gene}, optional
        ISS decoding (:mod:`.iss`) of a stack with few cycles.
    positions : DataFrame, optional
        ``x, y`` of intensity-file clusters.
    caller : "classical", "unet" or "multitask"
        The base caller of an image stack: the classical pipeline, the
        semi-supervised U-Net (:mod:`.unet`) at the classical detection's
        clusters, or the multi-task super-resolution network (:mod:`.multitask`)
        with its own detection (its 2× images in ``calls.info["super_resolution"]``).
    model : path, UNetCaller or MultiTaskCaller, optional
        The learned caller's model (default: the shipped one).
    clusters : "classical" or "multitask"
        Where the U-Net reads its bases: the classical detection's clusters, or
        the shipped multi-task network's detection (which resolves touching
        clusters; slower). Only for ``caller="unet"``.

    Raises
    ------
    BioidInputError
        Bad arrays (see :func:`.classical.call_stack`, :func:`.classical.call_intensities`).
    """
    arr = np.asarray(source)
    iss = None
    if arr.ndim == 4:
        if codebook is not None:
            from .iss import decode_iss

            iss = decode_iss(arr, codebook, caller=caller, model=model)
        calls = call_stack(arr[:, :4], progress=progress, cancel=cancel)
        if clusters not in ("classical", "multitask"):
            raise BioidInputError(f"unknown clusters {clusters!r}: use classical or multitask")
        if clusters == "multitask" and caller != "unet":
            raise BioidInputError("clusters='multitask' is for the U-Net caller (the multi-task caller always uses its own)")
        if caller == "unet":
            from .unet import UNetCaller, default_unet_path

            net = UNetCaller.resolve(model, default_unet_path())
            if clusters == "multitask":
                from .multitask import MultiTaskCaller, default_multitask_path

                calls = MultiTaskCaller.load(default_multitask_path()).call(arr[:, :4], calls, progress=progress, cancel=cancel)
            calls = net.call(arr[:, :4], calls, progress=progress, cancel=cancel)
            calls.info["clusters"] = clusters
        elif caller == "multitask":
            from .multitask import MultiTaskCaller, default_multitask_path

            net = MultiTaskCaller.resolve(model, default_multitask_path())
            calls = net.call(arr[:, :4], calls, progress=progress, cancel=cancel)
        elif caller != "classical":
            raise BioidInputError(f"unknown caller {caller!r}: use classical, unet or multitask")
    elif arr.ndim == 3:
        if caller != "classical":
            raise BioidInputError("cluster intensities (CIF / _int.txt) have no images: only the classical caller reads them")
        calls = call_intensities(arr, positions, progress=progress, cancel=cancel)
    else:
        raise BioidInputError(f"expected an image stack [cycle, channel, y, x] or intensities [cluster, cycle, 4], got shape {arr.shape}")
    check_cancel(cancel)
    alignment = None
    if reference is not None:
        report(progress, 0, 1, "aligning reads to the reference")
        pf = np.flatnonzero(calls.pass_filter)
        reads = calls.reads_at(pf)
        alignment = align_reads(reads, reference, n_cycles=calls.bases.shape[1])
        if alignment.covered.sum() >= 500:
            quality_table = calibrate(calls.chastity[pf], alignment.errors, alignment.covered)
            source_name = "calibrated on the reference"
        else:
            source_name = None
    else:
        source_name = None
    if source_name is None:
        if quality_table is None:
            quality_table = default_quality_table() or QualityTable()
            source_name = "shipped default"
        else:
            source_name = "given table"
    calls.qualities = quality_table.apply(calls.chastity)
    return SeqRun(calls, quality_table, source_name, alignment, iss, tile)


def qc_report(run: SeqRun) -> dict:
    """The instrument-style QC numbers of a run (one JSON-able dict)."""
    c = run.calls
    pf = c.pass_filter
    q = c.qualities
    T = c.bases.shape[1]
    out: Dict[str, Any] = {
        "clusters": int(len(pf)),
        "pass_filter_fraction": float(pf.mean()) if len(pf) else 0.0,
        "cycles": int(T),
        "crosstalk": np.round(c.crosstalk, 4).tolist(),
        "phasing": c.phasing,
        "prephasing": c.prephasing,
        "quality_source": run.quality_source,
    }
    if pf.any():
        out["percent_q30"] = float((q[pf] >= 30).mean() * 100)
        out["percent_q30_per_cycle"] = ((q[pf] >= 30).mean(axis=0) * 100).round(3).tolist()
        out["mean_quality_per_cycle"] = q[pf].mean(axis=0).round(3).tolist()
        out["percent_base_per_cycle"] = {b: ((c.bases[pf] == i).mean(axis=0) * 100).round(3).tolist() for i, b in enumerate(BASES)}
        called = c.bases[pf]
        raw = c.raw[pf]
        out["intensity_per_cycle"] = {b: [float(np.median(raw[called[:, t] == i, t, i])) if (called[:, t] == i).any() else None
                                          for t in range(T)] for i, b in enumerate(BASES)}
    if run.alignment is not None:
        s = run.alignment.summary()
        out.update({"aligned_fraction": s["aligned_fraction"], "error_rate": s["error_rate"], "perfect_reads": s["perfect_reads"],
                    "error_rate_per_cycle": s["per_cycle_error"]})
        pfq = q[np.flatnonzero(pf)]
        out["calibration"] = reliability(pfq, run.alignment.errors, run.alignment.covered)
    if run.iss is not None:
        out["iss"] = run.iss[1]
    return out


def draw_qc(fig, report: dict) -> None:
    """Draw the QC panels of a :func:`qc_report` into a matplotlib Figure (error, % base, quality, intensity,
    crosstalk, calibration)."""
    T = report["cycles"]
    cyc = np.arange(1, T + 1)
    axes = fig.subplots(2, 3)
    colours = {"A": "#2ca02c", "C": "#1f77b4", "G": "#111111", "T": "#d62728"}
    ax = axes[0, 0]
    if "error_rate_per_cycle" in report:
        ax.plot(cyc, [np.nan if v is None else 100 * v for v in report["error_rate_per_cycle"]], "-", color="#d62728")
        ax.set_title(f"error rate {100 * report['error_rate']:.2f} %, aligned {100 * report['aligned_fraction']:.1f} %")
    else:
        ax.set_title("error rate (no reference given)")
    ax.set_xlabel("cycle"), ax.set_ylabel("% error")
    ax = axes[0, 1]
    for b, v in report.get("percent_base_per_cycle", {}).items():
        ax.plot(cyc, v, color=colours[b], label=b)
    ax.set_title("% base"), ax.set_xlabel("cycle"), ax.legend(fontsize=7, ncol=4)
    ax = axes[0, 2]
    if "mean_quality_per_cycle" in report:
        ax.plot(cyc, report["mean_quality_per_cycle"], color="#1f77b4")
        ax.set_ylabel("mean Q", color="#1f77b4")
        twin = ax.twinx()
        twin.plot(cyc, report["percent_q30_per_cycle"], color="#ff7f0e")
        twin.set_ylabel("% ≥ Q30", color="#ff7f0e")
        twin.set_ylim(0, 100)
        ax.set_title(f"quality: {report.get('percent_q30', 0):.1f} % ≥ Q30")
    ax.set_xlabel("cycle")
    ax = axes[1, 0]
    for b, v in report.get("intensity_per_cycle", {}).items():
        ax.plot(cyc, [np.nan if x is None else x for x in v], color=colours[b], label=b)
    ax.set_title(f"intensity of called base; PF {100 * report['pass_filter_fraction']:.1f} %"), ax.set_xlabel("cycle"), ax.legend(fontsize=7, ncol=4)
    ax = axes[1, 1]
    im = ax.imshow(np.asarray(report["crosstalk"]), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(4), list(BASES)), ax.set_yticks(range(4), list(BASES))
    ax.set_xlabel("dye"), ax.set_ylabel("channel")
    ax.set_title(f"crosstalk; phasing {100 * report['phasing']:.2f} %, prephasing {100 * report['prephasing']:.2f} %", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[1, 2]
    cal = [r for r in report.get("calibration", []) if r["bases"] >= 100]
    if cal:
        ax.scatter([r["reported"] for r in cal], [r["empirical"] for r in cal], s=[max(5, np.sqrt(r["bases"])) for r in cal])
        ax.plot([0, 45], [0, 45], "k--", lw=0.8)
        ax.set_xlim(0, 45), ax.set_ylim(0, 50)
    ax.set_title("calibration (bins ≥ 100 bases)"), ax.set_xlabel("reported Q"), ax.set_ylabel("empirical Q")
    fig.tight_layout()


def qc_plots(run: SeqRun, report: dict, path: PathLike) -> Path:
    """One PNG with the QC panels (see :func:`draw_qc`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 7), dpi=90)
    draw_qc(fig, report)
    path = Path(path)
    with atomic_write(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_run(run: SeqRun, fastq: Optional[PathLike] = None, csv: Optional[PathLike] = None, report_dir: Optional[PathLike] = None,
              overwrite: bool = False, all_reads: bool = False, super_resolution: Optional[PathLike] = None) -> Dict[str, Path]:
    """Write the run's outputs; all paths are checked before anything is written.

    * FASTQ (Phred+33) of the pass-filter reads (all reads with ``all_reads``),
      named ``<tile>:<x>:<y>`` (px);
    * CSV: one row per cluster: x, y (px), pass_filter, read, qualities
      (Phred+33), mean chastity, and for ISS the decoded spots beside it
      (``<csv stem>_spots.csv``: x, y, barcode, quality, gene, accepted);
    * ``report_dir``: ``qc.json``, ``qc.png`` and ``quality_table.json``;
    * ``super_resolution``: the multi-task caller's 2× images, a float32 TIFF
      ``[cycle, channel A/C/G/T, 2y, 2x]`` (axes TCYX, in the registration's
      reference frame; pixel size half the input's).

    Raises
    ------
    FileExistsError
        An output exists and ``overwrite`` is false (nothing is written).
    BioidInputError
        ``super_resolution`` asked of a run without 2× images (not the multi-task caller).
    """
    targets = {}
    sr = run.calls.info.get("super_resolution")
    if super_resolution is not None:
        if sr is None:
            raise BioidInputError("only the multi-task caller makes super-resolved images (caller='multitask')")
        targets["super_resolution"] = Path(super_resolution)
    if fastq is not None:
        targets["fastq"] = Path(fastq)
    if csv is not None:
        targets["csv"] = Path(csv)
        if run.iss is not None:
            targets["spots"] = Path(csv).with_name(Path(csv).stem + "_spots.csv")
    if report_dir is not None:
        d = Path(report_dir)
        targets.update({"qc_json": d / "qc.json", "qc_png": d / "qc.png", "quality_table": d / "quality_table.json"})
    for p in targets.values():
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} already exists; refusing to overwrite it (pass --overwrite)")
        if not p.parent.exists() and p.parent != Path(report_dir or "."):
            prepare_output(p, overwrite)
    if report_dir is not None:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
    c = run.calls
    if "fastq" in targets:
        keep = np.ones(len(c.pass_filter), bool) if all_reads else c.pass_filter
        idx = np.flatnonzero(keep)
        names, reads = run.read_names(), c.reads
        write_fastq(targets["fastq"], [names[i] for i in idx], [reads[i] for i in idx], c.qualities[idx], overwrite=overwrite)
    if "csv" in targets:
        with atomic_write(targets["csv"], overwrite=overwrite) as tmp:
            c.table().to_csv(tmp, index=False, float_format="%.3f")
    if "spots" in targets:
        with atomic_write(targets["spots"], overwrite=overwrite) as tmp:
            run.iss[0].to_csv(tmp, index=False, float_format="%.3f")
    if "super_resolution" in targets:
        import tifffile

        with atomic_write(targets["super_resolution"], overwrite=overwrite) as tmp:
            tifffile.imwrite(tmp, np.asarray(sr, np.float32), metadata={"axes": "TCYX", "channels": BASES})
    if report_dir is not None:
        rep = qc_report(run)
        with atomic_write(targets["qc_json"], overwrite=overwrite) as tmp:
            Path(tmp).write_text(json.dumps(rep, indent=1))
        qc_plots(run, rep, targets["qc_png"])
        run.quality_table.save(targets["quality_table"], overwrite=overwrite)
    return targets
