"""Base calling from sequencing-by-synthesis fluorescence images (METHODS.md §3).

Typical use::

    from napari_bioid.engine.seq import read_stack, read_fasta, call_run, write_run

    stack, meta = read_stack("tile.tif")                 # [cycle, A/C/G/T, y, x]
    run = call_run(stack, reference=read_fasta("phiX.fa"))
    write_run(run, fastq="reads.fastq", csv="clusters.csv", report_dir="qc/")

Modules: :mod:`.simulate` (flow-cell tiles), :mod:`.classical` (the classical
caller), :mod:`.quality` (calibrated Phred), :mod:`.align` (edlib alignment),
:mod:`.iss` (in-situ sequencing decoding), :mod:`.run` (one call, its outputs
and QC), :mod:`.io` (TIFF stacks, CIF, Bustard, FASTA, FASTQ, codebooks),
:mod:`.unet` (the semi-supervised U-Net caller), :mod:`.multitask` (the
multi-task super-resolution caller); ``call_run(..., caller="unet"|"multitask")``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

_WHERE = {
    "read_stack": "io", "write_stack": "io", "read_cif": "io", "read_cif_cycles": "io", "read_int_txt": "io",
    "read_fasta": "io", "read_fastq": "io", "write_fastq": "io", "read_codebook": "io",
    "SeqSimParams": "simulate", "SimulatedTile": "simulate", "simulate_tile": "simulate", "render_super_resolution": "simulate",
    "phasing_matrix": "simulate",
    "Calls": "classical", "call_stack": "classical", "call_intensities": "classical",
    "QualityTable": "quality", "calibrate": "quality",
    "Alignment": "align", "align_reads": "align",
    "decode_iss": "iss", "naive_decode": "iss",
    "SeqRun": "run", "call_run": "run", "write_run": "run", "qc_report": "run",
    "UNetCaller": "unet", "train_unet_caller": "unet", "labels_from_reference": "unet",
    "MultiTaskCaller": "multitask", "train_multitask_caller": "multitask", "multitask_tile": "multitask",
}


__getattr__ = lazy_getattr(__name__, _WHERE, globals())


if TYPE_CHECKING:  # pragma: no cover
    from .align import Alignment, align_reads
    from .classical import Calls, call_intensities, call_stack
    from .io import read_cif, read_cif_cycles, read_codebook, read_fasta, read_fastq, read_int_txt, read_stack, write_fastq, write_stack
    from .iss import decode_iss, naive_decode
    from .quality import QualityTable, calibrate
    from .run import SeqRun, call_run, qc_report, write_run
    from .multitask import MultiTaskCaller, multitask_tile, train_multitask_caller
    from .simulate import SeqSimParams, SimulatedTile, phasing_matrix, render_super_resolution, simulate_tile
    from .unet import UNetCaller, labels_from_reference, train_unet_caller

__all__ = sorted(_WHERE)
