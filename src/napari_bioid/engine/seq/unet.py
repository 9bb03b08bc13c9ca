"""The semi-supervised U-Net base caller (METHODS.md §3).

Labels come from the classical pipeline and the reference, never from a
simulator's truth: the classical caller's reads are aligned to the reference
(:func:`.align.align_reads`); clusters whose read aligns with at most
``max_label_error`` mismatches per base are *labelled* (mask 1) with the
reference base of every cycle at their centre pixel; the other clusters are
*unlabelled* (mask 2). Both masks hold for every cycle of the tile.

The network (:class:`~napari_bioid.engine.nn.unet2d.UNet2d`, 4 down-samplings)
sees three consecutive cycles' registered, normalised 4-channel images (12
channels) and gives per-pixel probabilities of A/C/G/T for the middle cycle.
Each training crop is augmented twice (different Gaussian noise and
brightness); the loss is the cross-entropy on mask-1 pixels of both views plus
λ(epoch) × the mean squared difference of the two views' probabilities on
mask-2 pixels, λ rising as exp(−5 (1 − e/E)²) (Laine & Aila, ICLR 2017, the
Π-model ramp-up).

Calling: every cycle of a tile is segmented, and each cluster (found by the
classical detection) reads its probabilities at its centre pixel; the base is
the most probable one and "chastity" (best / (best + second)) feeds the same
pass filter and Phred calibration as the classical caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import BioidInputError
from ..nn.unet2d import UNet2d
from ..progress import ProgressCallback, check_cancel, report
from ..train.checkpoint import CheckpointedNetwork
from ..train.optim import training_layout
from .classical import Calls, _background, call_stack, chastity_of, pass_filter

KIND = "napari-bioid seq unet"


@dataclass
class UNetCallerConfig:
    cycles: int = 3  # consecutive cycles stacked as input (odd)
    base: int = 16
    depth: int = 4


def default_unet_path() -> Path:
    """The shipped U-Net caller (``scripts/train_seq_unet.py``)."""
    return Path(__file__).resolve().parents[2] / "models" / "seq_unet_default.pt"


def normalised_stack(stack: np.ndarray, shifts: np.ndarray, return_scales: bool = False):
    """Registered, background-subtracted, per-cycle-and-channel scaled images: float32 ``[cycle, 4, y, x]``.

    Each image is moved into the reference frame (``shifts`` from
    :func:`.classical.register_stack`, linear interpolation), its background
    (block-wise low percentile) subtracted and divided by its 99.5th percentile.
    ``return_scales``: also return those divisors, float ``[cycle, 4]`` (counts).
    """
    T, C = stack.shape[:2]
    out = np.zeros(stack.shape[:2] + stack.shape[2:], np.float32)
    scales = np.zeros((T, C))
    for t in range(T):
        for c in range(C):
            img = stack[t, c].astype(np.float32)
            img = img - _background(img)
            img = ndimage.shift(img, -shifts[t, c], order=1, mode="nearest")
            scales[t, c] = max(float(np.percentile(img, 99.5)), 1e-6)
            out[t, c] = img / scales[t, c]
    return (out, scales) if return_scales else out


def pixel_indices(positions, shape) -> np.ndarray:
    """Nearest pixels int ``(n, 2)`` [y, x] of a DataFrame's ``y, x`` columns (px), clipped into an image of ``shape`` (H, W)."""
    yx = np.rint(positions[["y", "x"]].to_numpy(float)).astype(int)
    yx[:, 0] = np.clip(yx[:, 0], 0, shape[0] - 1)
    yx[:, 1] = np.clip(yx[:, 1], 0, shape[1] - 1)
    return yx


