"""The classical base caller (METHODS.md §3): the baseline every learned caller must beat.

Images → intensities
    1. **Registration**: each cycle's channel sum against cycle 1's, and each
       channel's max projection against the channel sum, by phase correlation
       (``skimage.registration.phase_cross_correlation``, 1/10 px); the
       images are never resampled: intensities are read at the shifted centres.
    2. **Detection** on the registered max projection of the first cycles:
       background removed (block-wise low percentile), Gaussian matched filter,
       local maxima above a robust noise threshold, sub-pixel centres by a
       parabola through each maximum and its neighbours.
    3. **Extraction**: per cycle and channel, background-subtracted image,
       Gaussian matched filter of the PSF width, bilinear read-out at the centre.

Intensities → calls (also for CIF / Bustard intensities without images)
    4. **Crosstalk**: the 4 × 4 matrix M estimated from the data (clusters of
       each called dye give a column, median ratios, iterated) and inverted.
    5. **Phasing / prephasing**: (p, q) fitted to the leak of the previous
       and next bases' signal over the cycles (:func:`estimate_phasing`), then
       undone by a ridge-regularised inversion of P, the phasing matrix
       (:func:`.simulate.phasing_matrix`; the Bustard/AYB model).
    6. **Normalisation** per cycle and channel (decay, dye brightness,
       baseline): each channel's "off" level (median over clusters called
       another base) to 0, its "on" level (median over clusters called that
       base) to 1.
    7. **Call** = brightest corrected channel; **chastity** = brightest /
       (brightest + second); **pass filter**: a cluster fails if more than 2 of
       its first 25 cycles have chastity below 0.6 (Illumina's rule).
    8. **Qualities** from a calibration table (see :mod:`.quality`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import BioidInputError
from ..progress import ProgressCallback, check_cancel, report
from .io import BASES, validate_stack
from .simulate import phasing_matrix

CHASTITY_THRESHOLD = 0.6
PF_CYCLES = 25
PF_MAX_FAILS = 2


@dataclass
class Calls:
    """Base calls of a tile or an intensity file.

    Attributes
    ----------
    bases : uint8 [cluster, cycle]
        0..3 = A, C, G, T.
    chastity : float32 [cluster, cycle]
        brightest / (brightest + second) of the corrected intensities, in [0.5, 1].
    corrected : float32 [cluster, cycle, 4]
        Intensities after crosstalk, phasing and normalisation.
    raw : float32 [cluster, cycle, 4]
        Extracted intensities (background-subtracted).
    pass_filter : bool [cluster]
    positions : DataFrame
        ``x, y`` (px) of each cluster (from the images, or the intensity file).
    crosstalk : float [4, 4]
        Estimated M[observed channel, dye].
    phasing, prephasing : float
        Estimated per-cycle rates.
    qualities : int [cluster, cycle] or None
        Phred qualities once calibrated (:func:`.quality.apply_calibration`).
    """

    bases: np.ndarray
    chastity: np.ndarray
    corrected: np.ndarray
    raw: np.ndarray
    pass_filter: np.ndarray
    positions: pd.DataFrame
    crosstalk: np.ndarray
    phasing: float
    prephasing: float
    qualities: Optional[np.ndarray] = None
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def reads(self) -> List[str]:
        """Every cluster's read (str of A/C/G/T, one letter per cycle), decoded from ``bases`` on each access.

        Decoding costs O(clusters · cycles): bind it once (``reads = calls.reads``) or use
        :meth:`reads_at` for some clusters, never ``calls.reads[i]`` in a loop.
        """
        return self.reads_at(None)

    def reads_at(self, rows=None) -> List[str]:
        """The reads of clusters ``rows`` (int indices or a bool mask over clusters; ``None``: all), as str.

        Raises
        ------
        IndexError
            A row outside the calls.
        """
        if rows is not None:
            rows = np.asarray(rows)
            if rows.size == 0:
                return []
        bases = self.bases if rows is None else self.bases[rows]
        if bases.shape[1] == 0:
            return [""] * len(bases)
        letters = np.ascontiguousarray(np.frombuffer(BASES.encode(), np.uint8)[bases])
        return [r.decode() for r in letters.view(f"S{bases.shape[1]}").ravel()]

    def table(self) -> pd.DataFrame:
        """Per-cluster table: x, y (px), pass_filter, read, qualities (Phred+33), mean chastity (and ``separated``, see :mod:`.multitask`)."""
        from .io import phred_string

        df = self.positions[["x", "y"]].copy().reset_index(drop=True)
        df["pass_filter"] = self.pass_filter
        df["read"] = self.reads
        if self.qualities is not None:
            df["qualities"] = [phred_string(q) for q in self.qualities]
        df["mean_chastity"] = self.chastity.mean(axis=1)
        if "separated" in self.positions:  # the multi-task caller: a cluster the classical detection merged with another
            df["separated"] = self.positions["separated"].to_numpy()
        return df


# ------------------------------------------------------------------------------------------ images
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights from ``n_in`` block centres to ``n_out`` pixels (edges held)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    f = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - f
    m[np.arange(n_out), hi] += f
    return m


def _background(img: np.ndarray, block: int = 32, q: float = 10.0) -> np.ndarray:
    """Smooth background: the ``q``-th percentile of ``block``² tiles (every other pixel), bilinearly interpolated.

    The interpolation is separable, two small matrix products, so the cost is
    a fraction of the image's size.
    """
    h, w = img.shape
    nb_y, nb_x = max(1, h // block), max(1, w // block)
    crop = img[: nb_y * block : 2, : nb_x * block : 2].reshape(nb_y, block // 2 or 1, nb_x, -1)
    low = np.percentile(crop.transpose(0, 2, 1, 3).reshape(nb_y, nb_x, -1), q, axis=2).astype(np.float32)
    return _interp_matrix(h, nb_y) @ low @ _interp_matrix(w, nb_x).T


def _int_shift(img: np.ndarray, shift) -> np.ndarray:
    """``img`` moved by ``−shift`` rounded to whole pixels (edges repeated): a cheap registration for projections."""
    dy, dx = (int(round(v)) for v in shift)
    if dy == 0 and dx == 0:
        return img
    pad = max(abs(dy), abs(dx))
    p = np.pad(img, pad, mode="edge")
    h, w = img.shape
    return p[pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def register_stack(stack: np.ndarray, n_ref_cycles: int = 5) -> np.ndarray:
    """(dy, dx) of every cycle and channel relative to cycle 1 (px), float ``[cycle, channel, 2]``.

    A point at ``(y, x)`` in the reference frame is at ``(y, x) + shift`` in
    image ``stack[t, c]``. Cycles by phase correlation of channel sums,
    channels by phase correlation of their registered max projections against
    the channel sum's (scikit-image ``phase_cross_correlation``).
    """
    from skimage.registration import phase_cross_correlation

    T, C = stack.shape[:2]
    h, w = stack.shape[2:]
    # a global translation: a central crop of at most 1024² registers as well as the whole frame
    cy, cx = max(0, (h - 1024) // 2), max(0, (w - 1024) // 2)
    win = (slice(cy, cy + min(h, 1024)), slice(cx, cx + min(w, 1024)))
    ref = stack[0][(slice(None),) + win].astype(np.float32).sum(axis=0)
    cyc = np.zeros((T, 2))
    for t in range(1, T):
        shift, _, _ = phase_cross_correlation(ref, stack[t][(slice(None),) + win].astype(np.float32).sum(axis=0), upsample_factor=10,
                                              normalization=None)
        cyc[t] = -shift
    k = min(n_ref_cycles, T)
    proj = np.zeros((C,) + tuple(ref.shape), np.float32)
    for t in range(k):
        for c in range(C):
            proj[c] = np.maximum(proj[c], _int_shift(stack[t, c][win].astype(np.float32), cyc[t]))
    ref = proj.sum(axis=0)
    chan = np.zeros((C, 2))
    for c in range(C):
        shift, _, _ = phase_cross_correlation(ref, proj[c], upsample_factor=10, normalization=None)
        chan[c] = -shift
    return cyc[:, None, :] + chan[None, :, :]


def detect_clusters(stack: np.ndarray, shifts: np.ndarray, sigma: float = 0.93, n_cycles: int = 5, threshold: Optional[float] = None,
                    min_distance: int = 1) -> pd.DataFrame:
    """Cluster centres on the registered mean channel sum of the first ``n_cycles`` cycles.

    Every cluster lights one channel (plus crosstalk) in every cycle, so the
    channel sum shows all of them and averaging cycles lowers the noise.
    Background is removed, the image smoothed by the PSF (matched filter) and
    its local maxima kept when their height exceeds ``threshold`` (counts);
    by default the threshold splits the log heights of all maxima into noise
    and clusters (Otsu, ``skimage.filters.threshold_otsu``).

    Returns a DataFrame with ``x, y`` (sub-pixel, px, reference frame) and
    ``peak`` (matched-filter height above background, counts).
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu

    T, C = stack.shape[:2]
    k = min(n_cycles, T)
    acc = np.zeros(stack.shape[2:], np.float32)
    for t in range(k):
        for c in range(C):
            img = stack[t, c].astype(np.float32)
            acc += _int_shift(img - _background(img), shifts[t, c])
    smooth = ndimage.gaussian_filter(acc / k, sigma)
    peaks = peak_local_max(smooth, min_distance=min_distance, exclude_border=1)
    if len(peaks) == 0:
        return pd.DataFrame({"x": [], "y": [], "peak": []})
    y, x = peaks[:, 0], peaks[:, 1]
    c0 = smooth[y, x]
    if threshold is None:
        logs = np.log(np.clip(c0, 1e-3, None))
        threshold = float(np.exp(threshold_otsu(logs))) if np.ptp(logs) > 0 else 0.0
    keep = c0 > threshold
    y, x, c0 = y[keep], x[keep], c0[keep]

    def parabola(m, p):
        den = m - 2 * c0 + p
        return np.where(np.abs(den) > 1e-9, 0.5 * (m - p) / den, 0.0).clip(-0.5, 0.5)

    dy = parabola(smooth[y - 1, x], smooth[y + 1, x])
    dx = parabola(smooth[y, x - 1], smooth[y, x + 1])
    return pd.DataFrame({"x": x + dx, "y": y + dy, "peak": c0})


