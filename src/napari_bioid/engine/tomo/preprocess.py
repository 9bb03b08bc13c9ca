"""Tomogram normalisation and block extraction.

Statistics are computed in z-chunks so a memory-mapped tomogram is never read
into memory whole; blocks are normalised as they are cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi


@dataclass
class Normalizer:
    """Per-tomogram intensity normalisation applied block by block.

    ``zscore``: (v - mean) / std. ``minmax``: (v - min) / (max - min).
    ``lowpass_sigma`` > 0 adds a Gaussian low-pass (σ in voxels, kernel
    truncated at 3 voxels radius as in METHODS.md's "kernel 3, sigma 1") per block.
    """

    offset: float
    scale: float
    lowpass_sigma: float = 0.0

    @classmethod
    def fit(cls, volume: np.ndarray, method: str = "zscore", lowpass_sigma: float = 0.0, chunk_voxels: int = 16 * 1024**2) -> "Normalizer":
        """Measure a tomogram's statistics in float64, one z-chunk at a time."""
        step = max(1, chunk_voxels // max(1, int(np.prod(volume.shape[1:]))))
        n = 0
        s = s2 = 0.0
        lo, hi = np.inf, -np.inf
        for z0 in range(0, volume.shape[0], step):
            c = np.asarray(volume[z0 : z0 + step], dtype=np.float64)
            n += c.size
            s += c.sum()
            s2 += np.square(c).sum()
            lo, hi = min(lo, c.min()), max(hi, c.max())
        if method == "zscore":
            mean = s / n
            std = np.sqrt(max(s2 / n - mean * mean, 0.0))
            return cls(mean, std if std > 0 else 1.0, lowpass_sigma)
        if method == "minmax":
            return cls(lo, (hi - lo) if hi > lo else 1.0, lowpass_sigma)
        raise ValueError(f"unknown normalisation {method!r}")

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out = (np.asarray(block, dtype=np.float32) - np.float32(self.offset)) / np.float32(self.scale)
        if self.lowpass_sigma > 0:
            out = ndi.gaussian_filter(out, self.lowpass_sigma, truncate=1.0 / self.lowpass_sigma, mode="reflect")
        return out


def _mirror_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map any integer indices into [0, n) by mirror reflection (edge not repeated)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def extract_block(volume: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Cut ``volume[start : start + size]``, mirroring where the block leaves the volume.

    ``start`` may be negative and ``start + size`` may exceed the shape, so
    padding never copies the tomogram: only the block is materialised.
    Returns a new array of shape ``size`` and ``volume``'s dtype.
    """
    idx = [_mirror_index(np.arange(s, s + n), dim) for s, n, dim in zip(start, size, volume.shape)]
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    sub = np.asarray(volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    return sub[np.ix_(idx[0] - lo[0], idx[1] - lo[1], idx[2] - lo[2])]


def bin_factor(tomogram_voxel_size: Optional[float], model_voxel_size: Optional[float]) -> int:
    """The integer binning that brings a tomogram to a model's voxel size (1 when none is needed or known).

    ``round(model / tomogram)`` when the tomogram's voxels are at least 1.5×
    finer than the model's (both in Å); e.g. 5.1 Å tomogram, 10.2 Å model → 2.
    """
    if not tomogram_voxel_size or not model_voxel_size or model_voxel_size < 1.5 * tomogram_voxel_size:
        return 1
    return int(round(model_voxel_size / tomogram_voxel_size))


def bin_volume(volume: np.ndarray, factor: int, chunk_slices: int = 64) -> np.ndarray:
    """Mean of ``factor``³ voxel cubes: float32 (Z // f, Y // f, X // f).

    ``factor`` 1 returns ``volume`` itself, not read (a memory map stays one).
    Trailing voxels that do not fill a cube are dropped. A memory-mapped
    ``volume`` is read ``chunk_slices`` (rounded to whole cubes) at a time, so
    only the binned result (1/f³ of the tomogram) is held. Voxel ``i`` of the
    result covers voxels ``[i·f, (i+1)·f)``: its centre is ``i·f + (f − 1)/2``
    in the input's voxels (:func:`unbin_coordinates`).

    Raises
    ------
    ValueError
        ``factor`` < 1, not a 3D volume, or an axis shorter than ``factor``.
    """
    f = int(factor)
    if f < 1:
        raise ValueError(f"bin factor must be ≥ 1, got {factor}")
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    if f == 1:
        return volume
    out_shape = tuple(s // f for s in volume.shape)
    if min(out_shape) < 1:
        raise ValueError(f"cannot bin a {volume.shape} volume by {f}")
    out = np.empty(out_shape, np.float32)
    step = max(1, chunk_slices // f)
    Y, X = out_shape[1] * f, out_shape[2] * f
    for z in range(0, out_shape[0], step):
        z1 = min(out_shape[0], z + step)
        c = np.asarray(volume[z * f : z1 * f, :Y, :X], dtype=np.float32)
        out[z:z1] = c.reshape(z1 - z, f, out_shape[1], f, out_shape[2], f).mean(axis=(1, 3, 5))
    return out


def unbin_coordinates(table, factor: int):
    """A copy of a picks table (``x, y, z`` in voxels of the binned tomogram) in voxels of the unbinned one."""
    out = table.copy()
    f = float(factor)
    for c in ("x", "y", "z"):
        out[c] = out[c] * f + (f - 1.0) / 2.0
    return out
