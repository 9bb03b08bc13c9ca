"""In-situ sequencing (ISS) decoding: spots read over a few cycles, barcodes to genes (METHODS.md §3).

Pipeline
    1. Spots: local maxima of the anchor channel's max projection over cycles
       (background removed, Gaussian matched filter), height above an Otsu
       threshold of the log heights of all maxima.
    2. Intensities of the four base channels at each spot, per cycle
       (background-subtracted, matched filter, bilinear read-out).
    3. Per cycle and channel normalisation (the dyes differ ~10× in
       brightness): each channel divided by the median of its brightest
       quarter over the spots (its "on" level); crosstalk estimated from the
       data and inverted (as :mod:`.classical`).
    4. Per cycle the brightest channel; a spot's barcode is its bases over the
       cycles; its quality is its lowest chastity over the cycles times the log
       of its anchor height (purity and brightness, the two usual predictors
       of a call's reliability; the combination was chosen on the real tile
       against min chastity alone, mean chastity and anchor height alone).
    5. Decoding through the codebook; the false-discovery rate of the decoded
       spots is estimated from the non-codebook barcodes: a wrong barcode lands
       in the codebook with probability |codebook| / (4^cycles − |codebook|)
       relative to landing outside it, so expected false hits = non-codebook
       count × |codebook| / (4^cycles − |codebook|). Spots are ranked by quality
       and the largest set with estimated FDR ≤ ``fdr`` is reported.

The naive baseline (:func:`naive_decode`) reads the raw pixel at each anchor
maximum and takes each cycle's brightest channel.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import BioidInputError
from .classical import _background, chastity_of, estimate_crosstalk
from .io import BASES, validate_stack


def detect_spots(anchor: np.ndarray, sigma: float = 1.0, min_distance: int = 2) -> pd.DataFrame:
    """Spots on an anchor image ``[y, x]`` → DataFrame ``x, y, peak`` (px)."""
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu

    img = anchor.astype(np.float32)
    smooth = ndimage.gaussian_filter(img - _background(img), sigma)
    peaks = peak_local_max(smooth, min_distance=min_distance, exclude_border=2)
    h = smooth[peaks[:, 0], peaks[:, 1]]
    if len(h) == 0:
        return pd.DataFrame({"x": [], "y": [], "peak": []})
    logs = np.log(np.clip(h, 1e-3, None))
    keep = h > np.exp(threshold_otsu(logs))
    return pd.DataFrame({"x": peaks[keep, 1].astype(float), "y": peaks[keep, 0].astype(float), "peak": h[keep]})


def spot_intensities(stack: np.ndarray, spots: pd.DataFrame, sigma: float = 1.0) -> np.ndarray:
    """float32 ``[spot, cycle, 4]`` of the base channels at each spot (background-subtracted, matched filter)."""
    coords = spots[["y", "x"]].to_numpy(float).T
    out = np.zeros((len(spots), stack.shape[0], 4), np.float32)
    for t in range(stack.shape[0]):
        for c in range(4):
            img = stack[t, c].astype(np.float32)
            out[:, t, c] = ndimage.map_coordinates(ndimage.gaussian_filter(img - _background(img), sigma), coords, order=1)
    return out


def _normalise_channels(x: np.ndarray) -> np.ndarray:
    """Per cycle and channel: divide by the median of the channel's brightest quarter over the spots."""
    x = np.clip(x, 0, None).astype(np.float64)
    k = max(1, len(x) // 4)
    on = np.median(np.sort(x, axis=0)[-k:], axis=0)
    return x / np.maximum(on, 1e-9)[None]


def fdr_table(quality: np.ndarray, in_codebook: np.ndarray, codebook_size: int, n_cycles: int) -> pd.DataFrame:
    """Estimated FDR of the spots with quality ≥ each threshold (rows sorted by descending quality)."""
    order = np.argsort(-quality, kind="stable")
    hits = np.cumsum(in_codebook[order])
    non = np.cumsum(~in_codebook[order])
    expected_false = non * codebook_size / (4**n_cycles - codebook_size)
    fdr = np.where(hits > 0, expected_false / np.maximum(hits, 1), 1.0)
    return pd.DataFrame({"quality": quality[order], "hits": hits, "non_codebook": non, "fdr": fdr})


def _summary(barcodes, quality, codebook, n_cycles, fdr) -> dict:
    in_cb = np.array([b in codebook for b in barcodes], bool)
    tab = fdr_table(quality, in_cb, len(codebook), n_cycles)
    ok = np.flatnonzero(tab["fdr"].to_numpy() <= fdr)
    best = int(ok[np.argmax(tab["hits"].to_numpy()[ok])]) if len(ok) else None
    n = len(barcodes)
    exp_false_all = (~in_cb).sum() * len(codebook) / (4**n_cycles - len(codebook))
    return {
        "spots": n,
        "in_codebook": int(in_cb.sum()),
        "codebook_share": float(in_cb.mean()) if n else 0.0,
        "fdr_all": float(exp_false_all / max(in_cb.sum(), 1)),
        "target_fdr": fdr,
        "decoded_at_target_fdr": int(tab["hits"].iloc[best]) if best is not None else 0,
        "quality_threshold": float(tab["quality"].iloc[best]) if best is not None else None,
        "fdr_at_threshold": float(tab["fdr"].iloc[best]) if best is not None else None,
    }, in_cb, (quality >= tab["quality"].iloc[best]) if best is not None else np.zeros(n, bool)


def learned_spot_probabilities(stack: np.ndarray, spots: pd.DataFrame, caller: str, model=None) -> np.ndarray:
    """Base probabilities float32 ``[spot, cycle, 4]`` from a learned caller at given spots.

    The stack's 4 base channels ``[cycle, 4, y, x]`` are taken as registered
    (as :func:`decode_iss` does), normalised like the callers' training input
    (:func:`.unet.normalised_stack`) and read at the spots' pixels: the U-Net's
    probabilities, or the multi-task network's centre classes renormalised over
    A/C/G/T (:mod:`.multitask`; summing them over the 3 × 3 pixels around the
    spot decoded fewer spots into the codebook on the real tile, 34 % against 39 %). ``model``: a path or a loaded caller (default
    the shipped one).
    """
    from .unet import normalised_stack, pixel_indices

    T = stack.shape[0]
    norm = normalised_stack(stack[:, :4], np.zeros((T, 4, 2)))
    yx = pixel_indices(spots, norm.shape[2:])
    if caller == "unet":
        from .unet import UNetCaller, default_unet_path

        net = UNetCaller.resolve(model, default_unet_path())
        return net.probabilities(norm, yx)
    if caller == "multitask":
        from .multitask import MultiTaskCaller, default_multitask_path
        from .unet import _window

        net = MultiTaskCaller.resolve(model, default_multitask_path())
        out = np.zeros((len(yx), T, 4), np.float32)
        for t in range(T):
            _, p = net.predict(_window(norm, t, net.config.cycles))
            out[:, t] = p[1:, yx[:, 0], yx[:, 1]].T
        return out / np.maximum(out.sum(2, keepdims=True), 1e-9)
    raise BioidInputError(f"unknown caller {caller!r}: use classical, unet or multitask")


def decode_iss(stack: np.ndarray, codebook: Dict[str, str], anchor_channel: Optional[int] = 4, fdr: float = 0.05,
               caller: str = "classical", model=None) -> tuple:
    """Decode an ISS stack ``[cycle, 4 or 5, y, x]`` (channels A, C, G, T[, anchor]) through a codebook.

    Parameters
    ----------
    stack : array [cycle, channel, y, x]
    codebook : {barcode: gene}
        Barcodes of one base per cycle.
    anchor_channel : int or None
        Index of the anchor channel; None detects spots on the base channels' maximum.
    fdr : float
        Target false-discovery rate of the reported genes.
    caller : "classical", "unet" or "multitask"
        Who calls each spot's bases: the steps 2–4 above, or a learned caller's
        probabilities at the same spots (:func:`learned_spot_probabilities`;
        ``model`` as there); the quality is formed the same way.

    Returns
    -------
    (spots, summary)
        ``spots``: DataFrame ``x, y`` (px), ``barcode``, ``quality`` (min
        chastity over cycles × log anchor height), ``gene`` (the codebook's, or empty),
        ``in_codebook``, ``accepted`` (quality ≥ the FDR threshold and in the
        codebook). ``summary``: see :func:`_summary`.

    Raises
    ------
    BioidInputError
        A stack that is not [cycle, 4|5, y, x], or barcodes of another length than the cycles.
    """
    stack = validate_stack(stack, channels=(4, 5))
    T = stack.shape[0]
    if {len(b) for b in codebook} != {T}:
        raise BioidInputError(f"the codebook's barcodes have {sorted({len(b) for b in codebook})} bases but the stack has {T} cycles")
    anchor = stack[:, anchor_channel].max(axis=0) if anchor_channel is not None and stack.shape[1] > 4 else stack[:, :4].max(axis=(0, 1))
    spots = detect_spots(anchor)
    if len(spots) == 0:
        raise BioidInputError("no spots found on the anchor channel")
    if caller == "classical":
        x = _normalise_channels(spot_intensities(stack, spots))
        M = estimate_crosstalk(x, cycles=T)
        xc = np.clip(x @ np.linalg.inv(M).T, 0, None)
    else:
        xc = learned_spot_probabilities(stack, spots, caller, model)
        M = np.full((4, 4), np.nan)
    calls = xc.argmax(axis=2)
    quality = chastity_of(xc).min(axis=1) * np.log(np.maximum(spots["peak"].to_numpy(float), 1.0 + 1e-9))
    barcodes = ["".join(BASES[b] for b in row) for row in calls]
    summary, in_cb, above = _summary(barcodes, quality, codebook, T, fdr)
    summary["crosstalk"] = M.round(4).tolist() if caller == "classical" else None
    summary["caller"] = caller
    out = spots[["x", "y"]].copy()
    out["barcode"] = barcodes
    out["quality"] = quality
    out["gene"] = [codebook.get(b, "") for b in barcodes]
    out["in_codebook"] = in_cb
    out["accepted"] = in_cb & above
    return out, summary


def naive_decode(stack: np.ndarray, codebook: Dict[str, str], anchor_channel: int = 4, fdr: float = 0.05) -> tuple:
    """Baseline: the raw pixel at each anchor maximum, each cycle's brightest channel; ranked by raw chastity."""
    stack = validate_stack(stack, channels=(5,))
    T = stack.shape[0]
    spots = detect_spots(stack[:, anchor_channel].max(axis=0))
    y, x = spots["y"].to_numpy(int), spots["x"].to_numpy(int)
    raw = stack[:, :4, y, x].astype(np.float64).transpose(2, 0, 1)  # [spot, cycle, 4]
    barcodes = ["".join(BASES[b] for b in row) for row in raw.argmax(axis=2)]
    quality = chastity_of(raw).min(axis=1)
    summary, in_cb, above = _summary(barcodes, quality, codebook, T, fdr)
    out = spots[["x", "y"]].copy()
    out["barcode"], out["quality"], out["in_codebook"] = barcodes, quality, in_cb
    return out, summary
