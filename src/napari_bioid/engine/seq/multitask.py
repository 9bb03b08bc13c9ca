"""The multi-task super-resolution base caller (METHODS.md §3).

One network (:class:`~napari_bioid.engine.nn.multitask.MultiTaskNet`) sees three
consecutive cycles' registered, normalised 4-channel images (12 channels, as the
U-Net caller) and gives, for the middle cycle,

* the 4-channel image at 2× sampling (super-resolution branch), and
* per pixel of the input grid the probabilities of background / a cluster
  centre of base A, C, G, T (base-calling branch).

Training (:func:`train_multitask_caller`) uses tiles the project simulates: the
super-resolution target is the simulator's noise-free, background-free tile at
2× sampling with a PSF half as wide (:func:`.simulate.render_super_resolution`,
standing in for a structured-illumination reconstruction), moved into the
registration's reference frame and scaled like the input; the calling target
marks the pixel under each simulated cluster with the base of its read at that
cycle. Loss = w1·MSE + w2·(1 − SSIM) on the 2× image + w3·cross-entropy on the
classes (METHODS.md; weights 10, 1, 1 here so that the three terms are of one
size at the start).

Calling (:meth:`MultiTaskCaller.call`): the network's own detection replaces
the classical one: the centre score 1 − p(background), averaged over the first
five cycles, has its 3 × 3 local maxima kept where the score summed over the
3 × 3 neighbourhood is ≥ 0.5 (at least half a centre expected there); the
centre is the score-weighted centroid of that neighbourhood. Each cycle's
base probabilities are read at the cluster's peak pixel (renormalised over
A/C/G/T); chastity = best / (best + second) feeds the usual pass filter and
Phred calibration. Clusters that the classical detection merged (two or more
network clusters whose nearest classical centre is the same one, within 2 px)
are counted and flagged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import BioidInputError
from ..nn.multitask import MultiTaskNet, ssim
from ..progress import ProgressCallback, check_cancel, report
from ..train.checkpoint import CheckpointedNetwork
from .classical import Calls, call_stack, chastity_of, extract_intensities, pass_filter
from .unet import _window, normalised_stack

KIND = "napari-bioid seq multitask"
#: pixels of the input grid processed at once at inference, and the margin around them (px)
TILE, MARGIN = 256, 24


@dataclass
class MultiTaskConfig:
    cycles: int = 3  # consecutive cycles stacked as input (odd)
    width: int = 64
    blocks: int = 6
    layers: int = 6
    growth: int = 16
    detect_cycles: int = 5  # cycles whose centre scores are averaged for detection
    min_centre_mass: float = 0.5  # 3 × 3 sum of the centre score at a kept maximum


def default_multitask_path() -> Path:
    """The shipped multi-task caller (``scripts/train_seq_multitask.py``)."""
    return Path(__file__).resolve().parents[2] / "models" / "seq_multitask_default.pt"


class MultiTaskCaller(CheckpointedNetwork):
    """A trained multi-task network with its config and metrics."""

    KIND = KIND
    CONFIG = MultiTaskConfig

    def __init__(self, config: Optional[MultiTaskConfig] = None, network: Optional[torch.nn.Module] = None, metrics: Optional[dict] = None):
        self.config = config or MultiTaskConfig()
        c = self.config
        self.network = network or MultiTaskNet(4 * c.cycles, 4, 5, c.width, c.blocks, c.layers, c.growth)
        self.metrics = metrics or {}

    @torch.inference_mode()
    def predict(self, x: np.ndarray) -> tuple:
        """One cycle window ``[4·cycles, y, x]`` → (2× image float32 ``[4, 2y, 2x]``, class probabilities float32 ``[5, y, x]``).

        Large images are processed in ``TILE``² pieces with a ``MARGIN`` px context.
        """
        net = self.network.eval()
        _, H, W = x.shape
        sr = np.zeros((4, 2 * H, 2 * W), np.float32)
        prob = np.zeros((5, H, W), np.float32)
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        for y0 in range(0, H, TILE):
            for x0 in range(0, W, TILE):
                y1, x1 = min(y0 + TILE, H), min(x0 + TILE, W)
                a0, b0 = max(y0 - MARGIN, 0), max(x0 - MARGIN, 0)
                a1, b1 = min(y1 + MARGIN, H), min(x1 + MARGIN, W)
                s, logit = net(xt[None, :, a0:a1, b0:b1])
                p = torch.softmax(logit, 1)[0].numpy()
                prob[:, y0:y1, x0:x1] = p[:, y0 - a0 : y1 - a0, x0 - b0 : x1 - b0]
                sr[:, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1] = s[0].numpy()[:, 2 * (y0 - a0) : 2 * (y1 - a0), 2 * (x0 - b0) : 2 * (x1 - b0)]
        return sr, prob

    def detect(self, centre_score: np.ndarray) -> pd.DataFrame:
        """Cluster centres from a centre-score map ``[y, x]`` (1 − p(background)): DataFrame ``x, y, peak`` (px)."""
        from skimage.feature import peak_local_max

        mass = ndimage.uniform_filter(centre_score, 3, mode="constant") * 9
        peaks = peak_local_max(centre_score, min_distance=1, exclude_border=False)
        if len(peaks) == 0:
            return pd.DataFrame({"x": [], "y": [], "peak": []})
        y, x = peaks[:, 0], peaks[:, 1]
        keep = mass[y, x] >= self.config.min_centre_mass
        y, x = y[keep], x[keep]
        H, W = centre_score.shape
        pad = np.pad(centre_score, 1)
        win = np.stack([pad[y + 1 + dy, x + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 1)  # (n, 9)
        off = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], float)
        cy, cx = (win @ off / np.maximum(win.sum(1, keepdims=True), 1e-9)).T
        return pd.DataFrame({"x": x + cx, "y": y + cy, "peak": centre_score[y, x], "px": x, "py": y})

    def call(self, stack: np.ndarray, calls: Optional[Calls] = None, keep_super_resolution: Optional[int] = None,
             progress: Optional[ProgressCallback] = None, cancel: Any = None) -> Calls:
        """Call a cycle stack ``[cycle, 4, y, x]`` with the network's detection and bases.

        Parameters
        ----------
        stack : array [cycle, 4, y, x]
        calls : Calls, optional
            The classical calls of the same stack (registration, and the detection
            whose merged clusters are counted); computed when missing.
        keep_super_resolution : int, optional
            Cycles whose 2× images are kept in ``info["super_resolution"]``
            (float16 ``[cycle, 4, 2y, 2x]``); default every cycle while that
            stays under 512 MB, else the first.

        Returns
        -------
        Calls
            ``positions`` has ``x, y`` (px, reference frame), ``peak`` and
            ``separated`` (a cluster the classical detection merged with
            another); ``corrected`` holds the probabilities of A/C/G/T;
            ``info["separated_clusters"]`` counts the separated ones.
        """
        calls = calls or call_stack(stack, cancel=cancel)
        shifts = calls.info["shifts"]
        norm = normalised_stack(stack, shifts)
        T, _, H, W = norm.shape
        k = min(self.config.detect_cycles, T)
        if keep_super_resolution is None:
            keep_super_resolution = T if T * 4 * 4 * H * W * 2 <= 512 * 2**20 else 1
        keep_sr = min(keep_super_resolution, T)
        sr_kept = np.zeros((keep_sr, 4, 2 * H, 2 * W), np.float16)
        first = np.zeros((k, 4, H, W), np.float32)
        score = np.zeros((H, W), np.float32)
        centres = None
        probs = None
        for t in range(T):
            check_cancel(cancel)
            sr, p = self.predict(_window(norm, t, self.config.cycles))
            if t < keep_sr:
                sr_kept[t] = sr
            if t < k:
                first[t] = p[1:]
                score += (1 - p[0]) / k
            if t == k - 1:
                centres = self.detect(score)
                if len(centres) == 0:
                    raise BioidInputError("the multi-task network found no clusters in the stack")
                py, px = centres["py"].to_numpy(), centres["px"].to_numpy()
                probs = np.zeros((len(centres), T, 4), np.float32)
                probs[:, :k] = first[:, :, py, px].transpose(2, 0, 1)
            elif t >= k:
                probs[:, t] = p[1:, py, px].T
            report(progress, t + 1, T, f"multi-task network, cycle {t + 1}/{T}")
        probs /= np.maximum(probs.sum(2, keepdims=True), 1e-9)
        chast = chastity_of(probs)
        # clusters the classical detection merged: ≥ 2 network clusters sharing their nearest classical centre (≤ 2 px)
        classical_yx = calls.positions[["y", "x"]].to_numpy(float)
        yx = centres[["y", "x"]].to_numpy(float)
        separated = np.zeros(len(yx), bool)
        if len(classical_yx):
            d, j = cKDTree(classical_yx).query(yx)
            j = np.where(d <= 2.0, j, -1)
            counts = np.bincount(j[j >= 0], minlength=len(classical_yx))
            separated = (j >= 0) & (counts[np.clip(j, 0, None)] >= 2)
        positions = pd.DataFrame({"x": centres["x"].to_numpy(), "y": centres["y"].to_numpy(), "peak": centres["peak"].to_numpy(),
                                  "separated": separated})
        sigma = calls.info.get("sigma_px", 2.2 / (2 * np.sqrt(2 * np.log(2))))
        raw = extract_intensities(stack, positions, shifts, sigma, cancel=cancel)
        info = dict(calls.info, caller="multitask", super_resolution=sr_kept, separated_clusters=int(separated.sum()),
                    classical_clusters=len(classical_yx))
        return Calls(probs.argmax(2).astype(np.uint8), chast.astype(np.float32), probs, raw, pass_filter(chast), positions,
                     calls.crosstalk, calls.phasing, calls.prephasing, None, info)


# ---------------------------------------------------------------------------------------------- training
@dataclass
class MultiTaskTile:
    """A training tile: normalised stack, 2× targets and class maps (see :func:`multitask_tile`)."""

    norm: np.ndarray  # float32 [cycle, 4, y, x]
    sr: np.ndarray  # float16 [cycle, 4, 2y, 2x], scaled like norm
    classes: np.ndarray  # uint8 [cycle, y, x]: 0 background, 1 + base at cluster centres


def multitask_tile(tile) -> MultiTaskTile:
    """Training targets of a :class:`.simulate.SimulatedTile` in the registration's reference frame.

    The stack is registered (:func:`.classical.register_stack`) and normalised
    as at calling time; the simulator's truth positions are moved into the
    reference frame by the mean difference between the true and the estimated
    shifts; the 2× target is rendered there and divided by the same
    per-cycle-and-channel scales as the input.
    """
    from .classical import register_stack
    from .io import BASES
    from .simulate import render_super_resolution

    shifts = register_stack(tile.stack)
    norm, scales = normalised_stack(tile.stack, shifts, return_scales=True)
    offset = (tile.shifts - shifts).reshape(-1, 2).mean(0)
    sr = render_super_resolution(tile, 2, frame_offset=offset)
    sr = (sr / scales[:, :, None, None]).astype(np.float16)
    T, _, H, W = norm.shape
    yx = np.rint(tile.extra["positions_yx"] + offset).astype(int)
    ok = (yx[:, 0] >= 0) & (yx[:, 0] < H) & (yx[:, 1] >= 0) & (yx[:, 1] < W)
    codes = np.array([[BASES.index(b) for b in r] for r in tile.truth["read"]], np.uint8)
    classes = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        classes[t, yx[ok, 0], yx[ok, 1]] = 1 + codes[ok, t]
    return MultiTaskTile(norm, sr, classes)


def train_multitask_caller(tiles: Sequence[MultiTaskTile], steps: int = 1000, batch_size: int = 8, crop: int = 64, lr: float = 1e-3,
                           weights: tuple = (10.0, 1.0, 1.0), config: Optional[MultiTaskConfig] = None, seed: int = 0,
                           progress: Optional[ProgressCallback] = None, cancel: Any = None) -> MultiTaskCaller:
    """Train the multi-task network on :func:`multitask_tile` tiles (see the module docstring).

    Random crops of ``crop``² px (any cycle, any of the 8 rotations and
    flips); AdamW with a one-cycle schedule. ``weights`` = (w1 MSE, w2 1 − SSIM,
    w3 cross-entropy).

    Raises
    ------
    BioidInputError
        No tiles, or tiles smaller than the crop.
    """
    from ..train.optim import make_adamw_onecycle

    if not tiles:
        raise BioidInputError("no training tiles")
    if any(min(t.norm.shape[2:]) < crop for t in tiles):
        raise BioidInputError(f"every training tile must be at least {crop} × {crop} px")
    caller = MultiTaskCaller(config)
    k = caller.config.cycles
    net = caller.network.train()
    opt, sched = make_adamw_onecycle(net, lr, steps, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    w1, w2, w3 = weights
    history, parts, t0 = [], [], time.perf_counter()
    for step in range(steps):
        check_cancel(cancel)
        xs, ss, cs = [], [], []
        for _ in range(batch_size):
            tile = tiles[rng.integers(len(tiles))]
            T, _, H, W = tile.norm.shape
            t = int(rng.integers(T))
            y0, x0 = int(rng.integers(0, H - crop + 1)), int(rng.integers(0, W - crop + 1))
            x = _window(tile.norm, t, k)[:, y0 : y0 + crop, x0 : x0 + crop]
            s = tile.sr[t, :, 2 * y0 : 2 * (y0 + crop), 2 * x0 : 2 * (x0 + crop)].astype(np.float32)
            c = tile.classes[t, y0 : y0 + crop, x0 : x0 + crop]
            rot, flip = int(rng.integers(4)), bool(rng.integers(2))
            x, s, c = (np.rot90(a, rot, axes=(-2, -1)) for a in (x, s, c))
            if flip:
                x, s, c = x[..., ::-1], s[..., ::-1], c[..., ::-1]
            xs.append(x.copy()), ss.append(s.copy()), cs.append(c.astype(np.int64))
        x, s, c = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ss)), torch.from_numpy(np.stack(cs))
        out_sr, logits = net(x)
        mse = F.mse_loss(out_sr, s)
        dssim = 1 - ssim(out_sr, s)
        ce = F.cross_entropy(logits, c)
        loss = w1 * mse + w2 * dssim + w3 * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        parts.append((mse.item(), dssim.item(), ce.item()))
        m = np.mean(parts[-20:], 0)
        report(progress, step + 1, steps, f"step {step + 1}/{steps} MSE {m[0]:.4f} 1−SSIM {m[1]:.3f} CE {m[2]:.3f}")
        if (step + 1) % 50 == 0 or step + 1 == steps:
            history.append({"step": step + 1, "mse": float(m[0]), "one_minus_ssim": float(m[1]), "cross_entropy": float(m[2])})
    net.eval()
    caller.metrics = {"steps": steps, "batch_size": batch_size, "crop": crop, "lr": lr, "weights": list(weights),
                      "seconds": time.perf_counter() - t0, "history": history}
    return caller