def extract_intensities(stack: np.ndarray, centres: pd.DataFrame, shifts: np.ndarray, sigma: float = 0.93,
                        progress: Optional[ProgressCallback] = None, cancel: Any = None) -> np.ndarray:
    """Background-subtracted matched-filter intensities at each centre: float32 ``[cluster, cycle, channel]``."""
    T, C = stack.shape[:2]
    yx = centres[["y", "x"]].to_numpy(float)
    out = np.zeros((len(yx), T, C), np.float32)
    for t in range(T):
        check_cancel(cancel)
        for c in range(C):
            img = stack[t, c].astype(np.float32)
            img = ndimage.gaussian_filter(img - _background(img), sigma, truncate=3.0)
            coords = (yx + shifts[t, c]).T
            out[:, t, c] = ndimage.map_coordinates(img, coords, order=1, mode="nearest")
        report(progress, t + 1, T, f"extracting cycle {t + 1}/{T}")
    return out


# ------------------------------------------------------------------------------------------ intensities
def chastity_of(values: np.ndarray) -> np.ndarray:
    """brightest / (brightest + second) over the last axis, negative values clipped to 0 (0.5 when all ≤ 0)."""
    v = np.clip(values, 0, None)
    top2 = np.sort(v, axis=-1)[..., -2:]
    s = top2.sum(axis=-1)
    return np.where(s > 0, top2[..., 1] / np.where(s > 0, s, 1), 0.5).astype(np.float32)


