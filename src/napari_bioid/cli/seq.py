"""``bioid seq simulate|call|evaluate``: base calling from sequencing fluorescence images or intensities."""

from __future__ import annotations

import json
from pathlib import Path


def add(sub) -> None:
    seq = sub.add_parser("seq", help="base calling from flow-cell / in-situ sequencing images or intensities")
    ssub = seq.add_subparsers(dest="cmd", required=True)

    sm = ssub.add_parser("simulate", help="simulate a flow-cell tile [cycle, A/C/G/T, y, x] with its truth")
    sm.add_argument("--reference", type=Path, required=True, help="FASTA the reads are drawn from (both strands)")
    sm.add_argument("--out-dir", type=Path, required=True)
    sm.add_argument("--name", default="tile")
    sm.add_argument("--size", default="512,512", help="height,width in px")
    sm.add_argument("--cycles", type=int, default=60)
    sm.add_argument("--density", type=float, default=None, help="clusters per mm² in thousands (K/mm²)")
    sm.add_argument("--pixel-size", type=float, default=None, help="µm per pixel")
    sm.add_argument("--patterned", action="store_true", help="clusters on a hexagonal grid of wells")
    sm.add_argument("--fwhm", type=float, default=None, help="PSF FWHM in px (default 2.2, from the MiSeq InterOp metrics)")
    sm.add_argument("--phasing", type=float, default=None, help="per cycle, e.g. 0.006")
    sm.add_argument("--prephasing", type=float, default=None)
    sm.add_argument("--super-resolution", action="store_true", help="also write the noise-free 2× image per cycle (<name>_sr2x.tif)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--overwrite", action="store_true")

    ca = ssub.add_parser("call", help="call bases: a cycle stack (TIFF) or intensities (.cif, _int.txt) → FASTQ")
    ca.add_argument("input", type=Path, nargs="+", help="stack.tif, one .cif with all cycles, several single-cycle .cif in order, or _int.txt")
    ca.add_argument("--out", type=Path, required=True, help="FASTQ to write (Phred+33)")
    ca.add_argument("--csv", type=Path, default=None, help="per-cluster CSV (x, y, pass filter, read, qualities); default beside the FASTQ")
    ca.add_argument("--reference", type=Path, default=None, help="FASTA: align the reads and calibrate the qualities on them")
    ca.add_argument("--quality-table", type=Path, default=None, help="a quality table saved by an earlier run (quality_table.json)")
    ca.add_argument("--codebook", type=Path, default=None, help="ISS codebook CSV (Name,Code): decode spots to genes")
    ca.add_argument("--report", type=Path, default=None, help="folder for qc.json, qc.png and quality_table.json")
    ca.add_argument("--tile", default=None, help="tile name in the read names (default: the input's stem)")
    ca.add_argument("--all-reads", action="store_true", help="write reads failing the chastity filter too")
    ca.add_argument("--caller", choices=["classical", "unet", "multitask"], default="classical",
                    help="classical pipeline, the semi-supervised U-Net at the classical clusters, or the multi-task super-resolution "
                         "network with its own detection (image stacks only)")
    ca.add_argument("--model", type=Path, default=None, help="the learned caller's model (default: the shipped one)")
    ca.add_argument("--clusters", choices=["classical", "multitask"], default="classical",
                    help="unet caller: read the bases at the classical detection's clusters or at the multi-task network's "
                         "(resolves touching clusters; slower)")
    ca.add_argument("--super-resolution", type=Path, default=None,
                    help="multitask caller: write its 2x images here (float32 TIFF, cycle x A/C/G/T x 2y x 2x)")
    ca.add_argument("--overwrite", action="store_true")

    ev = ssub.add_parser("evaluate", help="align a FASTQ to a reference: reads, aligned fraction, error rate, per-cycle error (JSON)")
    ev.add_argument("fastq", type=Path)
    ev.add_argument("--reference", type=Path, required=True)
    ev.add_argument("--cycles", type=int, default=None, help="only the first N cycles of each read")


