"""Training a particle picker from clicked centres.

Reference: DeepETPicker (Liu et al., Nat. Commun. 2024); METHODS.md §1: weak
labels, one sub-tomogram per particle per epoch, soft Dice loss, AdamW with a
one-cycle schedule, checkpoint kept by the validation picks' F1.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import BioidInputError
from ..io.coords import table_zyx, validate_coordinates
from ..io.volumes import Volume
from ..nn.losses import soft_dice_loss
from ..progress import ProgressCallback, check_cancel, report
from ..train.optim import make_adamw_onecycle, pick_device, seed_everything, training_layout
from .config import PickerConfig, PickerModel
from .evaluate import evaluate_picks, pool_tomograms
from .labels import make_weak_labels
from .picking import pick
from .preprocess import Normalizer
from .sampler import Augmenter, SubtomogramSampler


def _as_array(v) -> np.ndarray:
    return v.data if isinstance(v, Volume) else v


def _check_pairs(tomograms, tables, config: PickerConfig, what: str) -> None:
    if len(tomograms) != len(tables):
        raise BioidInputError(f"{what}: {len(tomograms)} tomogram(s) but {len(tables)} coordinate table(s)")
    for i, (t, tab) in enumerate(zip(tomograms, tables)):
        arr = _as_array(t)
        name = getattr(t, "path", None) or f"{what} tomogram {i + 1}"
        if arr.ndim != 3:
            raise BioidInputError(f"{name}: expected a 3D volume, got shape {arr.shape}")
        validate_coordinates(tab, arr.shape, name=f"coordinates of {name}")
        bad = sorted(set(tab["class_id"]) - {c.class_id for c in config.classes})
        if bad:
            raise BioidInputError(f"coordinates of {name}: class ids {bad} are not among the model's classes 1..{config.n_classes}")


#: validation skips NMS on a tomogram whose segmentation is more than this fraction foreground
VAL_MAX_FOREGROUND = 0.5


def validation_f1(model: PickerModel, tomograms, tables, tolerance=None, batch_size: int = 4, device=None, cancel=None,
                  max_foreground: float = VAL_MAX_FOREGROUND) -> dict:
    """Pick every validation tomogram and score the picks.

    ``tolerance`` defaults to each class's particle radius (voxels). A
    tomogram whose segmentation is more than ``max_foreground`` foreground
    (an early, untrained network) counts as no picks without running NMS, so
    validation stays bounded in time and memory whatever the network outputs.
    Returns ``{"f1": class-aware F1 over all tomograms, "f1_agnostic":
    class-agnostic F1, "precision", "recall", "skipped": reasons}``
    (micro-averaged: counts summed over tomograms).
    """
    tol = tolerance if tolerance is not None else {c.class_id: float(c.radius) for c in model.config.classes}
    results = []
    for vol in tomograms:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a capped candidate list of an early network is expected
            results.append(pick(_as_array(vol), model, batch_size=batch_size, device=device, cancel=cancel, max_foreground=max_foreground))
    picks = [r.picks for r in results]
    ev = evaluate_picks(pool_tomograms(picks), pool_tomograms(tables), tol)
    tp = sum(c["tp"] for c in ev["per_class"].values())
    tp_any, n_pred, n_true = ev["tp"], ev["n_pred"], ev["n_true"]

    def f(t):
        return 2 * t / (n_pred + n_true) if n_pred + n_true else 0.0

    return {"f1": f(tp), "f1_agnostic": f(tp_any), "precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_true if n_true else 0.0,
            "skipped": [r.skipped for r in results if r.skipped]}


def train_picker(
    tomograms: Sequence,
    tables: Sequence[pd.DataFrame],
    config: PickerConfig,
    epochs: int = 60,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    val_tomograms: Optional[Sequence] = None,
    val_tables: Optional[Sequence[pd.DataFrame]] = None,
    val_every: int = 1,
    val_tolerance=None,
    augment: Optional[Augmenter] = "default",
    seed: Optional[int] = 0,
    device: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[Any] = None,
    on_epoch: Optional[Callable[[dict], None]] = None,
    init: Optional[PickerModel] = None,
) -> PickerModel:
    """Train a 3D residual U-Net picker on tomograms with clicked centres.

    Parameters
    ----------
    tomograms : sequence of arrays (Z, Y, X) or :class:`Volume`
        Raw training tomograms (normalised here per tomogram).
    tables : sequence of DataFrame
        Their particle centres (``x, y, z`` voxels, ``class_id`` in 1..K).
    config : PickerConfig
        Classes (with diameters), block size, label shape, channels, voxel size.
    epochs, batch_size, lr, weight_decay
        METHODS.md §1: ~60 epochs, batch 8–16, AdamW lr 5e-4–1e-3 (one-cycle
        peak), weight decay 0.01.
    val_tomograms, val_tables : optional
        Validation set; the returned weights are those of the epoch whose
        validation picks had the best class-aware F1 (tolerance: particle
        radius). Without a validation set the training tomograms are used,
        with a warning, since their F1 is optimistic.
    val_every : int
        Validate every this many epochs (and after the last).
    augment : Augmenter, None or "default"
    seed : int or None
    device : str, optional
    progress : callable(done, total, message), optional
        Counts optimiser steps; the message carries epoch, loss and F1.
    cancel : object with ``is_set()``, optional
        Raises :class:`Cancelled` at the next step.
    on_epoch : callable(dict), optional
        Called after each epoch with ``{"epoch", "loss", "val_f1",
        "val_f1_agnostic", "lr", "seconds"}`` (``val_*`` NaN when not validated).
    init : PickerModel, optional
        Start from these weights (fine-tuning); its config must match.

    Returns
    -------
    PickerModel
        The best checkpoint; ``metrics`` holds ``best_epoch``, ``best_val_f1``
        and the per-epoch ``history``.

    Raises
    ------
    BioidInputError
        Mismatched lists, coordinates outside their tomogram, unknown classes,
        no particles at all.
    Cancelled
    """
    if len(tomograms) == 0:
        raise BioidInputError("no training tomograms given")
    _check_pairs(tomograms, tables, config, "training")
    if val_tomograms:
        _check_pairs(val_tomograms, val_tables or [], config, "validation")
    else:
        warnings.warn("no validation tomograms: the checkpoint is chosen by F1 on the training tomograms", stacklevel=2)
        val_tomograms, val_tables = tomograms, tables
    rng = seed_everything(seed)
    dev = pick_device(device)
    if augment == "default":
        augment = Augmenter()

    images, labels, centres = [], [], []
    for vol, tab in zip(tomograms, tables):
        arr = _as_array(vol)
        images.append(Normalizer.fit(arr, config.normalization, config.lowpass_sigma)(arr))
        labels.append(make_weak_labels(arr.shape, tab, config.label_radii, config.label_shape))
        centres.append(table_zyx(tab))
    sampler = SubtomogramSampler(images, labels, centres, config.block_size, augment)
    if len(sampler) == 0:
        raise BioidInputError("the coordinate tables hold no particles")

    if init is not None:
        if init.config.n_classes != config.n_classes or tuple(init.config.channels) != tuple(config.channels):
            raise BioidInputError("the initial model's classes or channels differ from the configuration")
        net = copy.deepcopy(init.network)
    else:
        net = config.build_network()
    layout = training_layout(dev, 3)
    net.to(dev, memory_format=layout)
    steps_per_epoch = (len(sampler) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    opt, sched = make_adamw_onecycle(net, lr, total, weight_decay)
    model = PickerModel(net, config)

    history: List[dict] = []
    best = {"f1": -1.0, "epoch": 0, "state": None}
    step = 0
    report(progress, 0, total, "training")
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        net.train()
        losses = []
        for img, lab in sampler.epoch(batch_size, rng):
            check_cancel(cancel)
            x = torch.from_numpy(img).to(dev).contiguous(memory_format=layout)
            y = torch.from_numpy(lab).to(dev)
            loss = soft_dice_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            report(progress, step, total, f"epoch {epoch}/{epochs} loss {np.mean(losses):.3f}")
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_f1": float("nan"), "val_f1_agnostic": float("nan"), "lr": float(sched.get_last_lr()[0])}
        if epoch % val_every == 0 or epoch == epochs:
            net.eval()
            v = validation_f1(model, val_tomograms, val_tables, val_tolerance, device=device, cancel=cancel)
            record["val_f1"], record["val_f1_agnostic"] = v["f1"], v["f1_agnostic"]
            if v["f1"] > best["f1"]:
                best = {"f1": v["f1"], "epoch": epoch, "state": copy.deepcopy(net.state_dict())}
            note = " (segmentation mostly foreground: validation picking skipped)" if v["skipped"] else ""
            report(progress, step, total, f"epoch {epoch}/{epochs} loss {record['loss']:.3f} val F1 {v['f1']:.3f}{note}")
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval().cpu().to(memory_format=torch.contiguous_format)
    model.metrics = {"best_epoch": best["epoch"], "best_val_f1": best["f1"], "history": history}
    return model
