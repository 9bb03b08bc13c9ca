"""``bioid tomo train|pick|simulate|evaluate``: particle picking in cryo-ET tomograms."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from ..engine.errors import BioidInputError
from ._common import _floats, _ints


def _add_tomo(sub) -> None:
    tomo = sub.add_parser("tomo", help="particle picking in cryo-ET tomograms")
    tsub = tomo.add_subparsers(dest="cmd", required=True)

    tr = tsub.add_parser("train", help="train a picking model from tomograms and clicked centres")
    tr.add_argument("--tomogram", action="append", default=[], type=Path, help="training tomogram (MRC/REC/TIFF/OME-Zarr); repeat, paired with --coords")
    tr.add_argument("--coords", action="append", default=[], type=Path, help="its particle centres (CSV/STAR/.coords); repeat")
    tr.add_argument("--copick", type=Path, default=None, help="train from a copick project's picks instead (its configuration JSON)")
    tr.add_argument("--object", action="append", default=[], help="copick: pickable object to train on; repeat (class ids in this order)")
    tr.add_argument("--runs", default=None, help="copick: comma-separated training runs (default: every run with picks but the --val-runs)")
    tr.add_argument("--val-runs", default=None, help="copick: comma-separated validation runs")
    tr.add_argument("--user-id", default=None, help="copick: only picks by this user (e.g. the annotator)")
    tr.add_argument("--session-id", default=None, help="copick: only picks of this session")
    tr.add_argument("--copick-voxel-size", type=float, default=None, help="copick: the voxel spacing to train at (Å; default the finest)")
    tr.add_argument("--tomo-type", default=None, help="copick: tomogram type (e.g. wbp, denoised; default the first)")
    tr.add_argument("--val-tomogram", action="append", default=[], type=Path, help="validation tomogram; repeat, paired with --val-coords")
    tr.add_argument("--val-coords", action="append", default=[], type=Path)
    tr.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    tr.add_argument("--diameter", type=_floats, default=None, help="particle diameter in voxels, one for all classes or one per class (comma-separated); default 11")
    tr.add_argument("--class-names", default=None, help="comma-separated class names, in class-id order")
    tr.add_argument("--merge-classes", action="store_true", help="ignore class ids: train one 'particle' class (class-agnostic picking)")
    tr.add_argument("--label-radius", type=_ints, default=None, help="weak-label radius in voxels, one or per class; default (diameter-1)/2")
    tr.add_argument("--label-shape", default="sphere", choices=["sphere", "gaussian", "cube"])
    tr.add_argument("--epochs", type=int, default=60)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the one-cycle schedule")
    tr.add_argument("--block-size", type=int, default=72)
    tr.add_argument("--pad-size", type=int, default=12)
    tr.add_argument("--channels", type=_ints, default=[24, 48, 72, 108], help="U-Net channels per level")
    tr.add_argument("--val-every", type=int, default=1)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default=None)
    tr.add_argument("--overwrite", action="store_true")

    pk = tsub.add_parser("pick", help="pick particles in a tomogram")
    pk.add_argument("tomogram", type=Path, nargs="?", default=None, help="MRC/REC/TIFF/OME-Zarr (or --copick with --run)")
    pk.add_argument("--out", type=Path, default=None, help="picks CSV (x,y,z,class_id,score in voxels, plus x_A,y_A,z_A)")
    pk.add_argument("--copick", type=Path, default=None, help="a copick project: pick its --run's tomogram and write the picks into it")
    pk.add_argument("--run", default=None, help="copick: the run to pick")
    pk.add_argument("--tomo-type", default=None, help="copick: tomogram type (default the first at the voxel spacing nearest the model's)")
    pk.add_argument("--user-id", default="napari-bioid", help="copick: user id of the pick sets written (default napari-bioid)")
    pk.add_argument("--session-id", default="0", help="copick: session id of the pick sets written")
    pk.add_argument("--object", action="append", default=[],
                    help="copick: the project's object name per model class, in class order (default: the model's class names)")
    pk.add_argument("--model", type=Path, default=None, help="model file; default: the shipped model")
    pk.add_argument("--star", type=Path, default=None, help="also write a RELION STAR file")
    pk.add_argument("--coords-out", type=Path, default=None, help="also write DeepETPicker 'class x y z score' text")
    pk.add_argument("--overview", type=Path, default=None, help="also save a PNG: the central slab's projection with the picks circled")
    pk.add_argument("--truth", type=Path, default=None, help="true centres: print precision, recall and F1 of the picks")
    pk.add_argument("--tolerance", type=float, default=None, help="for --truth, in voxels (default: the particle radius)")
    pk.add_argument("--threshold", type=float, default=None, help="segmentation threshold (default 0.5)")
    pk.add_argument("--min-score", type=float, default=None, help="minimum pick score")
    pk.add_argument("--distance", type=float, default=None, help="pruning distance in voxels (default: particle radius + 1)")
    pk.add_argument("--voxel-size", type=float, default=None, help="Å per voxel, when the header has none")
    pk.add_argument("--batch-size", type=int, default=4)
    pk.add_argument("--device", default=None)
    pk.add_argument("--chunk-slices", type=int, default=None,
                    help="pick slab by slab, this many z slices each: memory bounded by the slab, not the tomogram (same picks)")
    pk.add_argument("--probability-out", type=Path, default=None,
                    help="write the foreground probability map here, slab by slab (float32 MRC, or OME-Zarr for a .zarr name; implies --chunk-slices 64)")
    pk.add_argument("--level", type=int, default=None,
                    help="OME-Zarr input: the multiscale level to pick (default: the level nearest the model's voxel size)")
    pk.add_argument("--skip-flat", type=float, default=None, metavar="STD",
                    help="opt-in: skip windows whose normalised standard deviation is below STD (e.g. 0.05: padding, "
                         "masked or empty volume outside the sample); their centres are background")
    pk.add_argument("--bin", default="1", metavar="N|auto",
                    help="bin the tomogram N× (mean of N³ voxels) before picking; 'auto': by round(model voxel size / "
                         "tomogram voxel size) when the tomogram is ≥ 1.5× finer (N³ times less work). Picks are written "
                         "in the tomogram's own voxels")
    pk.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32",
                    help="network arithmetic: float32 (default); bfloat16 on GPUs or CPUs with AVX-512 BF16/AMX; float16 on GPUs")
    pk.add_argument("--overwrite", action="store_true")

    pb = tsub.add_parser("pick-batch", help="pick many tomograms on a dask cluster (local by default): resumable, failures reported")
    pb.add_argument("tomograms", type=Path, nargs="*", help="tomograms (MRC/REC/TIFF)")
    pb.add_argument("--list", type=Path, default=None, help="a text file with one tomogram path per line (instead of, or besides, the arguments)")
    pb.add_argument("--out-dir", required=True, type=Path, help="<stem>_picks.csv and .json per tomogram, and summary.csv")
    pb.add_argument("--model", type=Path, default=None, help="model file; default: the shipped model")
    pb.add_argument("--scheduler", default=None, help="address of a running dask scheduler (default: a local cluster)")
    pb.add_argument("--workers", type=int, default=None, help="local cluster worker processes (default: one per core)")
    pb.add_argument("--chunk-slices", type=int, default=None, help="pick each tomogram slab by slab (bounded memory)")
    pb.add_argument("--slab-slices", type=int, default=None,
                    help="split each tomogram into tasks of about this many z slices, spread over the workers (for very large tomograms)")
    pb.add_argument("--threshold", type=float, default=0.5)
    pb.add_argument("--min-score", type=float, default=0.2)
    pb.add_argument("--distance", type=float, default=None)
    pb.add_argument("--voxel-size", type=float, default=None, help="Å per voxel, for tomograms whose header has none")
    pb.add_argument("--batch-size", type=int, default=4)

    cp = tsub.add_parser("copick", help="list a copick project: runs, tomograms, pickable objects and pick sets")
    cp.add_argument("config", type=Path, help="copick configuration JSON")

    sm = tsub.add_parser("simulate", help="simulate a tomogram from real structures, with its truth")
    sm.add_argument("--out-dir", required=True, type=Path, help="folder for <name>.mrc, <name>_truth.csv, <name>_classes.mrc, <name>_params.json")
    sm.add_argument("--name", default="simulated")
    sm.add_argument("--structures", type=Path, default=None, help="folder of density maps (default ../shared/data/cryoet/structures)")
    sm.add_argument("--only", default=None, help="comma-separated structure names to use (e.g. 4V94,4CR2,5MRC)")
    sm.add_argument("--no-shapes", action="store_true", help="skip the SHREC 2019 shape masks")
    sm.add_argument("--shape", type=_ints, default=[64, 160, 160], help="z,y,x voxels")
    sm.add_argument("--voxel-size", type=float, default=10.0, help="Å per voxel")
    sm.add_argument("--particles", type=int, default=None, help="number of particles (default: --crowding)")
    sm.add_argument("--crowding", default="shrec21", help="particles per million voxels, or 'shrec21' for the SHREC 2021 layout's (~30)")
    sm.add_argument("--snr", type=float, default=0.1, help="per tilt image; 0 = noise-free")
    sm.add_argument("--tilt", type=_floats, default=[-60, 60, 3], help="min,max,step in degrees")
    sm.add_argument("--defocus", type=float, default=-3.0, help="µm, negative = underfocus")
    sm.add_argument("--no-ctf", action="store_true")
    sm.add_argument("--vesicles", type=int, default=0)
    sm.add_argument("--fiducials", type=int, default=0)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--overwrite", action="store_true")

    ev = tsub.add_parser("evaluate", help="precision, recall and F1 of picks against truth (JSON)")
    ev.add_argument("picks", type=Path)
    ev.add_argument("truth", type=Path)
    ev.add_argument("--tolerance", type=float, required=True, help="maximum pick-to-centre distance in voxels")
    ev.add_argument("--beta", type=float, default=4.0)
    ev.add_argument("--voxel-size", type=float, default=None, help="Å per voxel, for files with Å coordinates only")


def _tomo_train(args) -> int:
    from ..engine.io import prepare_output, read_coordinates, read_volume
    from ..engine.progress import TqdmProgress
    from ..engine.tomo import ParticleClass, PickerConfig, train_picker

    if len(args.tomogram) != len(args.coords):
        raise BioidInputError(f"{len(args.tomogram)} --tomogram but {len(args.coords)} --coords: give them in pairs")
    if len(args.val_tomogram) != len(args.val_coords):
        raise BioidInputError("--val-tomogram and --val-coords must come in pairs")
    if bool(args.copick) == bool(args.tomogram):
        raise BioidInputError("give training data either as --tomogram/--coords pairs or as --copick CONFIG --object NAME")
    prepare_output(args.out, args.overwrite)
    if args.copick:
        vols, tabs, vvols, vtabs, classes_from_project = _copick_training_data(args)
    else:
        classes_from_project = None
        vols = [read_volume(p) for p in args.tomogram]
        tabs = [read_coordinates(c, v.voxel_size, v.shape) for c, v in zip(args.coords, vols)]
        vvols = [read_volume(p) for p in args.val_tomogram]
        vtabs = [read_coordinates(c, v.voxel_size, v.shape) for c, v in zip(args.val_coords, vvols)]
    if args.merge_classes:
        for t in tabs + vtabs:
            t["class_id"] = 1
        args.class_names = args.class_names or "particle"
    n_classes = int(max(t["class_id"].max() for t in tabs + vtabs))
    if n_classes < 1:
        raise BioidInputError("class ids must start at 1")
    diam = args.diameter or [11.0]
    if len(diam) not in (1, n_classes):
        raise BioidInputError(f"--diameter gives {len(diam)} values for {n_classes} classes")
    names = args.class_names.split(",") if args.class_names else [f"class{i}" for i in range(1, n_classes + 1)]
    if len(names) != n_classes:
        raise BioidInputError(f"--class-names gives {len(names)} names for {n_classes} classes")
    lr_ = args.label_radius
    if lr_ is not None and len(lr_) not in (1, n_classes):
        raise BioidInputError(f"--label-radius gives {len(lr_)} values for {n_classes} classes")
    classes = [
        ParticleClass(i + 1, names[i], diam[i if len(diam) > 1 else 0], None if lr_ is None else lr_[i if len(lr_) > 1 else 0])
        for i in range(n_classes)
    ]
    if classes_from_project is not None and not args.merge_classes:  # names, and diameters unless given, from the project
        classes = [ParticleClass(c.class_id, c.name, diam[i if len(diam) > 1 else 0] if args.diameter else c.diameter,
                                 None if lr_ is None else lr_[i if len(lr_) > 1 else 0]) for i, c in enumerate(classes_from_project)]
    voxel_sizes = {v.voxel_size for v in vols if v.voxel_size}
    if len(voxel_sizes) > 1:
        warnings.warn(f"training tomograms have different voxel sizes {sorted(voxel_sizes)} Å", stacklevel=1)
    config = PickerConfig(
        classes=classes, block_size=args.block_size, pad_size=args.pad_size, channels=tuple(args.channels),
        label_shape=args.label_shape, voxel_size=next(iter(voxel_sizes)) if voxel_sizes else None,
    )
    bar = TqdmProgress("train")

    def on_epoch(rec):
        f1 = rec["val_f1"]
        print(f"epoch {rec['epoch']:3d}  loss {rec['loss']:.4f}" + ("" if f1 != f1 else f"  val F1 {f1:.3f}"), file=sys.stderr)

    try:
        model = train_picker(vols, tabs, config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             val_tomograms=vvols or None, val_tables=vtabs or None, val_every=args.val_every,
                             seed=args.seed, device=args.device, progress=bar, on_epoch=on_epoch)
    finally:
        bar.close()
    model.save(args.out, overwrite=args.overwrite)
    print(json.dumps({"model": str(args.out), "best_epoch": model.metrics["best_epoch"], "best_val_f1": model.metrics["best_val_f1"]}))
    return 0


def _copick_training_data(args):
    """Training and validation tomograms and picks from a copick project (``bioid tomo train --copick``)."""
    from ..engine.tomo.copick_project import CopickProject

    project = CopickProject(args.copick)
    if not args.object:
        raise BioidInputError(f"--copick needs --object NAME (the project's objects: {', '.join(project.objects['name'])})")
    val_runs = args.val_runs.split(",") if args.val_runs else []
    if args.runs:
        runs = args.runs.split(",")
    else:
        sets = project.pick_sets()
        sets = sets[sets["object_name"].isin(args.object) & (sets["n"] > 0)]
        if args.user_id:
            sets = sets[sets["user_id"] == args.user_id]
        runs = [r for r in sorted(set(sets["run"])) if r not in val_runs]
    kw = dict(object_names=args.object, user_id=args.user_id, session_id=args.session_id, voxel_size=args.copick_voxel_size,
              tomo_type=args.tomo_type)
    vols, tabs, classes = project.training_set(runs, **kw)
    vvols, vtabs = project.training_set(val_runs, **kw)[:2] if val_runs else ([], [])
    print(f"copick: training on {len(runs)} runs ({', '.join(runs)}), validating on {len(val_runs)}", file=sys.stderr)
    return vols, tabs, vvols, vtabs, classes


def _tomo_copick(args) -> int:
    from ..engine.tomo.copick_project import CopickProject

    project = CopickProject(args.config)
    out = {"runs": project.runs, "objects": project.objects.to_dict("records"),
           "tomograms": project.tomograms().to_dict("records"), "pick_sets": project.pick_sets().to_dict("records")}
    print(json.dumps(out, indent=1, default=float))
    return 0


def _tomo_pick(args) -> int:
    from ..engine.io import prepare_output, read_coordinates, read_volume, write_coordinates
    from ..engine.progress import TqdmProgress
    from ..engine.tomo import DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, evaluate_picks, load_picker, pick
    from ..engine.tomo.config import default_model_path

    if (args.tomogram is None) == (args.copick is None):
        raise BioidInputError("give a tomogram file, or --copick CONFIG --run RUN")
    if args.copick is not None and not args.run:
        raise BioidInputError("--copick needs --run (see: bioid tomo copick CONFIG)")
    if args.out is None and args.copick is None:
        raise BioidInputError("--out is required (where to write the picks)")
    outs = [p for p in (args.out, args.star, args.coords_out, args.overview, args.probability_out) if p is not None]
    for p in outs:
        p.parent.mkdir(parents=True, exist_ok=True)
        prepare_output(p, args.overwrite)
    if len(set(map(str, outs))) != len(outs):
        raise BioidInputError("the output files must differ")
    model = load_picker(args.model or default_model_path())
    project = None
    if args.copick is not None:
        from ..engine.tomo.copick_project import CopickProject

        project = CopickProject(args.copick)
        vol = project.read_tomogram(args.run, tomo_type=args.tomo_type, target_voxel_size=model.config.voxel_size, level=args.level)
        object_names = dict(enumerate(args.object or [c.name for c in model.config.classes], start=1))
        if len(object_names) != model.config.n_classes:
            raise BioidInputError(f"--object gives {len(object_names)} names for the model's {model.config.n_classes} classes")
        existing = project.pick_sets([args.run])
        clash = existing[(existing["user_id"] == args.user_id) & (existing["session_id"] == args.session_id)
                         & existing["object_name"].isin(object_names.values())]
        if len(clash) and not args.overwrite:  # refuse before the long work
            raise FileExistsError(f"run {args.run!r} already has picks by user {args.user_id!r}, session {args.session_id!r} "
                                  f"({', '.join(clash['object_name'])}); pass --overwrite or another --session-id")
    else:
        vol = read_volume(args.tomogram, level=args.level, target_voxel_size=model.config.voxel_size)
    voxel_size = args.voxel_size or vol.voxel_size
    truth = read_coordinates(args.truth, voxel_size, vol.shape) if args.truth else None
    if args.chunk_slices is not None and args.chunk_slices < 1:
        raise BioidInputError(f"--chunk-slices must be ≥ 1, got {args.chunk_slices}")
    from ..engine.tomo.preprocess import bin_factor, bin_volume, unbin_coordinates

    if args.bin == "auto":
        factor = bin_factor(voxel_size, model.config.voxel_size)
    else:
        try:
            factor = int(args.bin)
        except ValueError:
            factor = 0
        if factor < 1:
            raise BioidInputError(f"--bin must be a whole number ≥ 1 or 'auto', got {args.bin!r}")
    data, pick_voxel_size = vol.data, voxel_size
    if factor > 1:
        data = bin_volume(vol.data, factor)
        pick_voxel_size = voxel_size * factor if voxel_size else None
        print(f"picking at bin {factor}: {tuple(data.shape)} voxels"
              + (f" of {pick_voxel_size:g} Å" if pick_voxel_size else ""), file=sys.stderr)
    model.check_voxel_size(pick_voxel_size)
    bar = TqdmProgress("pick")
    kwargs = dict(threshold=DEFAULT_THRESHOLD if args.threshold is None else args.threshold,
                  min_score=DEFAULT_MIN_SCORE if args.min_score is None else args.min_score,
                  distance=args.distance, batch_size=args.batch_size, device=args.device, progress=bar,
                  skip_flat=args.skip_flat, precision=args.precision)
    try:
        if args.probability_out is not None:
            from ..engine.io.volumes import create_volume
            from ..engine.tomo.picking import pick_chunked

            with create_volume(args.probability_out, data.shape, pick_voxel_size, overwrite=args.overwrite) as out:
                res = pick_chunked(data, model, chunk_slices=args.chunk_slices or 64, probability_out=out, **kwargs)
        elif args.chunk_slices is not None:
            from ..engine.tomo.picking import pick_chunked

            res = pick_chunked(data, model, chunk_slices=args.chunk_slices, **kwargs)
        else:
            res = pick(data, model, **kwargs)
    finally:
        bar.close()
    from ..engine.tomo.picking import export_table

    picks = export_table(res)
    if factor > 1:
        picks = unbin_coordinates(picks, factor)
    names = {c.class_id: c.name for c in model.config.classes}
    if args.out is not None:
        write_coordinates(picks, args.out, voxel_size, vol.shape, overwrite=args.overwrite)
    if project is not None:
        written = project.write_picks(args.run, picks, voxel_size, object_names, user_id=args.user_id, session_id=args.session_id,
                                      overwrite=args.overwrite)
    tomo_name = args.run if project is not None else args.tomogram.stem
    if args.star:
        write_coordinates(picks, args.star, voxel_size, vol.shape, overwrite=args.overwrite, tomo_name=tomo_name)
    if args.coords_out:
        write_coordinates(picks, args.coords_out, voxel_size, vol.shape, overwrite=args.overwrite)
    radius = max(c.radius for c in model.config.classes)
    if args.overview:
        from ..engine.tomo.overview import save_overview

        save_overview(args.overview, vol.data, picks, truth, radius=radius, overwrite=args.overwrite)
    counts = picks["class_id"].value_counts().sort_index()
    summary = {"picks": int(len(picks)), "per_class": {names[int(k)]: int(v) for k, v in counts.items()}, "out": str(args.out)}
    if factor > 1:
        summary["bin"] = factor
    if project is not None:
        summary["copick"] = {"run": args.run, "pick_sets": written, "voxel_size": voxel_size}
    if truth is not None:
        tol = args.tolerance or float(radius)
        ev = evaluate_picks(picks, truth, tol)
        summary["evaluation"] = {"tolerance_voxels": tol, **{k: round(ev[k], 4) for k in ("precision", "recall", "f1")},
                                 "tp": ev["tp"], "fp": ev["fp"], "fn": ev["fn"]}
    print(json.dumps(summary, indent=1))
    return 0


def _tomo_pick_batch(args) -> int:
    from ..engine.progress import TqdmProgress
    from ..engine.tomo.batch import pick_batch
    from ..engine.tomo.config import default_model_path

    paths = list(args.tomograms)
    if args.list is not None:
        if not args.list.is_file():
            raise BioidInputError(f"{args.list}: no such list file")
        paths += [Path(line.strip()) for line in args.list.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if args.chunk_slices is not None and args.chunk_slices < 1:
        raise BioidInputError(f"--chunk-slices must be ≥ 1, got {args.chunk_slices}")
    bar = TqdmProgress("tomograms")
    try:
        summary = pick_batch(paths, args.out_dir, args.model or default_model_path(), scheduler=args.scheduler, n_workers=args.workers,
                             threshold=args.threshold, min_score=args.min_score, distance=args.distance, batch_size=args.batch_size,
                             chunk_slices=args.chunk_slices, voxel_size=args.voxel_size, slab_slices=args.slab_slices, progress=bar,
                             on_dashboard=lambda link: print(f"dask dashboard: {link}", flush=True))
    finally:
        bar.close()
    counts = summary["status"].value_counts().to_dict()
    failed = summary[summary["status"] == "failed"]
    print(json.dumps({"tomograms": len(summary), **{k: int(v) for k, v in counts.items()}, "picks": int(summary["picks"].sum()),
                      "summary": str(args.out_dir / "summary.csv"),
                      "failed": {r.tomogram: r.error for r in failed.itertuples()}}, indent=1))
    return 1 if len(failed) else 0


def default_structures_dir() -> Path:
    """``../shared/data/cryoet/structures`` beside the checkout (or under $BIOID_SHARED)."""
    import os

    shared = Path(os.environ.get("BIOID_SHARED", Path(__file__).resolve().parents[4] / "shared"))
    return shared / "data" / "cryoet" / "structures"


def _tomo_simulate(args) -> int:
    from ..engine.io import prepare_output, write_coordinates, write_mrc
    from ..engine.io.atomic import atomic_write
    from ..engine.progress import TqdmProgress
    import numpy as np

    from ..engine.tomo.simulate import SimulationParams, load_structures, params_dict, shrec21_crowding, simulate_tomogram

    if len(args.shape) != 3 or len(args.tilt) != 3:
        raise BioidInputError("--shape needs z,y,x and --tilt needs min,max,step")
    out = args.out_dir
    if not out.is_dir():
        raise BioidInputError(f"{out}: no such folder")
    names = {k: out / f"{args.name}{suffix}" for k, suffix in
             (("tomo", ".mrc"), ("truth", "_truth.csv"), ("classes", "_classes.mrc"), ("params", "_params.json"))}
    for p in names.values():
        prepare_output(p, args.overwrite)
    folder = args.structures or default_structures_dir()
    structures = load_structures(folder, args.voxel_size, not args.no_shapes, args.only.split(",") if args.only else None)
    n_particles = args.particles
    if n_particles is None:
        if args.crowding == "shrec21":
            layout = folder / "shrec21_model_particle_locations.txt"
            if not layout.is_file():
                raise BioidInputError(f"{layout}: no SHREC 2021 layout to take the crowding from; give --particles or a number for --crowding")
            per_million = shrec21_crowding(layout)
        else:
            try:
                per_million = float(args.crowding)
            except ValueError:
                raise BioidInputError(f"--crowding must be a number or 'shrec21', got {args.crowding!r}") from None
        n_particles = int(round(per_million * np.prod(args.shape) / 1e6))
    params = SimulationParams(shape_zyx=tuple(args.shape), voxel_size_A=args.voxel_size, n_particles=n_particles,
                              tilt_min_deg=args.tilt[0], tilt_max_deg=args.tilt[1], tilt_step_deg=args.tilt[2],
                              snr=args.snr or None, defocus_um=args.defocus, ctf=not args.no_ctf,
                              n_vesicles=args.vesicles, n_fiducials=args.fiducials, seed=args.seed)
    bar = TqdmProgress("simulate")
    try:
        sim = simulate_tomogram(structures, params, progress=bar)
    finally:
        bar.close()
    write_mrc(names["tomo"], sim.tomogram, args.voxel_size, overwrite=args.overwrite)
    write_coordinates(sim.truth, names["truth"], args.voxel_size, overwrite=args.overwrite)
    write_mrc(names["classes"], sim.class_map.astype("int8"), args.voxel_size, overwrite=args.overwrite)
    meta = params_dict(params)
    meta["classes"] = {i + 1: {"name": s.name, "diameter_voxels": round(s.diameter, 2)} for i, s in enumerate(structures)}
    with atomic_write(names["params"], overwrite=args.overwrite) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    print(json.dumps({"tomogram": str(names["tomo"]), "particles": int(len(sim.truth))}))
    return 0


def _tomo_evaluate(args) -> int:
    from ..engine.io import read_coordinates
    from ..engine.tomo import evaluate_picks

    if args.tolerance <= 0:
        raise BioidInputError("--tolerance must be positive (voxels)")
    picks = read_coordinates(args.picks, args.voxel_size)
    truth = read_coordinates(args.truth, args.voxel_size)
    print(json.dumps(evaluate_picks(picks, truth, args.tolerance, beta=args.beta), indent=2))
    return 0


HANDLERS = {"train": _tomo_train, "pick": _tomo_pick, "pick-batch": _tomo_pick_batch, "copick": _tomo_copick, "evaluate": _tomo_evaluate, "simulate": _tomo_simulate}
add = _add_tomo