def _simulate(args) -> int:
    from ..engine.errors import BioidInputError
    from ..engine.io.atomic import atomic_write
    from ..engine.progress import TqdmProgress
    from ..engine.seq.io import read_fasta, write_stack
    from ..engine.seq.simulate import SeqSimParams, render_super_resolution, simulate_tile

    try:
        h, w = (int(v) for v in args.size.split(","))
    except ValueError:
        raise BioidInputError(f"--size must be height,width in px, got {args.size!r}") from None
    kw = {k: v for k, v in {"density_k_per_mm2": args.density, "pixel_size_um": args.pixel_size, "fwhm_px": args.fwhm,
                            "phasing": args.phasing, "prephasing": args.prephasing}.items() if v is not None}
    params = SeqSimParams(height=h, width=w, n_cycles=args.cycles, patterned=args.patterned, seed=args.seed, **kw)
    ref = "".join(read_fasta(args.reference).values())
    out = args.out_dir
    names = {"stack": out / f"{args.name}.tif", "truth": out / f"{args.name}_truth.csv", "params": out / f"{args.name}_params.json"}
    if args.super_resolution:
        names["sr"] = out / f"{args.name}_sr2x.tif"
    for p in names.values():
        if p.exists() and not args.overwrite:
            raise FileExistsError(f"{p} already exists; refusing to overwrite it (pass --overwrite)")
    bar = TqdmProgress("simulating")
    try:
        tile = simulate_tile(params, ref, progress=bar)
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    write_stack(tile.stack, names["stack"], overwrite=args.overwrite, extra={"pixel_size_um": params.pixel_size_um})
    with atomic_write(names["truth"], overwrite=args.overwrite) as tmp:
        tile.truth.to_csv(tmp, index=False, float_format="%.3f")
    with atomic_write(names["params"], overwrite=args.overwrite) as tmp:
        Path(tmp).write_text(json.dumps({**params.to_dict(), "reference": str(args.reference), "units": {
            "x, y": "px (column, row) in the cycle-1 frame of channel A", "pixel_size_um": "µm", "density_k_per_mm2": "thousand clusters per mm²",
            "fwhm_px": "px", "phasing, prephasing, decay": "per cycle", "brightness": "photo-electrons", "read_noise": "counts"}}, indent=1))
    if args.super_resolution:
        write_stack(render_super_resolution(tile).astype("float32"), names["sr"], overwrite=args.overwrite, extra={"factor": 2})
    print(json.dumps({"clusters": len(tile.truth), **{k: str(v) for k, v in names.items()}}))
    return 0


def _load_input(paths):
    """(source array, positions or None, default tile name) from the input paths."""
    from ..engine.errors import BioidInputError
    from ..engine.seq.io import read_cif, read_cif_cycles, read_int_txt, read_stack

    first = paths[0]
    suffix = first.suffix.lower()
    if suffix in (".tif", ".tiff"):
        if len(paths) > 1:
            raise BioidInputError("give one stack TIFF")
        arr, _meta = read_stack(first)
        return arr, None, first.stem
    if suffix == ".cif":
        arr = read_cif(first) if len(paths) == 1 else read_cif_cycles(paths)
        return arr, None, first.stem
    if first.name.endswith("_int.txt") or suffix == ".txt":
        arr, pos = read_int_txt(first)
        return arr, pos, first.name.replace("_int.txt", "")
    raise BioidInputError(f"{first}: unknown input (expected a stack .tif, .cif or _int.txt)")


def _call(args) -> int:
    import numpy as np

    from ..engine.errors import BioidInputError
    from ..engine.progress import TqdmProgress
    from ..engine.seq.io import read_codebook, read_fasta
    from ..engine.seq.quality import QualityTable
    from ..engine.seq.run import call_run, qc_report, write_run

    ref = read_fasta(args.reference) if args.reference else None
    table = QualityTable.load(args.quality_table) if args.quality_table else None
    codebook = read_codebook(args.codebook) if args.codebook else None
    csv = args.csv or args.out.with_suffix(".csv")
    if args.super_resolution is not None and args.caller != "multitask":
        raise BioidInputError("--super-resolution needs --caller multitask")
    for p in [args.out, csv] + ([args.super_resolution] if args.super_resolution else []):
        if p.exists() and not args.overwrite:
            raise FileExistsError(f"{p} already exists; refusing to overwrite it (pass --overwrite)")
        if not p.parent.exists():
            raise FileNotFoundError(f"output folder {p.parent} does not exist")
    source, positions, tile = _load_input(args.input)
    bar = TqdmProgress("calling")
    try:
        run = call_run(source, ref, table, codebook, positions, tile=args.tile or tile, caller=args.caller, model=args.model,
                       clusters=args.clusters, progress=bar)
    finally:
        bar.close()
    write_run(run, args.out, csv, args.report, overwrite=args.overwrite, all_reads=args.all_reads, super_resolution=args.super_resolution)
    rep = qc_report(run)
    keys = ["clusters", "pass_filter_fraction", "cycles", "phasing", "prephasing", "percent_q30", "aligned_fraction", "error_rate",
            "perfect_reads", "quality_source"]
    summary = {k: rep[k] for k in keys if k in rep}
    if "iss" in rep:
        summary["iss"] = rep["iss"]
    if "separated_clusters" in run.calls.info:
        summary["separated_clusters"] = run.calls.info["separated_clusters"]
    summary["fastq"] = str(args.out)
    summary["reads_written"] = int(len(run.calls.pass_filter) if args.all_reads else np.count_nonzero(run.calls.pass_filter))
    print(json.dumps(summary))
    return 0


def _evaluate(args) -> int:
    from ..engine.seq.align import align_reads
    from ..engine.seq.io import read_fasta, read_fastq

    _names, reads, _q = read_fastq(args.fastq)
    if args.cycles:
        reads = [r[: args.cycles] for r in reads]
    s = align_reads(reads, read_fasta(args.reference))
    print(json.dumps(s.summary()))
    return 0


HANDLERS = {"simulate": _simulate, "call": _call, "evaluate": _evaluate}