def _window(norm: np.ndarray, t: int, k: int) -> np.ndarray:
    """Cycles t − k//2 … t + k//2 (edges repeated) stacked as channels: [k·4, y, x]."""
    T = norm.shape[0]
    idx = np.clip(np.arange(t - k // 2, t + k // 2 + 1), 0, T - 1)
    return norm[idx].reshape(-1, *norm.shape[2:])


@dataclass
class TrainingTile:
    """A tile with its labels: normalised stack, cluster pixels, per-cycle labels (−1 = unlabelled cluster)."""

    norm: np.ndarray  # [cycle, 4, y, x]
    yx: np.ndarray  # int (n, 2) centre pixels
    labels: np.ndarray  # int8 (n, cycle): base 0..3 of labelled clusters, −1 for unlabelled ones


def labels_from_reference(stack: np.ndarray, reference, max_label_error: float = 0.15, calls: Optional[Calls] = None) -> TrainingTile:
    """Call a tile classically, align the pass-filter reads and label the clusters that align (see module docstring)."""
    from .align import align_reads

    calls = calls or call_stack(stack)
    norm = normalised_stack(stack, calls.info["shifts"])
    T = calls.bases.shape[1]
    labels = np.full(calls.bases.shape, -1, np.int8)
    pf = np.flatnonzero(calls.pass_filter)
    al = align_reads(calls.reads_at(pf), reference, n_cycles=T)
    err = al.errors.sum(1) / np.maximum(al.covered.sum(1), 1)
    good = al.aligned & (err <= max_label_error) & (al.covered.sum(1) == T)
    for row in np.flatnonzero(good):
        ref = al.reference_base[row].astype(np.int16)
        lab = np.where(ref < 4, ref, calls.bases[pf[row]]).astype(np.int8)  # an inserted base keeps its call
        labels[pf[row]] = lab
    yx = pixel_indices(calls.positions, norm.shape[2:])
    return TrainingTile(norm, yx, labels)


class UNetCaller(CheckpointedNetwork):
    """A trained U-Net base caller with its config and metrics."""

    KIND = KIND
    CONFIG = UNetCallerConfig

    def __init__(self, config: Optional[UNetCallerConfig] = None, network: Optional[torch.nn.Module] = None, metrics: Optional[dict] = None):
        self.config = config or UNetCallerConfig()
        self.network = network or UNet2d(4 * self.config.cycles, 4, self.config.base, self.config.depth)
        self.metrics = metrics or {}

    @torch.inference_mode()
    def probabilities(self, norm: np.ndarray, yx: np.ndarray, progress: Optional[ProgressCallback] = None, cancel: Any = None) -> np.ndarray:
        """Base probabilities at the cluster pixels: float32 [cluster, cycle, 4]."""
        net = self.network.eval()
        T = norm.shape[0]
        out = np.zeros((len(yx), T, 4), np.float32)
        for t in range(T):
            check_cancel(cancel)
            x = torch.from_numpy(_window(norm, t, self.config.cycles))[None]
            p = torch.softmax(net(x), 1)[0].numpy()
            out[:, t] = p[:, yx[:, 0], yx[:, 1]].T
            report(progress, t + 1, T, f"U-Net cycle {t + 1}/{T}")
        return out

    def call(self, stack: np.ndarray, calls: Optional[Calls] = None, progress: Optional[ProgressCallback] = None, cancel: Any = None) -> Calls:
        """Call a cycle stack ``[cycle, 4, y, x]``: the classical detection's clusters, the U-Net's bases.

        Returns :class:`.classical.Calls` whose ``corrected`` holds the U-Net
        probabilities and ``chastity`` best / (best + second) of them.
        """
        calls = calls or call_stack(stack, progress=None, cancel=cancel)
        norm = normalised_stack(stack, calls.info["shifts"])
        yx = pixel_indices(calls.positions, norm.shape[2:])
        p = self.probabilities(norm, yx, progress, cancel)
        chast = chastity_of(p)
        info = dict(calls.info, caller="unet")
        info.pop("super_resolution", None)  # clusters from the multi-task caller: its 2× images are not this caller's
        return Calls(p.argmax(2).astype(np.uint8), chast.astype(np.float32), p, calls.raw, pass_filter(chast), calls.positions,
                     calls.crosstalk, calls.phasing, calls.prephasing, None, info)


def _views(x: torch.Tensor, rng: torch.Generator):
    """Two augmentations of a batch: brightness ×U(0.8, 1.2) per sample, Gaussian noise σ U(0.02, 0.08)."""
    out = []
    for _ in range(2):
        b = 0.8 + 0.4 * torch.rand(x.shape[0], 1, 1, 1, generator=rng)
        s = 0.02 + 0.06 * torch.rand(x.shape[0], 1, 1, 1, generator=rng)
        out.append(x * b + s * torch.randn(x.shape, generator=rng))
    return out


def train_unet_caller(tiles: Sequence[TrainingTile], epochs: int = 20, steps_per_epoch: int = 50, batch_size: int = 8, crop: int = 64,
                      lr: float = 2e-3, lambda_max: float = 10.0, consistency: bool = True, config: Optional[UNetCallerConfig] = None,
                      seed: int = 0, progress: Optional[ProgressCallback] = None, cancel: Any = None) -> UNetCaller:
    """Train the semi-supervised U-Net on labelled tiles (see the module docstring).

    ``consistency=False`` drops the mask-2 term (the supervised-only ablation).

    Raises
    ------
    BioidInputError
        No labelled cluster in the tiles.
    """
    if not tiles or not any((t.labels >= 0).any() for t in tiles):
        raise BioidInputError("no labelled clusters: the reads must align to the reference")
    caller = UNetCaller(config)
    k = caller.config.cycles
    layout = training_layout(torch.device("cpu"), 2)  # trained on CPU
    net = caller.network.to(memory_format=layout).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * steps_per_epoch
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(i, total) / total)))
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    history, step, t0 = [], 0, time.perf_counter()
    for epoch in range(epochs):
        lam = lambda_max * float(np.exp(-5 * (1 - (epoch + 1) / epochs) ** 2)) if consistency else 0.0
        losses = []
        for _ in range(steps_per_epoch):
            check_cancel(cancel)
            xs, ys, ms = [], [], []
            for _b in range(batch_size):
                tile = tiles[rng.integers(len(tiles))]
                T, _, H, W = tile.norm.shape
                t = int(rng.integers(T))
                y0, x0 = int(rng.integers(0, H - crop + 1)), int(rng.integers(0, W - crop + 1))
                x = _window(tile.norm, t, k)[:, y0 : y0 + crop, x0 : x0 + crop]
                lab = np.full((crop, crop), -100, np.int64)
                unl = np.zeros((crop, crop), bool)
                inside = (tile.yx[:, 0] >= y0) & (tile.yx[:, 0] < y0 + crop) & (tile.yx[:, 1] >= x0) & (tile.yx[:, 1] < x0 + crop)
                yy, xx = tile.yx[inside, 0] - y0, tile.yx[inside, 1] - x0
                lt = tile.labels[inside, t]
                lab[yy[lt >= 0], xx[lt >= 0]] = lt[lt >= 0]
                unl[yy[lt < 0], xx[lt < 0]] = True
                rot = int(rng.integers(4))
                xs.append(np.rot90(x, rot, axes=(1, 2)).copy())
                ys.append(np.rot90(lab, rot).copy())
                ms.append(np.rot90(unl, rot).copy())
            x = torch.from_numpy(np.stack(xs))
            y = torch.from_numpy(np.stack(ys))
            m = torch.from_numpy(np.stack(ms))
            v1, v2 = (v.contiguous(memory_format=layout) for v in _views(x, g))
            l1, l2 = net(v1), net(v2)
            loss = F.cross_entropy(l1, y, ignore_index=-100) + F.cross_entropy(l2, y, ignore_index=-100)
            if lam > 0 and m.any():
                p1, p2 = torch.softmax(l1, 1), torch.softmax(l2, 1)
                loss = loss + lam * ((p1 - p2) ** 2).sum(1)[m].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            report(progress, step, total, f"epoch {epoch + 1}/{epochs} loss {np.mean(losses[-20:]):.3f} λ {lam:.2f}")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "lambda": lam})
    net.to(memory_format=torch.contiguous_format).eval()
    caller.metrics = {"epochs": epochs, "steps": total, "batch_size": batch_size, "crop": crop, "consistency": consistency,
                      "lambda_max": lambda_max, "seconds": time.perf_counter() - t0, "history": history,
                      "labelled_clusters": int(sum((t.labels[:, 0] >= 0).sum() for t in tiles)),
                      "unlabelled_clusters": int(sum((t.labels[:, 0] < 0).sum() for t in tiles))}
    return caller
