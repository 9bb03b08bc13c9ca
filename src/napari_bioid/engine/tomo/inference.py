"""Sliding-window segmentation of a whole tomogram.

Reference: DeepETPicker (Liu et al., Nat. Commun. 2024), METHODS.md §1: the
tomogram is (virtually) padded by ``pad_size``, cut into N³ blocks with stride
s = N − 2·pad_size (the last block shifted back to fit), and only each block's
central s³ region is kept, which discards the poor predictions near block edges.

Only that centre is computed: the decoder runs on the part of the block the
centre depends on (:meth:`~napari_bioid.engine.nn.unet3d.ResUNet3d.forward`
with ``crop=pad``; 126.8 → 75.5 GFLOP per 72³ block at pad 18, same values),
through an inference copy of the network
(:class:`~napari_bioid.engine.nn.unet3d.FoldedResUNet3d`: BatchNorm folded,
CoordConv as cached fields, channels-last) that computes the same function
faster on CPU.

Memory: besides the tomogram (which may be memory-mapped) only one float32
output volume (foreground probability), one uint8 class map (¼ of a float32
volume) and two batches of blocks (one prepared ahead) are held; padding is
done per block by mirroring, never by copying the tomogram.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np
import torch

from ..nn.unet3d import ResUNet3d, fold_for_inference
from ..progress import ProgressCallback, check_cancel, report
from ..train.optim import pick_device
from .config import PickerModel
from .preprocess import Normalizer, extract_block


def _autocast(dev: torch.device, precision: str):
    """The autocast context for ``precision`` on ``dev`` (a no-op for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    if precision not in ("bfloat16", "float16"):
        raise ValueError(f"precision must be float32, bfloat16 or float16, got {precision!r}")
    if precision == "float16" and dev.type != "cuda":
        raise ValueError("float16 inference needs a CUDA device; use bfloat16 or float32 on CPU")
    return torch.autocast(device_type=dev.type, dtype=getattr(torch, precision))


@dataclass
class Segmentation:
    """Per-voxel network output for a tomogram.

    Attributes
    ----------
    probability : float32 (Z, Y, X)
        Foreground probability 1 − p(background), in [0, 1].
    class_map : uint8 (Z, Y, X)
        Most probable particle class (1..K) at each voxel, ignoring background.
    """

    probability: np.ndarray
    class_map: np.ndarray
    skipped_blocks: int = 0  # windows left out as flat (``skip_flat``), their centres set to background

    def labels(self, threshold: float = 0.5) -> np.ndarray:
        """uint8 class map with voxels below ``threshold`` set to background 0."""
        return np.where(self.probability >= threshold, self.class_map, 0).astype(np.uint8)


def window_starts(length: int, block: int, pad: int) -> List[Tuple[int, int, int]]:
    """Blocks along one axis of ``length`` voxels.

    Returns ``(block_start, keep_start, keep_stop)`` triples in tomogram
    coordinates: the block covers ``[block_start, block_start + block)``
    (possibly outside the tomogram: mirrored) and writes its prediction to
    ``[keep_start, keep_stop)``, which together tile ``[0, length)``.
    """
    stride = block - 2 * pad
    if stride <= 0:
        raise ValueError(f"block {block} must exceed 2 × pad {pad}")
    out = []
    k0 = 0
    while True:
        k0_clamped = min(k0, max(length - stride, 0))
        b0 = k0_clamped - pad
        out.append((b0, k0, min(k0_clamped + stride, length)))
        if k0_clamped + stride >= length:
            break
        k0 += stride
    return out


def segment(
    volume: np.ndarray,
    model: PickerModel,
    batch_size: int = 4,
    pad_size: Optional[int] = None,
    device: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[Any] = None,
    normalizer: Optional[Normalizer] = None,
    z_range: Optional[Tuple[int, int]] = None,
    skip_flat: Optional[float] = None,
    precision: str = "float32",
) -> Segmentation:
    """Segment a tomogram with a picking model by sliding windows.

    Parameters
    ----------
    volume : array (Z, Y, X), any real dtype, may be a memory map
        The raw tomogram; it is normalised per block with statistics of the
        whole tomogram (``model.config.normalization``).
    model : PickerModel
    batch_size : int
        Blocks per forward pass.
    pad_size : int, optional
        Override the model's pad size (voxels).
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default CUDA if available.
    progress, cancel
        See :mod:`napari_bioid.engine.progress`; progress counts blocks.
    z_range : (z0, z1), optional
        Segment only the slab ``[z0, z1)``: the blocks of the whole tomogram's
        window grid that write into it, so the slab equals the same slices of
        the whole segmentation (used by :func:`.picking.pick_chunked`).
    skip_flat : float, optional
        Opt-in work avoidance: windows whose normalised block has a standard
        deviation below this (z-score normalisation: in units of the
        tomogram's standard deviation, e.g. 0.05) are not run through the
        network and their centres are background (probability 0). Catches
        padding and masked or empty volume outside the sample, which holds no
        particles; ``result.skipped_blocks`` counts them. Off by default, since
        it changes the output wherever the network would have seen something.
    precision : {"float32", "bfloat16", "float16"}
        ``float32`` (default) computes in full precision; the others run the
        network under ``torch.autocast`` (float16 only on a GPU). bfloat16
        pays only on CPUs with AVX-512 BF16 / AMX (about 100× slower on an
        AVX2-only CPU, measured) and on GPUs.

    On a GPU the windows are cut and normalised one batch ahead in a thread
    and copied from pinned memory; nothing requires one.

    Returns
    -------
    Segmentation
        Of the whole tomogram, or of the slab (shape ``(z1 − z0, Y, X)``).

    Raises
    ------
    ValueError
        Bad ``pad_size``, ``z_range``, ``precision``, or not a 3D volume.
    Cancelled
        When ``cancel`` is set; nothing is returned.
    """
    cfg = model.config
    n = cfg.block_size
    pad = cfg.pad_size if pad_size is None else int(pad_size)
    if not 0 <= 2 * pad < n:
        raise ValueError(f"pad_size {pad} must be ≥ 0 and < block_size/2 = {n / 2:g}")
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    norm = normalizer or Normalizer.fit(volume, cfg.normalization, cfg.lowpass_sigma)
    dev = pick_device(device)
    net = model.network.to(dev).eval()
    off = pad if isinstance(net, ResUNet3d) else 0  # offset of the network's output within the block
    net = fold_for_inference(net)  # same function: BatchNorm folded, CoordConv cached, channels-last
    axes = [window_starts(length, n, pad) for length in volume.shape]
    z0, z1 = (0, volume.shape[0]) if z_range is None else (max(0, int(z_range[0])), min(volume.shape[0], int(z_range[1])))
    if z1 <= z0:
        raise ValueError(f"empty z_range {z_range} for a tomogram of {volume.shape[0]} slices")
    axes[0] = [a for a in axes[0] if a[1] < z1 and a[2] > z0]
    jobs = [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]
    out_shape = (z1 - z0,) + tuple(volume.shape[1:])
    prob = np.zeros(out_shape, dtype=np.float32)
    cls = np.zeros(out_shape, dtype=np.uint8)
    skipped = 0
    amp = _autocast(dev, precision)
    cuda = dev.type == "cuda"

    def prepare(j0: int):
        """One batch of windows cut, normalised (and pinned for a GPU); runs one batch ahead in a thread."""
        batch = jobs[j0 : j0 + batch_size]
        blocks = np.stack([norm(extract_block(volume, (z[0], y[0], x[0]), (n, n, n))) for z, y, x in batch])
        live = None
        if skip_flat is not None:
            live = np.array([float(b[::2, ::2, ::2].std()) >= skip_flat for b in blocks])
            batch = [job for job, keep in zip(batch, live) if keep]
            blocks = blocks[live]
        t = torch.from_numpy(blocks[:, None])
        return batch, (t.pin_memory() if cuda and len(batch) else t), live

    report(progress, 0, len(jobs), "segmenting")
    starts = list(range(0, len(jobs), batch_size))
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(prepare, starts[0]) if starts else None
        for k, j0 in enumerate(starts):
            check_cancel(cancel)
            batch, blocks, live = ahead.result()
            ahead = pool.submit(prepare, starts[k + 1]) if k + 1 < len(starts) else None
            if live is not None:
                skipped += int((~live).sum())
            if not len(batch):
                report(progress, min(j0 + batch_size, len(jobs)), len(jobs), "segmenting")
                continue
            with torch.inference_mode(), amp:
                # only the central (n − 2·pad)³ of a block is kept, so only it is computed (exact, see ResUNet3d.forward)
                x = blocks.to(dev, non_blocking=cuda)
                logits = net(x, crop=pad) if off else net(x)
                p = torch.softmax(logits.float(), dim=1)
                fg = (1.0 - p[:, 0]).cpu().numpy()
                best = (torch.argmax(p[:, 1:], dim=1) + 1).to(torch.uint8).cpu().numpy()
            for i, (z, y, x) in enumerate(batch):
                k0, k1 = max(z[1], z0), min(z[2], z1)  # the kept z range, clipped to the slab
                dst = (slice(k0 - z0, k1 - z0), slice(y[1], y[2]), slice(x[1], x[2]))
                src = (slice(k0 - z[0] - off, k1 - z[0] - off), slice(y[1] - y[0] - off, y[2] - y[0] - off),
                       slice(x[1] - x[0] - off, x[2] - x[0] - off))
                prob[dst] = fg[i][src]
                cls[dst] = best[i][src]
            report(progress, min(j0 + batch_size, len(jobs)), len(jobs), "segmenting")
    return Segmentation(prob, cls, skipped)