def estimate_crosstalk(intensities: np.ndarray, n_iter: int = 4, cycles: int = 12) -> np.ndarray:
    """4 × 4 crosstalk M[observed, dye] from intensities ``[cluster, cycle, 4]`` (unit diagonal).

    The early cycles (little phasing) of each cluster are assigned to their
    brightest corrected dye; column b of M is the median ratio of each channel
    to channel b over the purest quarter of the observations of dye b.
    """
    y = intensities[:, : min(cycles, intensities.shape[1])].reshape(-1, 4).astype(np.float64)
    y = y[(y.max(axis=1) > 0)]
    M = np.eye(4)
    for _ in range(n_iter):
        x = y @ np.linalg.inv(M).T
        call = x.argmax(axis=1)
        chas = chastity_of(x)
        newM = np.eye(4)
        for b in range(4):
            sel = (call == b) & (y[:, b] > 0)
            if sel.sum() < 20:
                continue
            pure = sel & (chas >= np.quantile(chas[sel], 0.5))
            ratios = y[pure] / y[pure, b][:, None]
            newM[:, b] = np.median(ratios, axis=0)
            newM[b, b] = 1.0
        M = np.clip(newM, 0, None)
    return M


#: Tikhonov weight of the phasing deconvolution (chosen on simulated tiles, seeds 101-102)
PHASING_REGULARISATION = 0.1


