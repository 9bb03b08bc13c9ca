"""Picking many tomograms on a dask cluster: one task per tomogram, fault-tolerant, resumable.

:func:`pick_batch` sends one task per tomogram to a ``dask.distributed``
cluster: a :class:`~distributed.LocalCluster` by default (one worker process
per core, one torch thread each, so torch does not oversubscribe), or an
existing scheduler (``scheduler="tcp://host:8786"``, e.g. one started by
dask-jobqueue on SLURM, see the README). Each task reads its tomogram
(memory-mapped MRC, or TIFF), picks it with the model (slab by slab when
``chunk_slices`` is given, :func:`.picking.pick_chunked`) and writes
``<out_dir>/<stem>_picks.csv`` atomically, then a ``<stem>_picks.json``
record (model, parameters, picks, time); a tomogram whose record matches the
current model and parameters is skipped (resume). A task that fails
(unreadable file, out of memory, a worker that dies) is reported with its error
and the others go on. ``<out_dir>/summary.csv`` lists every tomogram with its
status (``done``, ``skipped``, ``failed``), picks, seconds and error.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write
from ..progress import ProgressCallback, check_cancel, report

SUMMARY_COLUMNS = ["tomogram", "status", "picks", "seconds", "error", "out"]


def _model_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def outputs_for(tomogram: PathLike, out_dir: PathLike) -> Dict[str, Path]:
    """The picks CSV and its completion record for one tomogram."""
    stem = Path(tomogram).name.split(".")[0]
    return {"csv": Path(out_dir) / f"{stem}_picks.csv", "record": Path(out_dir) / f"{stem}_picks.json"}


def _is_complete(tomogram: Path, out_dir: Path, key: dict) -> bool:
    out = outputs_for(tomogram, out_dir)
    if not (out["csv"].is_file() and out["record"].is_file()):
        return False
    try:
        rec = json.loads(out["record"].read_text())
    except (OSError, ValueError):
        return False
    return rec.get("key") == key


def _write_outputs(res, tomogram: str, out_dir: str, voxel_size, shape, key: dict, row: dict, t0: float) -> None:
    """The picks CSV, then its completion record (both atomic); fills ``row``."""
    from ..io import write_coordinates

    from .picking import export_table

    picks = export_table(res)
    out = outputs_for(tomogram, out_dir)
    write_coordinates(picks, out["csv"], voxel_size, shape, overwrite=True)
    row.update(status="done", picks=int(len(picks)), out=str(out["csv"]))
    row["seconds"] = round(time.perf_counter() - t0, 2)
    with atomic_write(out["record"], overwrite=True, backup=False) as tmp:
        Path(tmp).write_text(json.dumps({"key": key, **row}, indent=1))


def _open(tomogram: str, model_path: str, threads: int):
    """The picking model and the tomogram (lazily; OME-Zarr at the level nearest the model's voxel size); ``threads`` > 0 sets torch's."""
    import torch

    from ..io import read_volume
    from .config import load_picker

    if threads:
        torch.set_num_threads(max(1, int(threads)))
    model = load_picker(model_path)
    vol = read_volume(tomogram, target_voxel_size=model.config.voxel_size, check_finite=False)
    return model, vol


def tomogram_normalizer(tomogram: str, model_path: str):
    """Task: the whole tomogram's normalisation (:class:`.preprocess.Normalizer`), shared by its slab tasks."""
    from ..io.volumes import _check_volume
    from .preprocess import Normalizer

    model, vol = _open(tomogram, model_path, 1)
    _check_volume(vol.data, tomogram, True)
    return Normalizer.fit(vol.data, model.config.normalization, model.config.lowpass_sigma)


def slab_task(tomogram: str, model_path: str, params: dict, normalizer, z0: int, z1: int, threads: int = 1):
    """Task: the NMS candidates of slices ``[z0, z1)`` of a tomogram (:func:`.picking.slab_candidates`)."""
    from .picking import slab_candidates

    model, vol = _open(tomogram, model_path, threads)
    return slab_candidates(vol.data, model, z0, z1, normalizer, threshold=params["threshold"], batch_size=params["batch_size"])


def merge_task(tomogram: str, out_dir: str, model_path: str, key: dict, params: dict, t0_wall: float, *tables) -> dict:
    """Task: prune a tomogram's slab candidates once and write its outputs."""
    from .picking import merge_candidates

    row = {"tomogram": tomogram, "status": "failed", "picks": 0, "seconds": 0.0, "error": "", "out": ""}
    model, vol = _open(tomogram, model_path, 1)
    voxel_size = params.get("voxel_size") or vol.voxel_size
    res = merge_candidates(tables, model, params["min_score"], params.get("distance"))
    _write_outputs(res, tomogram, out_dir, voxel_size, vol.shape, key, row, time.perf_counter())
    row["seconds"] = round(time.time() - t0_wall, 2)  # from submission to the written record
    return row


def pick_one(tomogram: str, out_dir: str, model_path: str, key: dict, params: dict, threads: int = 1) -> dict:
    """Pick one tomogram and write its outputs (the task each worker runs; never raises)."""
    t0 = time.perf_counter()
    row = {"tomogram": tomogram, "status": "failed", "picks": 0, "seconds": 0.0, "error": "", "out": ""}
    try:
        from ..io.volumes import _check_volume
        from .picking import pick, pick_chunked

        model, vol = _open(tomogram, model_path, threads)  # OME-Zarr: the level nearest the model's
        _check_volume(vol.data, tomogram, True)
        voxel_size = params.get("voxel_size") or vol.voxel_size
        model.check_voxel_size(voxel_size)
        kw = dict(threshold=params["threshold"], min_score=params["min_score"], distance=params.get("distance"), batch_size=params["batch_size"])
        chunk = params.get("chunk_slices")
        res = pick_chunked(vol.data, model, chunk_slices=chunk, **kw) if chunk else pick(vol.data, model, **kw)
        _write_outputs(res, tomogram, out_dir, voxel_size, vol.shape, key, row, t0)
    except BaseException as exc:  # noqa: BLE001 - a task reports its failure instead of killing the batch
        if isinstance(exc, KeyboardInterrupt):
            raise
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _submit_slabs(client, tomogram: str, out_dir: str, model_path: str, key: dict, params: dict, slab_slices: int, threads: int):
    """Submit the normalisation, slab and merge tasks of one tomogram; returns the merge task's future.

    The slabs come from the tomogram's header, read here; a tomogram whose
    header cannot be read goes as one :func:`pick_one` task, which reports why.
    """
    from .picking import slab_bounds

    try:
        model, vol = _open(tomogram, model_path, 0)
        slabs = slab_bounds(vol.shape[0], model.config.block_size, model.config.pad_size, slab_slices)
    except Exception:  # noqa: BLE001 - reported by the task
        return client.submit(pick_one, tomogram, out_dir, model_path, key, params, threads, pure=False)
    t0 = time.time()
    norm = client.submit(tomogram_normalizer, tomogram, model_path, pure=False)
    parts = [client.submit(slab_task, tomogram, model_path, params, norm, z0, z1, threads, pure=False) for z0, z1 in slabs]
    return client.submit(merge_task, tomogram, out_dir, model_path, key, params, t0, *parts, pure=False)


def pick_batch(tomograms: Sequence[PathLike], out_dir: PathLike, model_path: PathLike, scheduler: Optional[str] = None,
               n_workers: Optional[int] = None, threshold: float = 0.5, min_score: float = 0.2, distance: Optional[float] = None,
               batch_size: int = 4, chunk_slices: Optional[int] = None, voxel_size: Optional[float] = None, slab_slices: Optional[int] = None,
               progress: Optional[ProgressCallback] = None, cancel: Any = None, on_dashboard=None) -> pd.DataFrame:
    """Pick every tomogram on a dask cluster (see the module docstring).

    Parameters
    ----------
    tomograms : paths
        MRC / TIFF / OME-Zarr tomograms; names must differ in their stems (outputs are named by stem).
    out_dir : path
        Created if missing; receives ``<stem>_picks.csv`` (voxels and Å),
        ``<stem>_picks.json`` and ``summary.csv``.
    model_path : path
        A picking model file.
    scheduler : str, optional
        Address of a running dask scheduler; default a local cluster.
    n_workers : int, optional
        Local cluster worker processes (default: the cores); each runs torch
        with cores // workers threads.
    slab_slices : int, optional
        Split every tomogram into tasks of about this many z slices (rounded
        to the sliding-window grid), spread over the workers: one very large
        tomogram then uses the whole cluster. A first task measures the
        tomogram's normalisation, one task per slab segments the slab and its
        NMS halo (:func:`.picking.slab_candidates`), a last one prunes and
        writes; the picks equal the whole-tomogram ones.
    on_dashboard : callable(str), optional
        Called with the dask dashboard address.
    Other parameters
        As :func:`.picking.pick` / :func:`.picking.pick_chunked`.

    Returns
    -------
    DataFrame
        ``SUMMARY_COLUMNS``, one row per tomogram in the order given.

    Raises
    ------
    BioidInputError
        No tomograms, two with the same stem, or a missing model file (nothing is written).
    """
    from distributed import Client, LocalCluster, as_completed

    paths = [str(Path(t)) for t in tomograms]
    if not paths:
        raise BioidInputError("no tomograms to pick")
    stems = [outputs_for(p, out_dir)["csv"].name for p in paths]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise BioidInputError(f"tomograms with the same name would overwrite each other's picks: {', '.join(dup)}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BioidInputError(f"{model_path}: no such model file")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if slab_slices is not None and slab_slices < 1:
        raise BioidInputError(f"slab_slices must be ≥ 1, got {slab_slices}")
    params = {"threshold": threshold, "min_score": min_score, "distance": distance, "batch_size": batch_size, "chunk_slices": chunk_slices,
              "voxel_size": voxel_size}
    key = {"model": _model_digest(model_path), **params}
    rows: Dict[str, dict] = {}
    todo: List[str] = []
    for p in paths:
        if _is_complete(Path(p), out_dir, key):
            rec = json.loads(outputs_for(p, out_dir)["record"].read_text())
            rows[p] = {"tomogram": p, "status": "skipped", "picks": rec.get("picks", 0), "seconds": 0.0, "error": "", "out": rec.get("out", "")}
        else:
            todo.append(p)
    done = len(rows)
    report(progress, done, len(paths), f"{done} already picked")
    if todo:
        cores = os.cpu_count() or 2
        workers = max(1, min(n_workers or cores, len(todo)))
        cluster = None
        if scheduler is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
            client = Client(cluster)
            threads = max(1, cores // workers)
        else:
            client = Client(scheduler)
            threads = 1
        try:
            if on_dashboard is not None:
                on_dashboard(client.dashboard_link)
            if slab_slices:
                futures = {_submit_slabs(client, p, str(out_dir), str(model_path), key, params, slab_slices, threads): p for p in todo}
            else:
                futures = {client.submit(pick_one, p, str(out_dir), str(model_path), key, params, threads, pure=False, retries=0): p for p in todo}
            for fut in as_completed(futures):
                check_cancel(cancel)
                p = futures[fut]
                try:
                    rows[p] = fut.result()
                except Exception as exc:  # the worker died (out of memory, killed): the task's exception
                    rows[p] = {"tomogram": p, "status": "failed", "picks": 0, "seconds": 0.0, "error": f"{type(exc).__name__}: {exc}", "out": ""}
                done += 1
                report(progress, done, len(paths), f"{Path(p).name}: {rows[p]['status']}")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    summary = pd.DataFrame([rows[p] for p in paths], columns=SUMMARY_COLUMNS)
    with atomic_write(out_dir / "summary.csv", overwrite=True) as tmp:
        summary.to_csv(tmp, index=False)
    return summary
