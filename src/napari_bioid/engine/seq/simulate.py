"""Simulated flow-cell tiles for sequencing by synthesis (METHODS.md §3).

No public raw flow-cell image tiles exist, so tiles are simulated with the
image formation of a four-dye sequencing-by-synthesis instrument, calibrated
to the real measurements in ``../shared/data/sequencing``:

* clusters at a density in K/mm² (random positions, or a patterned hexagonal
  grid) on a tile of ``height × width`` pixels of ``pixel_size_um`` µm;
* each cluster carries a read drawn from a reference FASTA (random position,
  either strand) and a brightness drawn from a log-normal spread;
* per cycle the cluster emits the dye of the base at its current position, with
  phasing (a strand falls one base behind with probability ``phasing`` per
  cycle) and prephasing (one ahead with ``prephasing``), i.e. the signal is
  Σ_k P[t, k] · dye(base_k) with P the position distribution after t cycles
  (the model of Bustard/AYB, Massingham & Goldman 2012); intensity decays by
  ``decay`` per cycle;
* dye crosstalk: observed channels = M · dye signal, M a 4 × 4 matrix (unit
  diagonal; the A/C and G/T pairs leak most, as on two-laser instruments);
* Gaussian PSF of ``fwhm_px`` (2.2 px: the median spot FWHM of the real MiSeq
  InterOp extraction metrics, 2.13–2.28 px per channel);
* background (a constant plus a smooth gradient per channel), shot noise
  (Poisson, in photo-electrons, ``gain`` counts per electron) and camera read
  noise (Gaussian, counts), then 16-bit counts;
* a random-walk stage drift per cycle and a fixed offset per channel (px).

The super-resolution target (``render_super_resolution``) is the same tile
without noise or background at 2× sampling with a PSF half as wide, which
stands in for a structured-illumination reconstruction.

All lengths are in pixels of the tile unless the name says µm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional, Tuple

import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import BioidInputError
from ..progress import ProgressCallback, check_cancel, report
from .io import BASES, reverse_complement

#: crosstalk M[observed channel, dye] of the default instrument (A/C and G/T share a laser)
DEFAULT_CROSSTALK = ((1.00, 0.35, 0.03, 0.01),
                     (0.45, 1.00, 0.02, 0.02),
                     (0.02, 0.03, 1.00, 0.40),
                     (0.01, 0.02, 0.30, 1.00))


@dataclass
class SeqSimParams:
    """Parameters of a simulated tile (units in the names; defaults calibrated as the module says)."""

    height: int = 512
    width: int = 512
    n_cycles: int = 60
    pixel_size_um: float = 0.37
    density_k_per_mm2: float = 200.0  # resolvable by the classical caller; the real MiSeq run: 1458 (dense setting)
    patterned: bool = False
    fwhm_px: float = 2.2
    brightness: float = 900.0  # median total photo-electrons of a cluster at cycle 1 (gives ~0.6 % raw error, as real runs)
    brightness_sigma: float = 0.35  # log-normal spread of the cluster brightness
    phasing: float = 0.006  # per cycle (GA-era rates; a HiSeq reports ~0.002)
    prephasing: float = 0.003
    decay: float = 0.01
    crosstalk: Tuple[Tuple[float, ...], ...] = DEFAULT_CROSSTALK
    channel_gain: Tuple[float, ...] = (1.0, 0.85, 1.1, 0.9)  # relative dye brightness
    background: float = 120.0  # counts
    background_gradient: float = 0.3  # relative variation across the tile
    gain: float = 1.0  # counts per photo-electron
    read_noise: float = 6.0  # counts (Gaussian)
    drift_px: float = 0.25  # stage random-walk step per cycle (px, each axis)
    channel_offset_px: float = 0.6  # max channel-to-channel misregistration (px)
    seed: int = 0

    @property
    def n_clusters(self) -> int:
        area_mm2 = self.height * self.width * (self.pixel_size_um * 1e-3) ** 2
        return int(round(self.density_k_per_mm2 * 1e3 * area_mm2))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_clusters"] = self.n_clusters
        return d


@dataclass
class SimulatedTile:
    """A simulated tile.

    Attributes
    ----------
    stack : uint16 [cycle, 4, y, x]
        The observed images, channels A, C, G, T.
    truth : DataFrame
        One row per cluster: ``x, y`` (px, in the cycle-1 frame of channel A),
        ``read`` (the bases of cycles 1..n), ``strand``, ``ref_pos`` (0-based
        start on the reference's forward strand), ``brightness``.
    signal : float32 [cluster, cycle, 4]
        The noise-free dye signal of each cluster (after phasing, decay and
        gain, before crosstalk): what an ideal extraction would see.
    shifts : float [cycle, 4, 2]
        Total (dy, dx) displacement of each cycle and channel (px).
    params : SeqSimParams
    """

    stack: np.ndarray
    truth: pd.DataFrame
    signal: np.ndarray
    shifts: np.ndarray
    params: SeqSimParams
    extra: dict = field(default_factory=dict)


def phasing_matrix(n_cycles: int, phasing: float, prephasing: float, n_positions: Optional[int] = None) -> np.ndarray:
    """P[t, k]: probability that after cycle t+1 a strand emits the dye of base k (0-based).

    Each cycle a strand advances 1 base with probability 1 − p − q, stays
    (phasing, p) or advances 2 (prephasing, q). Shape ``(n_cycles,
    n_positions)``; rows sum to 1 when ``n_positions`` ≥ 2·n_cycles.
    """
    if not (0 <= phasing < 1 and 0 <= prephasing < 1 and phasing + prephasing < 1):
        raise BioidInputError(f"phasing {phasing} and prephasing {prephasing} must be probabilities summing below 1")
    n_pos = n_positions or n_cycles + 8
    dist = np.zeros(n_pos + 3)
    dist[0] = 1.0  # number of bases incorporated before cycle 1
    out = np.zeros((n_cycles, n_pos))
    step = np.array([phasing, 1 - phasing - prephasing, prephasing])
    for t in range(n_cycles):
        new = np.zeros_like(dist)
        new += step[0] * dist
        new[1:] += step[1] * dist[:-1]
        new[2:] += step[2] * dist[:-2]
        dist = new
        # emitting base = last incorporated = index (incorporated − 1)
        out[t] = dist[1 : n_pos + 1]
    return out


def _positions(params: SeqSimParams, rng) -> np.ndarray:
    n = params.n_clusters
    margin = 2.0
    if params.patterned:
        spacing = np.sqrt(2.0 / (np.sqrt(3.0) * n / (params.height * params.width)))
        ys, xs = [], []
        y, row = margin, 0
        while y < params.height - margin:
            x0 = margin + (spacing / 2 if row % 2 else 0.0)
            xs.extend(np.arange(x0, params.width - margin, spacing))
            ys.extend([y] * len(np.arange(x0, params.width - margin, spacing)))
            y += spacing * np.sqrt(3) / 2
            row += 1
        pos = np.stack([ys, xs], 1)
        occupied = rng.random(len(pos)) < 0.9  # unfilled wells
        return pos[occupied] + rng.normal(0, 0.1, (occupied.sum(), 2))
    return np.stack([rng.uniform(margin, params.height - margin, n), rng.uniform(margin, params.width - margin, n)], 1)


def _reads(reference: str, n: int, length: int, rng) -> Tuple[List[str], np.ndarray, np.ndarray]:
    span = length + 12  # a few bases beyond the last cycle, for prephasing
    if len(reference) < span:
        raise BioidInputError(f"the reference ({len(reference)} bp) is shorter than a read ({span} bp)")
    starts = rng.integers(0, len(reference) - span + 1, n)
    strands = rng.random(n) < 0.5
    reads = []
    for s, fwd in zip(starts, strands):
        frag = reference[s : s + span]
        reads.append(frag if fwd else reverse_complement(frag))
    return reads, starts, np.where(strands, "+", "-")


def _render(points_yx: np.ndarray, weights: np.ndarray, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian spots of total ``weights`` at sub-pixel ``points_yx`` (bilinear splat, then Gaussian blur)."""
    h, w = shape
    img = np.zeros((h + 2, w + 2), np.float64)
    y, x = points_yx[:, 0] + 1, points_yx[:, 1] + 1
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    ok = (y0 >= 0) & (x0 >= 0) & (y0 < h + 1) & (x0 < w + 1)
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        np.add.at(img, (y0[ok] + dy, x0[ok] + dx), (weights * wt)[ok])
    # the bilinear splat itself blurs by ~0.4 px (variance 1/6 per axis): take it off the PSF
    eff = np.sqrt(max(sigma**2 - 1.0 / 6.0, 0.05))
    return ndimage.gaussian_filter(img, eff, mode="constant")[1:-1, 1:-1]


def simulate_tile(params: SeqSimParams, reference: str, progress: Optional[ProgressCallback] = None, cancel: Any = None) -> SimulatedTile:
    """Simulate one tile of a sequencing-by-synthesis run (see the module docstring).

    Parameters
    ----------
    params : SeqSimParams
    reference : str
        The genome reads are drawn from (A/C/G/T; other letters become A).

    Returns
    -------
    SimulatedTile

    Raises
    ------
    BioidInputError
        An empty or too short reference, or impossible parameters.
    """
    reference = "".join(c if c in BASES else "A" for c in reference.upper())
    if not reference:
        raise BioidInputError("the reference sequence is empty")
    if params.n_cycles < 1 or params.height < 16 or params.width < 16:
        raise BioidInputError("a tile needs at least 1 cycle and 16 × 16 pixels")
    rng = np.random.default_rng(params.seed)
    pos = _positions(params, rng)
    n = len(pos)
    T = params.n_cycles
    reads, starts, strands = _reads(reference, n, T, rng)
    bright = params.brightness * np.exp(rng.normal(0, params.brightness_sigma, n))
    codes = np.array([[BASES.index(b) for b in r] for r in reads], np.int64)  # (n, T + 12)
    P = phasing_matrix(T, params.phasing, params.prephasing, codes.shape[1])
    onehot = np.eye(4)[codes]  # (n, L, 4)
    decay = (1 - params.decay) ** np.arange(T)
    gain = np.asarray(params.channel_gain, float)
    signal = np.einsum("tk,nkc->ntc", P, onehot) * decay[None, :, None] * gain[None, None, :] * bright[:, None, None]
    M = np.asarray(params.crosstalk, float)
    observed = np.einsum("ij,ntj->nti", M, signal)

    drift = np.cumsum(rng.normal(0, params.drift_px, (T, 2)), axis=0)
    drift -= drift[0]
    chan_off = rng.uniform(-params.channel_offset_px, params.channel_offset_px, (4, 2))
    chan_off[0] = 0.0
    shifts = drift[:, None, :] + chan_off[None, :, :]
    sigma = params.fwhm_px / (2 * np.sqrt(2 * np.log(2)))
    yy, xx = np.mgrid[0 : params.height, 0 : params.width]
    stack = np.zeros((T, 4, params.height, params.width), np.uint16)
    for t in range(T):
        check_cancel(cancel)
        for c in range(4):
            clean = _render(pos + shifts[t, c], observed[:, t, c], (params.height, params.width), sigma)
            slope = params.background_gradient * (0.5 + 0.5 * np.sin(0.7 * c + 2 * np.pi * (xx / params.width + 0.5 * yy / params.height)))
            bg = params.background * (1 + slope - params.background_gradient / 2)
            electrons = rng.poisson(np.clip((clean + bg) / params.gain, 0, None))
            counts = electrons * params.gain + rng.normal(0, params.read_noise, clean.shape)
            stack[t, c] = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
        report(progress, t + 1, T, f"cycle {t + 1}/{T}")
    truth = pd.DataFrame({"x": pos[:, 1], "y": pos[:, 0], "read": [r[:T] for r in reads], "strand": strands,
                          "ref_pos": starts, "brightness": bright})
    return SimulatedTile(stack, truth, signal.astype(np.float32), shifts, params,
                         {"sigma_px": sigma, "positions_yx": pos, "observed": observed.astype(np.float32)})


def render_super_resolution(tile: SimulatedTile, factor: int = 2, cycles: Optional[List[int]] = None,
                            frame_offset: Optional[np.ndarray] = None) -> np.ndarray:
    """Noise-free, background-free image at ``factor``× sampling with a PSF ``factor``× narrower.

    float32 ``[cycle, 4, factor·y, factor·x]``, in counts per super-resolved
    pixel (a spot's peak is as high as in the observed images); the clusters
    sit where they are in the observed stack (same drift and channel offsets),
    at ``(y + 0.5)·factor − 0.5``. With ``frame_offset`` (dy, dx) px they sit
    instead at truth position + offset in every cycle and channel: a
    registered frame.
    """
    p = tile.params
    sigma = tile.extra["sigma_px"]
    pos = tile.extra["positions_yx"]
    obs = tile.extra["observed"]
    cycles = list(range(p.n_cycles)) if cycles is None else list(cycles)
    out = np.zeros((len(cycles), 4, p.height * factor, p.width * factor), np.float32)
    for i, t in enumerate(cycles):
        for c in range(4):
            shift = tile.shifts[t, c] if frame_offset is None else np.asarray(frame_offset, float)
            yx = (pos + shift + 0.5) * factor - 0.5
            out[i, c] = _render(yx, obs[:, t, c], out.shape[2:], sigma)  # the same σ in finer pixels: half as wide
    return out