def _phase_correct(x: np.ndarray, p: float, q: float, lam: float = PHASING_REGULARISATION) -> np.ndarray:
    """Undo phasing: X = (PᵀP + λI)⁻¹ Pᵀ Y over the cycle axis (λ = 0: plain inversion).

    The plain inverse of P also moves the neighbouring cycles' noise into
    each cycle (up to t·p of it late in the run); the small ridge term trades a
    little residual phasing for much less of that noise.
    """
    if not (p or q):
        return x
    T = x.shape[1]
    P = phasing_matrix(T, p, q, T)
    A = np.linalg.solve(P.T @ P + lam * np.eye(T), P.T) if lam else np.linalg.inv(P)
    return np.einsum("tk,nkc->ntc", A, x)


def estimate_phasing(x: np.ndarray, min_cycles: int = 6) -> tuple:
    """(phasing, prephasing) per cycle from the leak of neighbouring bases' signal.

    ``x``: crosstalk-corrected intensities ``[cluster, cycle, 4]``. With the
    calls of a first pass, the share of cycle t's signal in the channel of
    the *previous* base (where the previous, current and next bases differ),
    relative to the current base's, grows with t as lagging strands
    accumulate (≈ t·p), and the share of the *next* base as leading strands
    do (≈ t·q). (p, q) are fitted by least squares to the exact ratios of
    the phasing matrix, each curve with a free constant that absorbs
    residual crosstalk.
    Bright clusters with a clean first pass are used. Returns (0, 0) for
    fewer than ``min_cycles`` cycles.
    """
    T = x.shape[1]
    if T < min_cycles:
        return 0.0, 0.0
    xn = _scale(x)  # scaling only: subtracting an "off" level would remove part of the leak measured here
    call = xn.argmax(axis=2)
    good = chastity_of(xn)[:, : min(T, 25)].mean(axis=1)
    sel = good >= np.quantile(good, 0.5)
    xs, cs = np.clip(xn[sel], 0, None), call[sel]
    t_idx, lag, lead = [], [], []
    rows = np.arange(len(xs))
    for t in range(1, T - 1):
        prev, cur, nxt = cs[:, t - 1], cs[:, t], cs[:, t + 1]
        ok = (prev != cur) & (nxt != cur) & (prev != nxt)
        if ok.sum() < 20:
            continue
        own = max(float(xs[rows[ok], t, cur[ok]].mean()), 1e-9)  # a ratio of means: unbiased by the noise of the own base
        t_idx.append(t + 1)
        lag.append(float(xs[rows[ok], t, prev[ok]].mean()) / own)
        lead.append(float(xs[rows[ok], t, nxt[ok]].mean()) / own)
    if len(t_idx) < 3:
        return 0.0, 0.0
    t_idx = np.asarray(t_idx, int)
    lag, lead = np.asarray(lag), np.asarray(lead)
    # the model's ratios (previous / current and next / current base) from the phasing matrix, plus a
    # constant each (residual crosstalk); least squares over a grid, then a finer grid around the best
    rows, cols = t_idx - 1, t_idx - 1

    def misfit(p, q):
        P = phasing_matrix(T, p, q, T + 2)
        own = np.maximum(P[rows, cols], 1e-12)
        r_lag = np.where(cols > 0, P[rows, np.maximum(cols - 1, 0)], 0.0) / own
        r_lead = P[rows, cols + 1] / own
        a = lag - r_lag
        b = lead - r_lead
        return float(((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum())

    best = min(((misfit(p, q), p, q) for p in np.arange(0, 0.0301, 0.001) for q in np.arange(0, 0.0301, 0.001)))
    _, p0, q0 = best
    best = min(((misfit(p, q), p, q) for p in np.arange(max(0, p0 - 0.001), p0 + 0.00101, 0.0001)
                for q in np.arange(max(0, q0 - 0.001), q0 + 0.00101, 0.0001)))
    return float(best[1]), float(best[2])


def pass_filter(chastity: np.ndarray, threshold: float = CHASTITY_THRESHOLD, cycles: int = PF_CYCLES, max_fails: int = PF_MAX_FAILS) -> np.ndarray:
    """Illumina's chastity filter: False for clusters with more than ``max_fails`` of the first ``cycles`` below ``threshold``."""
    return (chastity[:, :cycles] < threshold).sum(axis=1) <= max_fails


def call_intensities(intensities: np.ndarray, positions: Optional[pd.DataFrame] = None, crosstalk: Optional[np.ndarray] = None,
                     phasing: Optional[float] = None, prephasing: Optional[float] = None, correct_phasing: bool = True,
                     progress: Optional[ProgressCallback] = None, cancel: Any = None) -> Calls:
    """Call bases from cluster intensities ``[cluster, cycle, 4]`` (steps 4–7 of the module docstring).

    Parameters
    ----------
    intensities : float [cluster, cycle, 4]
        Channels A, C, G, T; background already subtracted.
    positions : DataFrame, optional
        ``x, y`` per cluster (kept in the outputs).
    crosstalk, phasing, prephasing : optional
        Fixed values instead of estimates (e.g. from another tile).
    correct_phasing : bool
        False skips steps 5 (for comparisons).

    Raises
    ------
    BioidInputError
        Wrong shape, no clusters, NaN values.
    """
    x = np.asarray(intensities, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 4:
        raise BioidInputError(f"intensities must be [cluster, cycle, 4 channels], got shape {x.shape}")
    if len(x) == 0:
        raise BioidInputError("no clusters to call")
    if not np.isfinite(x).all():
        raise BioidInputError("the intensities hold NaN or infinite values")
    report(progress, 0, 4, "crosstalk")
    M = np.asarray(crosstalk, float) if crosstalk is not None else estimate_crosstalk(x)
    xc = x @ np.linalg.inv(M).T
    check_cancel(cancel)
    report(progress, 1, 4, "phasing")
    if correct_phasing:
        if phasing is None or prephasing is None:
            phasing, prephasing = estimate_phasing(xc)
        xc = _phase_correct(xc, phasing, prephasing)
    else:
        phasing = prephasing = 0.0
    check_cancel(cancel)
    report(progress, 2, 4, "normalising")
    xc = _normalise(xc)
    bases = xc.argmax(axis=2).astype(np.uint8)
    chas = chastity_of(xc)
    pf = pass_filter(chas)
    report(progress, 4, 4, "called")
    pos = positions.reset_index(drop=True) if positions is not None else pd.DataFrame({"x": np.zeros(len(x)), "y": np.arange(len(x), dtype=float)})
    return Calls(bases, chas, xc.astype(np.float32), np.asarray(intensities, np.float32), pf, pos, M, float(phasing), float(prephasing))


def _scale(x: np.ndarray, n_iter: int = 2) -> np.ndarray:
    """Per cycle and channel: divide by the median of the channel over the clusters called that base."""
    x = x.copy()
    for _ in range(n_iter):
        call = x.argmax(axis=2)
        for t in range(x.shape[1]):
            for c in range(4):
                v = x[call[:, t] == c, t, c]
                if len(v) >= 10:
                    x[:, t, c] /= max(np.median(v), 1e-9)
    return x


def _normalise(x: np.ndarray, n_iter: int = 3) -> np.ndarray:
    """Per cycle and channel: map the channel's "off" level to 0 and its "on" level to 1.

    "on" = median over the clusters called that base at that cycle, "off" =
    median over the others (a raised baseline of one channel, as real runs
    show in some cycles, otherwise draws calls to it); iterated with the calls.
    """
    x = x.copy()
    for _ in range(n_iter):
        call = x.argmax(axis=2)
        for t in range(x.shape[1]):
            for c in range(4):
                on_sel = call[:, t] == c
                if on_sel.sum() < 5 or (~on_sel).sum() < 5:
                    continue
                on, off = np.median(x[on_sel, t, c]), np.median(x[~on_sel, t, c])
                if on - off > 1e-9:
                    x[:, t, c] = (x[:, t, c] - off) / (on - off)
    return x


def call_stack(stack: np.ndarray, sigma: Optional[float] = None, detection_threshold: Optional[float] = None, correct_phasing: bool = True,
               progress: Optional[ProgressCallback] = None, cancel: Any = None) -> Calls:
    """Call every cluster of a cycle stack ``[cycle, 4, y, x]`` (the whole classical pipeline).

    Parameters
    ----------
    stack : array [cycle, 4, y, x]
        Channels A, C, G, T (any real dtype).
    sigma : float, optional
        PSF σ in px (default from FWHM 2.2 px, the instrument's measured spot size).
    detection_threshold : float, optional
        Minimum matched-filter peak height (counts); default Otsu on the log heights.

    Returns
    -------
    Calls
        ``info`` holds the registration ``shifts`` [cycle, channel, 2] (px).

    Raises
    ------
    BioidInputError
        Not a [cycle, 4, y, x] stack, NaNs, or no cluster found.
    Cancelled
    """
    stack = validate_stack(stack)
    sigma = sigma or 2.2 / (2 * np.sqrt(2 * np.log(2)))
    T = stack.shape[0]
    total = 2 * T + 6

    def sub(offset):
        return lambda d, t, m="": report(progress, offset + d, total, m)

    report(progress, 0, total, "registering cycles and channels")
    shifts = register_stack(stack)
    check_cancel(cancel)
    report(progress, 2, total, "detecting clusters")
    centres = detect_clusters(stack, shifts, sigma, threshold=detection_threshold)
    if len(centres) == 0:
        raise BioidInputError("no clusters found in the stack (is it empty or all background?)")
    raw = extract_intensities(stack, centres, shifts, sigma, progress=sub(2), cancel=cancel)
    calls = call_intensities(raw, centres, correct_phasing=correct_phasing, progress=lambda d, t, m="": report(progress, 2 + T + d, total, m), cancel=cancel)
    calls.info["shifts"] = shifts
    calls.info["sigma_px"] = sigma
    report(progress, total, total, f"{len(centres)} clusters called")
    return calls
