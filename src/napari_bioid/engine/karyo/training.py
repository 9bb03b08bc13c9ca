"""Training and evaluating the polarity classifier on what the whole chain produces.

Crops reach the classifier at any angle: the chain first turns them upright
(:func:`~.rotate.upright_angle`), which leaves the short arm up or down
depending on the input angle, with the small residual tilt of the
projection-width search. So training examples are made exactly like that:
each crop (cut standing with its p-arm up) is rotated by a random angle θ,
made upright by the chain, and labelled "up" when the total rotation θ + a
(input → chain output) keeps the p-arm up, i.e. cos(θ + a) > 0.

Examples are stored canonically (p-arm up, uint8 squares of the input size);
training draws the class at random per example and turns "down" ones by 180°,
plus the reference's horizontal flip with p = 0.5. Evaluation feeds each
held-out crop once, at its random angle, through the whole chain.

Recipe (METHODS.md §2, the reference): SGD momentum 0.9, weight decay 5e-4,
lr 0.01, batch 32, lr × 0.1 at 60 % and 90 % of the epochs, cross-entropy.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BioidInputError
from ..progress import ProgressCallback, check_cancel, report
from ..train.optim import pick_device, seed_everything, training_layout
from .data import Crop, read_crop, small_canvas, to_canvas, to_square
from .karyogram import ORDER
from .polarity import (DOWN, REVIEW_THRESHOLD, SMALL_CANVAS, SMALL_MAGNIFICATION, SMALL_MARGIN, SMALL_MAX_SIDE,
                       SMALL_WEIGHT, UP, PolarityModel, check_confidence)
from .shift import RANDOM_LAB, RANDOM_SHIFT, random_shift, shift_crop
from .straighten import GATE_KEYS, check_gate, gate_measures, passes, straighten_if_bent
from .rotate import background_fill, rotate_image, turned_upright


@dataclass
class ChainSet:
    """Chain outputs of a crop collection, ``variants`` random angles per crop.

    ``squares``: uint8 (N, S, S), p-arm up (canonical); ``up``: bool (N,), the
    orientation the chain itself left the crop in (the evaluation label);
    ``crop``: int (N,) index into ``crops``; rows of one crop are contiguous;
    ``straighten``: the gate of :func:`.straighten.straighten_if_bent` the
    upright crops went through before they were squared; ``small``,
    ``small_rows``, ``small_spec``: the small-crop expert's inputs
    (:meth:`.polarity.PolarityModel.small_input`, canonical) of the rows whose
    chromosome is at most ``small_spec[0]`` px long (``None``: not made).
    """

    squares: np.ndarray
    up: np.ndarray
    crop: np.ndarray
    crops: List[Crop]
    variants: int
    straighten: Optional[dict] = None  # the straightening gate the squares went through (None: none)
    small: Optional[np.ndarray] = None  # uint8 (M, C, C): to_canvas of the small rows, p-arm up (canonical)
    small_rows: Optional[np.ndarray] = None  # int (M,): the rows whose chromosome is at most small_spec's max side long
    small_spec: Optional[tuple] = None  # (max side px, magnification, canvas px, margin px) the canvases were made with

    def __len__(self) -> int:
        return len(self.squares)

    @property
    def chromosome(self) -> np.ndarray:
        return np.array([self.crops[i].chromosome for i in self.crop])


def _chain_upright(image: np.ndarray, theta: float):
    """``(upright crop, up, upright angle)`` of a p-arm-up crop fed to the chain at input angle ``theta``."""
    # the crop as a lab would cut it at angle θ: its own background all round (white for ours)
    upright, a = turned_upright(image, theta)
    return upright, bool(np.cos(np.deg2rad(theta + a)) > 0), a


#: the small-crop expert's input as :class:`ChainSet` stores it: (max chromosome length px, magnification, canvas px,
#: margin px), see :meth:`.polarity.PolarityModel.small_input`
SMALL_SPEC = (SMALL_MAX_SIDE, SMALL_MAGNIFICATION, SMALL_CANVAS, SMALL_MARGIN)

#: version of the classifier's inputs (data.to_square, to_canvas) in cached chain sets; 2: centred to the half pixel
INPUT_VERSION = 2


def _chain_canonical(image: np.ndarray, theta: float, straighten: Optional[dict]):
    """``(upright crop turned p-arm up, up, upright angle)``: see :func:`chain_example`."""
    upright, up, a = _chain_upright(image, theta)
    upright, _ = straighten_if_bent(upright, straighten)
    return (upright if up else upright[::-1, ::-1]), up, a


def chain_example(image: np.ndarray, theta: float, size: int, straighten: Optional[dict] = None):
    """One crop through the chain at input angle ``theta`` (degrees, counter-clockwise).

    The chain brings the crop's background to white first
    (:func:`.rotate.normalise_crop`), as :func:`.orient.orient_images` does;
    ``straighten``: the gate of :func:`.straighten.straighten_if_bent` that the
    classifier's input goes through (``None``: never straightened). Returns
    ``(square, up, upright_angle)``: the chain's upright output turned
    p-arm up and resized to a uint8 ``size``² square, whether the chain left
    it up, and the upright angle it found.
    """
    canonical, up, a = _chain_canonical(image, theta, straighten)
    return to_square(canonical, size), up, a


#: training augmentation modes of :func:`build_chain_set`
AUGMENT_MODES = ("none", "shift", "lab")


def augment_mode(augment: Union[bool, str, None]) -> str:
    """``augment`` of :func:`build_chain_set` as one of :data:`AUGMENT_MODES` (``True`` = "shift")."""
    mode = {False: "none", None: "none", True: "shift"}.get(augment, augment) if not isinstance(augment, str) else augment
    if mode not in AUGMENT_MODES:
        raise BioidInputError(f"unknown augmentation {augment!r} (one of {', '.join(AUGMENT_MODES)})")
    return mode


def variant_table(mode: str, v: int) -> Optional[dict]:
    """The :func:`.shift.random_shift` table of a crop's variant ``v`` (``None``: the crop as read).

    Even variants stay as read; odd ones get :data:`.shift.RANDOM_SHIFT`, and
    with ``mode="lab"`` every second odd one (3, 7, …) :data:`.shift.RANDOM_LAB`.
    """
    if mode == "none" or v % 2 == 0:
        return None
    return RANDOM_LAB if mode == "lab" and v % 4 == 3 else RANDOM_SHIFT


def _canvas_if_small(canonical: np.ndarray, small: Optional[tuple]) -> Optional[np.ndarray]:
    """:meth:`.polarity.PolarityModel.small_input` of an upright crop (already straightened) for the spec ``small``."""
    return None if small is None else small_canvas(canonical, small[0], small[3], small[2], small[1])


def _chunk(args):
    paths, thetas, size, shift, mode, seed, gate, small = args
    out = []
    rng = np.random.default_rng(seed)
    for path, th in zip(paths, thetas):
        img = read_crop(path)
        if shift is not None:
            img = shift_crop(img, shift[0], shift[1], rng)
        for v, t in enumerate(th):
            table = variant_table(mode, v)
            src = img if table is None else random_shift(img, rng, table)
            canonical, up, _ = _chain_canonical(src, t, gate)
            out.append((to_square(canonical, size), up, _canvas_if_small(canonical, small)))
    return out


def build_chain_set(crops: Sequence[Crop], size: int = 224, variants: int = 1, seed: int = 0, workers: int = 1,
                    progress: Optional[ProgressCallback] = None, cancel: Any = None, shift: Optional[tuple] = None,
                    augment: Union[bool, str] = False, straighten: Optional[dict] = None,
                    small: Optional[tuple] = SMALL_SPEC) -> ChainSet:
    """Read every crop and run it through the chain at ``variants`` random angles in [0°, 360°).

    ``shift``: ``(kind, level)`` of :func:`.shift.shift_crop`, applied to each
    crop (standing p-arm up) before the chain: the domain-shift test sets.
    ``augment``: ``True`` or ``"shift"``: every second variant of a crop
    (variants 1, 3, …) is first changed by :func:`.shift.random_shift`
    (another lab's size, optics, contrast, noise, JPEG, background), the
    others stay as read; ``"lab"``: as "shift", but variants 3, 7, … get a
    whole other lab at once (:data:`.shift.RANDOM_LAB`), see :func:`variant_table`.
    ``straighten``: gate of :func:`.straighten.straighten_if_bent` applied to
    every upright crop before it is squared (as the model that carries the
    gate does at inference). ``small``: ``(max side, magnification, canvas,
    margin)``: the crops whose chromosome is at most that long also get the
    small-crop expert's canvas (:data:`SMALL_SPEC` by default; ``None``: none).

    Memory: N · variants · size² bytes (22,500 crops at 224² ≈ 1.1 GB per variant).
    ``workers`` > 1 uses that many processes.

    Raises
    ------
    BioidInputError
        No crops, an unreadable crop, or an unknown ``augment``.
    """
    mode = augment_mode(augment)
    crops = list(crops)
    if not crops:
        raise BioidInputError("no crops to build a training set from")
    rng = np.random.default_rng(seed)
    thetas = rng.uniform(0.0, 360.0, size=(len(crops), variants))
    squares = np.empty((len(crops) * variants, size, size), np.uint8)
    up = np.empty(len(crops) * variants, bool)
    step = 256
    small = None if small is None else (int(small[0]), float(small[1]), int(small[2]), int(small[3]))
    jobs = [([c.path for c in crops[i : i + step]], thetas[i : i + step], size, shift, mode, seed * 100_003 + i, straighten, small)
            for i in range(0, len(crops), step)]
    canvases, small_rows = [], []
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(_chunk, jobs) if pool else map(_chunk, jobs)
        row = 0
        for res in results:
            check_cancel(cancel)
            for sq, u, canvas in res:
                squares[row], up[row] = sq, u
                if canvas is not None:
                    canvases.append(canvas)
                    small_rows.append(row)
                row += 1
            report(progress, row, len(squares), "running crops through the chain")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return ChainSet(squares, up, np.repeat(np.arange(len(crops)), variants), crops, variants, straighten,
                    *_small_arrays(canvases, small_rows, small))


def _small_arrays(canvases: list, rows: list, small: Optional[tuple]):
    """``(small, small_rows, small_spec)`` of a :class:`ChainSet`."""
    if small is None:
        return None, None, None
    stacked = np.stack(canvases) if canvases else np.zeros((0, small[2], small[2]), np.uint8)
    return stacked, np.asarray(rows, dtype=np.int64), small


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE: Σ_b (n_b / n) · |accuracy_b − mean confidence_b| over equal-width confidence bins (Guo et al., ICML 2017)."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    if not len(confidence):
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


#: straightening gates :func:`choose_straighten_gate` tries (those at least as strict as the training gate)
GATE_GRID = {"min_bend": (0.09, 0.1, 0.12, 0.14, 0.16, 0.2), "min_elongation": (3.0, 4.0, 5.0, 6.0, 7.0),
             "min_length_ratio": (1.0, 1.05, 1.1, 1.2, 1.3)}


def _gate_chunk(args):
    paths, thetas, size, floor = args
    out = []
    for path, th in zip(paths, thetas):
        img = read_crop(path)
        for t in th:
            upright, up, _ = _chain_upright(img, t)
            measures, straight = gate_measures(upright, floor)
            out.append((to_square(upright, size), None if straight is None else to_square(straight, size), up, measures))
    return out


def choose_straighten_gate(model: PolarityModel, crops: Sequence[Crop], floor: dict, variants: int = 8, seed: int = 111,
                           workers: int = 1, grid: Optional[dict] = None, device: Optional[str] = None,
                           progress: Optional[ProgressCallback] = None, cancel: Any = None,
                           mirror: bool = True) -> Tuple[Optional[dict], dict]:
    """The straightening gate with the fewest polarity errors on validation crops, or ``None`` if none beats no gate.

    Every crop runs through the chain at ``variants`` random angles (seed
    ``seed``); each upright crop is classified as it is and, where
    :func:`.straighten.gate_measures` straightened it, straightened, with
    ``model`` (mirror averaging on while choosing unless ``mirror`` is False,
    e.g. for an ensemble that runs without it). Gates are the
    combinations of ``grid`` (default :data:`GATE_GRID`) at least as strict
    as ``floor`` (the training gate, which is tried too); ties go to the gate
    that straightens fewer crops. Returns ``(gate, report)`` with ``report``
    = {"crops", "variants", "errors_without", "errors_with", "straightened",
    "training_gate", "best_five"} (errors and straightened crops per gate).
    The crops are used as read (no shift augmentation). Memory: about
    2 · len(crops) · variants · size² bytes (1,564 crops × 8 at 224² ≈ 1.3 GB).

    Raises
    ------
    BioidInputError
        No crops, or ``floor`` lacks one of the gate's keys.
    """
    import itertools

    crops = list(crops)
    if not crops:
        raise BioidInputError("no validation crops to choose the straightening gate on")
    floor = check_gate(floor)
    grid = GATE_GRID if grid is None else grid
    thetas = np.random.default_rng(seed).uniform(0.0, 360.0, size=(len(crops), variants))
    step = 64
    jobs = [([c.path for c in crops[i : i + step]], thetas[i : i + step], model.size, float(floor["min_bend"]))
            for i in range(0, len(crops), step)]
    rows: list = []
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for res in (pool.map(_gate_chunk, jobs) if pool else map(_gate_chunk, jobs)):
            check_cancel(cancel)
            rows.extend(res)
            report(progress, len(rows), len(crops) * variants, "choosing the straightening gate")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    up = np.array([r[2] for r in rows])
    has = np.array([r[1] is not None for r in rows])
    m = {k: np.array([r[3][k] for r in rows]) for k in ("bend", "elongation", "length_ratio")}
    kept = model.mirror
    model.mirror = bool(mirror)
    try:
        p = model.p_up_squares(np.stack([r[0] for r in rows]), device=device, cancel=cancel)
        ps = p.copy()
        if has.any():
            ps[has] = model.p_up_squares(np.stack([r[1] for r in rows if r[1] is not None]), device=device, cancel=cancel)
    finally:
        model.mirror = kept
    errors_without = int(np.sum((p >= 0.5) != up))
    candidates = [floor] + [dict(zip(GATE_KEYS, map(float, g))) for g in itertools.product(*(grid[k] for k in GATE_KEYS))
                            if all(v >= floor[k] for k, v in zip(GATE_KEYS, g))]
    tried = []
    for gate in candidates:
        sel = has & passes(m, gate)
        errors = int(np.sum((np.where(sel, ps, p) >= 0.5) != up))
        tried.append({"gate": gate, "errors": errors, "straightened": int(sel.sum())})
    best = min(tried, key=lambda t: (t["errors"], t["straightened"]))
    report_ = {"crops": len(rows), "variants": variants, "errors_without": errors_without, "errors_with": best["errors"],
               "straightened": best["straightened"], "training_gate": next(t for t in tried if t["gate"] == floor),
               "best_five": sorted(tried, key=lambda t: (t["errors"], t["straightened"]))[:5]}
    return (best["gate"] if best["errors"] < errors_without else None), report_


def chain_inputs(data: ChainSet) -> np.ndarray:
    """The squares as the chain leaves them: uint8 (N, S, S), turned 180° where ``data.up`` is False."""
    x = data.squares.copy()
    x[~data.up] = x[~data.up, ::-1, ::-1]
    return x


def chain_small_inputs(model: PolarityModel, data: ChainSet) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``(canvases, rows)``: the small-crop expert's inputs of ``data`` as the chain leaves them (turned 180° where not up).

    ``(None, None)`` when ``model`` has no small-crop expert.

    Raises
    ------
    BioidInputError
        ``model`` has an expert but ``data`` was built without its canvases or
        with another max side, magnification or canvas.
    """
    if model.small_expert is None:
        return None, None
    spec = (model.small_max_side, model.small_magnification, model.small_expert.size, model.small_margin)
    if data.small is None or tuple(data.small_spec) != spec:
        raise BioidInputError(f"the model's small-crop expert takes canvases {spec} (max side, magnification, canvas, margin) but "
                              f"these chain outputs have {data.small_spec}: build them with small={spec}")
    x = data.small.copy()
    down = ~data.up[data.small_rows]
    x[down] = x[down, ::-1, ::-1]
    return x, data.small_rows


def chain_log_odds(model: PolarityModel, data: ChainSet, batch_size: int = 128, progress: Optional[ProgressCallback] = None,
                   cancel: Any = None, device: Optional[str] = None) -> np.ndarray:
    """Uncalibrated log-odds (float64, (N,)) of ``data`` as the chain feeds the model: main networks and small-crop expert
    (:meth:`.polarity.PolarityModel.log_odds_chain`), on :func:`chain_inputs` and :func:`chain_small_inputs`.

    Raises
    ------
    BioidInputError
        See :func:`chain_small_inputs`.
    """
    canvases, rows = chain_small_inputs(model, data)
    return model.log_odds_chain(chain_inputs(data), canvases, rows, batch_size, progress, cancel, device)


def evaluate_polarity(model: PolarityModel, data: ChainSet, batch_size: int = 128, device: Optional[str] = None,
                      progress: Optional[ProgressCallback] = None, cancel: Any = None, review_threshold: float = REVIEW_THRESHOLD,
                      p_up: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Polarity accuracy of ``model`` on chain outputs, overall and per chromosome class.

    Each row is fed as the chain left it (p-arm up if ``data.up`` else turned
    180°). "Positive" = up, as in the reference's TP/FP/TN/FN. Returns a
    JSON-ready dict: ``accuracy``, ``n``, ``tp``, ``fp``, ``tn``, ``fn``,
    ``per_chromosome`` {name: {"n", "accuracy"}}, ``weakest`` (the three
    classes with the lowest accuracy), ``ece``, ``errors_below_review`` (share
    of the errors whose confidence is under ``review_threshold``), ``flagged``
    (share of all crops under it). ``p_up``: the model's probabilities for
    ``data`` as fed here (:func:`chain_inputs`), when already computed.

    Raises
    ------
    BioidInputError
        ``model`` straightens bent chromosomes but ``data`` was built with
        another gate (or none), so it would not be fed what the chain feeds it.
    """
    if model.straighten is not None and data.straighten != model.straighten:
        raise BioidInputError(f"the model straightens bent chromosomes (gate {model.straighten}) but these chain outputs were "
                              f"built with gate {data.straighten}: build them with straighten=model.straighten")
    if p_up is None:
        p = model.calibrated(chain_log_odds(model, data, batch_size, progress, cancel, device))
    else:
        p = np.asarray(p_up)
    return polarity_metrics(p, data.up, data.chromosome, review_threshold)


def polarity_metrics(p_up: np.ndarray, truth_up: np.ndarray, chromosome: np.ndarray,
                     review_threshold: float = REVIEW_THRESHOLD) -> Dict[str, Any]:
    """The figures of :func:`evaluate_polarity` from calibrated ``p_up`` (float (N,)), whether each crop was really
    p-arm up (bool (N,)) and its chromosome class (str (N,))."""
    p, truth, chrom = np.asarray(p_up, dtype=np.float64), np.asarray(truth_up, dtype=bool), np.asarray(chromosome)
    pred = p >= 0.5
    tp, fp = int(np.sum(pred & truth)), int(np.sum(pred & ~truth))
    tn, fn = int(np.sum(~pred & ~truth)), int(np.sum(~pred & truth))
    per = {}
    for name in sorted(set(chrom), key=lambda c: (ORDER.index(c) if c in ORDER else len(ORDER), c)):
        m = chrom == name
        per[str(name)] = {"n": int(m.sum()), "accuracy": float(np.mean(pred[m] == truth[m]))}
    weakest = sorted(per, key=lambda c: per[c]["accuracy"])[:3]
    conf = np.maximum(p, 1.0 - p)
    correct = pred == truth
    low = conf < review_threshold
    return {"accuracy": float(np.mean(correct)), "n": int(len(pred)), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "per_chromosome": per, "weakest": weakest, "ece": expected_calibration_error(conf, correct),
            "errors_below_review": float(np.mean(low[~correct])) if (~correct).any() else float("nan"), "flagged": float(np.mean(low)),
            "review_threshold": review_threshold}


def lab_inputs(crops: Sequence[Crop], seed: int = 1, shift: Optional[tuple] = None) -> Tuple[List[np.ndarray], np.ndarray]:
    """``(images, thetas)``: the crops as a user hands them to the chain, for :func:`evaluate_orient`.

    Each crop (p-arm up as stored) is changed by ``shift`` (``(kind, level)``
    of :func:`.shift.shift_crop`; ``None``: as read), then turned by a random
    angle θ (degrees, counter-clockwise, float64 (N,)) on its own background.
    One ``seed`` gives the same images every time.
    """
    rng = np.random.default_rng(seed)
    images, thetas = [], rng.uniform(0.0, 360.0, len(crops))
    for c, theta in zip(crops, thetas):
        image = read_crop(c.path)
        if shift is not None:
            image = shift_crop(image, shift[0], shift[1], rng)
        images.append(rotate_image(image, theta, fill=background_fill(image)))
    return images, thetas


def evaluate_orient(model: PolarityModel, crops: Sequence[Crop], seed: int = 1, shift: Optional[tuple] = None,
                    batch_size: int = 64, progress: Optional[ProgressCallback] = None, cancel: Any = None,
                    review_threshold: float = REVIEW_THRESHOLD) -> Dict[str, Any]:
    """Polarity accuracy of the deployed chain, :func:`.orient.orient_images`, on crops at random angles.

    Unlike :func:`evaluate_polarity`, which feeds stored chain outputs, every
    crop goes through exactly what a user's crop goes through (normalisation,
    upright search, rotation, straightening, squaring, classifier, small-crop
    expert); ``crops``, ``seed`` and ``shift`` as :func:`lab_inputs`. A
    decision is right when the short arm ends up on top: cos(θ + upright
    angle) > 0 agrees with ``p_up`` ≥ 0.5. Returns the dict of
    :func:`evaluate_polarity`, plus ``p_up``, ``correct``, ``theta_deg`` (the
    input angle θ) and ``upright_angle_deg`` (the upright search's angle):
    lists, per crop.

    Raises
    ------
    BioidInputError
        No crops, or an unreadable crop.
    Cancelled
        ``cancel`` was set.
    """
    from .orient import orient_images

    crops = list(crops)
    if not crops:
        raise BioidInputError("no crops to evaluate")
    images, thetas = lab_inputs(crops, seed, shift)
    decisions = orient_images(images, model=model, batch_size=batch_size, progress=progress, cancel=cancel)
    p = np.array([d.p_up for d in decisions])
    upright = np.array([d.upright_angle_deg for d in decisions])
    truth = np.cos(np.deg2rad(thetas + upright)) > 0
    out = polarity_metrics(p, truth, np.array([c.chromosome for c in crops]), review_threshold)
    out.update(p_up=p.tolist(), correct=((p >= 0.5) == truth).tolist(), theta_deg=thetas.tolist(),
               upright_angle_deg=upright.tolist())
    return out


def train_polarity(train: ChainSet, val: Optional[ChainSet] = None, depth: int = 18, width: int = 16, epochs: int = 30,
                   batch_size: int = 32, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                   milestones: Sequence[float] = (0.6, 0.9), seed: int = 0, device: Optional[str] = None,
                   progress: Optional[ProgressCallback] = None, cancel: Any = None,
                   on_epoch: Optional[Callable[[dict], None]] = None, init: Optional[PolarityModel] = None) -> PolarityModel:
    """Train a polarity ResNet with the reference recipe on chain outputs.

    Each epoch visits every training crop once, at one of its ``variants``
    angles; the class is drawn at random (p = 0.5) and "down" examples are
    turned 180°; horizontal flip with p = 0.5. With ``val``, the weights of
    the epoch with the best validation accuracy are kept (``val`` should hold
    whole cases that are neither training nor test cases). ``on_epoch``
    receives ``{"epoch", "loss", "train_accuracy", "val_accuracy", "lr", "seconds"}``.
    ``init``: fine-tune this model's weights (its depth, width, input size and
    normalisation replace ``depth`` and ``width``; ``init`` is not changed),
    e.g. the shipped model on a lab's own crops, with a smaller ``lr``.

    Returns a :class:`PolarityModel` whose ``metrics`` hold the history and the
    validation accuracy.

    Raises
    ------
    BioidInputError
        Empty training set, squares of inconsistent size, or squares of
        another size than ``init``'s input.
    Cancelled
        ``cancel`` was set.
    """
    if len(train) == 0:
        raise BioidInputError("empty training set")
    size = train.squares.shape[1]
    rng = seed_everything(seed)
    dev = pick_device(device)
    if init is not None:
        if init.size != size:
            raise BioidInputError(f"the model to fine-tune takes {init.size}-px squares, the training set has {size}-px ones")
        model = PolarityModel(init.depth, init.width, size, init.mean, init.std, net=copy.deepcopy(init.net), members=init.members)
    else:
        model = PolarityModel(depth, width, size)
    layout = training_layout(dev, 2)
    net = model.net.to(dev, memory_format=layout)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = [max(1, int(round(m * epochs))) for m in milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=0.1)
    n_crops, k = len(train.crops), train.variants
    per_epoch = int(np.ceil(n_crops / batch_size))
    history: List[dict] = []
    best_acc, best_state = -1.0, None
    for epoch in range(epochs):
        t0 = time.perf_counter()
        net.train()
        order = rng.permutation(n_crops) * k + rng.integers(0, k, n_crops)
        losses, correct = [], 0
        for b in range(per_epoch):
            check_cancel(cancel)
            rows = np.sort(order[b * batch_size : (b + 1) * batch_size])
            sq = torch.from_numpy(train.squares[rows]).to(dev)
            y = torch.from_numpy(rng.random(len(rows)) < 0.5).to(dev)  # True = up
            flip_hw = torch.from_numpy(rng.random(len(rows)) < 0.5).to(dev)
            sq = torch.where(y[:, None, None], sq, sq.flip((1, 2)))
            sq = torch.where(flip_hw[:, None, None], sq.flip(2), sq)
            target = torch.where(y, UP, DOWN).long()
            logits = net(model.normalise(sq).contiguous(memory_format=layout))
            loss = F.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            correct += int((logits.argmax(1) == target).sum())
            report(progress, epoch * per_epoch + b + 1, epochs * per_epoch, f"epoch {epoch + 1}/{epochs} loss {np.mean(losses):.3f}")
        sched.step()
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_accuracy": correct / n_crops,
               "lr": opt.param_groups[0]["lr"], "val_accuracy": None}
        if val is not None and len(val):
            rec["val_accuracy"] = evaluate_polarity(model, val, device=str(dev), cancel=cancel)["accuracy"]
            net.train()
            if rec["val_accuracy"] >= best_acc:
                best_acc, best_state = rec["val_accuracy"], copy.deepcopy(net.state_dict())
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.to("cpu", memory_format=torch.contiguous_format).eval()
    model.metrics = {"recipe": {"optimizer": "SGD", "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                "batch_size": batch_size, "epochs": epochs, "milestones": steps, "hflip": 0.5,
                                "initial_weights": "fine-tuned" if init is not None else "random"},
                     "train_crops": n_crops, "train_cases": len({c.case for c in train.crops}),
                     "variants_per_crop": k, "history": history,
                     "best_val_accuracy": best_acc if best_state is not None else None}
    return model


def _cached_chain_set(name: str, cache_dir, crops, size: int, variants: int, seed: int, workers: int,
                      progress: Optional[ProgressCallback], cancel: Any, augment: Union[bool, str] = False,
                      straighten: Optional[dict] = None) -> ChainSet:
    """:func:`build_chain_set`, stored as ``.npz`` under ``cache_dir`` (keyed by the crop list) when given."""
    import hashlib
    from pathlib import Path

    path = None
    if cache_dir is not None:
        key = hashlib.sha1("\n".join(str(c.path) for c in crops).encode()).hexdigest()[:12]
        mode = augment_mode(augment)
        tag = {"none": "", "shift": "_aug", "lab": "_lab"}[mode]
        if straighten is not None:
            tag += "_st" + hashlib.sha1(repr(sorted(straighten.items())).encode()).hexdigest()[:6]
        tag += "_x{}m{:g}c{}p{}".format(*SMALL_SPEC) + f"_in{INPUT_VERSION}"
        path = Path(cache_dir) / f"{name}_{size}px_{variants}v{tag}_seed{seed}_{key}.npz"
        if path.is_file():
            z = np.load(path)
            return ChainSet(z["squares"], z["up"], z["crop"], list(crops), variants, straighten, z["small"], z["small_rows"],
                            SMALL_SPEC)
    data = build_chain_set(crops, size, variants, seed, workers, progress, cancel, augment=augment, straighten=straighten)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, squares=data.squares, up=data.up, crop=data.crop, small=data.small, small_rows=data.small_rows)
        tmp.replace(path)
    return data


#: validation chain outputs per crop, by augmentation mode (shifted copies of the crops where training had them)
_VAL_VARIANTS = {"none": 1, "shift": 2, "lab": 4}


def _gate(straighten: Union[dict, bool, None]) -> Optional[dict]:
    """A straightening gate option (dict, ``None`` or ``False`` = none) as :func:`.straighten.check_gate` returns it."""
    return None if straighten is False else check_gate(straighten)


def _split(data_dir, test_fraction: float, val_fraction: float, split_seed: int):
    """``(train, val, test)`` crop lists of a collection, split by case as :func:`train_from_folder` does."""
    from .data import list_crops, split_by_case

    crops = list_crops(data_dir)
    if len({c.case for c in crops}) < 3:
        raise BioidInputError(f"{data_dir}: need crops from at least 3 cases to split into train/validation/test by case")
    train_all, test = split_by_case(crops, test_fraction, seed=split_seed)
    train, val = split_by_case(train_all, val_fraction, seed=split_seed + 1)
    return train, val, test


def _split_metrics(train, val, test) -> dict:
    """Crops and cases of each part of a split, for the model's metrics."""
    return {name: {"crops": len(part), "cases": len({c.case for c in part})}
            for name, part in (("train", train), ("validation", val), ("test", test))}


def _test_definition(test_fraction: float, split_seed: int) -> str:
    return (f"held-out cases ({test_fraction:.0%} of the cases, split seed {split_seed}), each crop "
            "once at a random input angle through rotate-upright → classify; positive = p-arm up")


def train_from_folder(data_dir, depth: int = 18, width: int = 16, size: int = 128, epochs: int = 24, batch_size: int = 32,
                      lr: float = 0.01, variants: int = 2, test_fraction: float = 0.3, val_fraction: float = 0.1,
                      split_seed: int = 0, max_cases: Optional[int] = None, workers: int = 1, cache_dir=None, seed: int = 0,
                      augment: Union[bool, str] = False, device: Optional[str] = None, progress: Optional[ProgressCallback] = None,
                      cancel: Any = None, on_epoch: Optional[Callable[[dict], None]] = None,
                      log: Optional[Callable[[str], None]] = None, init: Optional[PolarityModel] = None,
                      straighten: Union[dict, bool, None] = None, views_below: float = REVIEW_THRESHOLD) -> PolarityModel:
    """``bioid karyo train``: split a crop collection by case, train, and test on held-out cases.

    ``data_dir`` has the layout ``<case>/<chromosome class>/<crop>`` with every
    crop standing short arm up (see :mod:`.data`). ``test_fraction`` of the
    cases (seed ``split_seed``) are the test set, ``val_fraction`` of the rest
    choose the epoch; ``max_cases`` caps the training cases (quick runs).
    Training crops go through the chain at ``variants`` random angles, the
    validation and test crops at one. The returned model's ``metrics`` hold
    the split, the history and ``test`` (:func:`evaluate_polarity`).
    ``augment``: see :func:`build_chain_set`; ``init``: fine-tune this model
    (:func:`train_polarity`; ``size`` must be its input size).
    ``straighten``: gate of :func:`.straighten.straighten_if_bent` for every
    set's upright crops; the model carries it (``None``: ``init``'s, else
    none; ``False``: none). ``views_below``: see :func:`finish_model`.

    Raises
    ------
    BioidInputError
        Missing folder, no crops, too few cases to split, an unknown
        ``augment``, a gate lacking one of its keys, or ``views_below``
        outside [0, 1] (all before any training).
    """
    mode = augment_mode(augment)
    views_below = check_confidence(views_below)
    if init is not None:
        size = init.size
        if straighten is None:
            straighten = init.straighten
    straighten = _gate(straighten)
    train, val, test = _split(data_dir, test_fraction, val_fraction, split_seed)
    if max_cases:
        keep = set(sorted({c.case for c in train})[:max_cases])
        train = [c for c in train if c.case in keep]
    split = _split_metrics(train, val, test)
    if log:
        log("split by case: " + ", ".join(f"{k} {v['crops']} crops / {v['cases']} cases" for k, v in split.items()))
    tr = _cached_chain_set("train", cache_dir, train, size, variants, seed + 10, workers, progress, cancel, mode, straighten)
    va = _cached_chain_set("val", cache_dir, val, size, _VAL_VARIANTS[mode], seed + 11, workers, progress, cancel, mode, straighten)
    te = _cached_chain_set("test", cache_dir, test, size, 1, seed + 12, workers, progress, cancel, straighten=straighten)
    model = train_polarity(tr, va, depth=depth, width=width, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                           device=device, progress=progress, cancel=cancel, on_epoch=on_epoch, init=init)
    model.metrics["split"] = split
    if straighten is not None:  # the training gate is a floor; the gate the model keeps is chosen on validation crops
        gate, rep = choose_straighten_gate(model, val, straighten, workers=workers, seed=seed + 111, device=device,
                                           progress=progress, cancel=cancel)
        model.metrics["straighten"] = {"trained_with": straighten, "chosen_on_validation": gate, "validation": rep}
        if gate != straighten:
            va = _cached_chain_set("val", cache_dir, val, size, _VAL_VARIANTS[mode], seed + 11, workers, progress, cancel, mode, gate)
            te = _cached_chain_set("test", cache_dir, test, size, 1, seed + 12, workers, progress, cancel, straighten=gate)
        straighten = gate
    model.straighten = straighten
    if init is not None:
        model.metrics["fine_tuned_from"] = {k: init.metrics.get(k) for k in ("script", "recipe", "augment", "train_minutes")}
        model.metrics["fine_tuned_from"]["test_accuracy"] = (init.metrics.get("test") or {}).get("accuracy")
    model.metrics["augment"] = None if mode == "none" else {
        "mode": mode, "every second variant": "random_shift" + (" (variants 3, 7, ...: RANDOM_LAB)" if mode == "lab" else ""),
        "probability_low_high": {k: list(v) for k, v in RANDOM_SHIFT.items()},
        **({"lab_probability_low_high": {k: list(v) for k, v in RANDOM_LAB.items()}} if mode == "lab" else {})}
    finish_model(model, va, te, device=device, cancel=cancel, views_below=views_below)
    model.metrics["test_definition"] = _test_definition(test_fraction, split_seed)
    return model


def _sigmoid(d: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-d))


def fit_temperature(model: PolarityModel, data: ChainSet, device: Optional[str] = None, cancel: Any = None,
                    log_odds: Optional[np.ndarray] = None) -> float:
    """Temperature T minimising the negative log-likelihood of ``data`` (Guo et al., ICML 2017).

    Uses the model's log-odds as the chain feeds them (mirror averaging,
    symmetric views and small-crop expert as set, :func:`chain_log_odds`;
    ``log_odds``: those, when already computed); T is searched on
    log T ∈ [−3, 3] (bounded Brent). Does not change ``model``.

    Raises
    ------
    BioidInputError
        ``data`` is empty.
    """
    from scipy.optimize import minimize_scalar

    if len(data) == 0:
        raise BioidInputError("no validation crops to fit the temperature on")
    d = chain_log_odds(model, data, 128, None, cancel, device) if log_odds is None else np.asarray(log_odds)
    sign = np.where(data.up, 1.0, -1.0)

    def nll(log_t):
        return float(np.mean(np.logaddexp(0.0, -sign * d / np.exp(log_t))))

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def finish_model(model: PolarityModel, val: Optional[ChainSet], test: ChainSet, device: Optional[str] = None,
                 cancel: Any = None, mirror: Optional[bool] = None, views_below: float = REVIEW_THRESHOLD) -> PolarityModel:
    """Choose mirror averaging and fit the temperature on the validation set, then measure the test set once.

    ``model.mirror`` is set when averaging the crop and its mirror image is
    more accurate on ``val`` (``mirror`` True/False: fixed instead, e.g. off
    where its cost is not affordable), and ``model.temperature`` by
    :func:`fit_temperature` on ``val`` (never decided on the test set), both
    on one view per crop. Then ``model.views_below`` is set to
    ``views_below`` (the four symmetric views for crops less sure than that,
    see :mod:`.polarity`; 0: never). Stores ``metrics["val_mirror"]`` ({"off",
    "on"} accuracies), ``metrics["temperature"]`` (with the validation ECE
    before and after), ``metrics["views"]`` (validation accuracy and ECE with
    one view and with the views, and the share of crops that got them) and
    ``metrics["test"]``.

    Raises
    ------
    BioidInputError
        ``views_below`` outside [0, 1].
    """
    views_below = check_confidence(views_below)
    model.views_below = 0.0  # mirror and temperature are chosen on one view per crop
    if val is not None and len(val):
        x = chain_inputs(val)
        log_odds, acc = {}, {}
        for flag in ((False, True) if mirror is None else (bool(mirror),)):  # everything below is derived from these log-odds
            model.mirror = flag
            log_odds[flag] = model.log_odds_squares(x, 128, None, cancel, device)
            acc["on" if flag else "off"] = evaluate_polarity(model, val, p_up=_sigmoid(log_odds[flag]))["accuracy"]
        model.mirror = acc["on"] > acc["off"] if mirror is None else bool(mirror)
        model.metrics["val_mirror"] = acc
        d = log_odds[model.mirror]
        model.temperature = fit_temperature(model, val, log_odds=d)
        before = evaluate_polarity(model, val, p_up=_sigmoid(d))["ece"]
        one = evaluate_polarity(model, val, p_up=_sigmoid(d / model.temperature))
        model.metrics["temperature"] = {"value": model.temperature, "val_ece_before": before, "val_ece_after": one["ece"]}
        if views_below > 0:
            model.views_below = views_below
            dv = model.add_views(x, d, 128, None, cancel, device)  # only the unsure crops run again
            views = evaluate_polarity(model, val, p_up=_sigmoid(dv / model.temperature))
            model.metrics["views"] = {
                "below": model.views_below, "val_share_with_views": float(np.mean(model.unsure(d))),
                "val_accuracy": {"one view": one["accuracy"], "views": views["accuracy"]},
                "val_ece": {"one view": one["ece"], "views": views["ece"]}}
    model.views_below = views_below
    model.metrics["test"] = evaluate_polarity(model, test, device=device, cancel=cancel)
    return model


def ensemble_models(members: Sequence[PolarityModel]) -> PolarityModel:
    """One :class:`.polarity.PolarityModel` averaging the logits of ``members`` (:class:`.polarity.PolarityEnsemble`).

    Members that are ensembles themselves contribute each of their networks.
    The result keeps no mirror, temperature or gate of the members: choose
    them with :func:`ensemble_from_folder` (or :func:`finish_model`). The
    members' networks are copied, never shared.

    Raises
    ------
    BioidInputError
        Fewer than two networks, or members of another depth, width, input
        size or normalisation than the first.
    """
    from .polarity import PolarityEnsemble

    members = list(members)
    nets = []
    for m in members:
        key, first = (m.depth, m.width, m.size, m.mean, m.std), members[0]
        if key != (first.depth, first.width, first.size, first.mean, first.std):
            raise BioidInputError(f"ensemble members must share depth, width, input size and normalisation: {key} vs "
                                  f"{(first.depth, first.width, first.size, first.mean, first.std)}")
        nets.extend(m.net.members if m.members > 1 else [m.net])
    if len(nets) < 2:
        raise BioidInputError("an ensemble needs at least two networks")
    first = members[0]
    net = PolarityEnsemble([copy.deepcopy(n) for n in nets]).eval()
    return PolarityModel(first.depth, first.width, first.size, first.mean, first.std, net=net, members=len(nets))


def _training_gate(members: Sequence[PolarityModel]) -> Optional[dict]:
    """The straightening gate the members were trained with (their floor), or ``None`` if none was."""
    gates = []
    for m in members:
        g = (m.metrics.get("straighten") or {}).get("trained_with", m.straighten)
        gates.append(check_gate(g))
    if any(g != gates[0] for g in gates):
        raise BioidInputError(f"the members were trained with different straightening gates {gates}: name the gate to choose from")
    return gates[0]


def ensemble_from_folder(data_dir, members: Sequence[PolarityModel], straighten: Union[dict, bool, None] = None,
                         mirror: Optional[bool] = False, augment: Union[bool, str] = "lab", test_fraction: float = 0.3,
                         val_fraction: float = 0.1, split_seed: int = 0, seed: int = 0, workers: int = 1, cache_dir=None,
                         device: Optional[str] = None, progress: Optional[ProgressCallback] = None, cancel: Any = None,
                         log: Optional[Callable[[str], None]] = None, views_below: float = REVIEW_THRESHOLD) -> PolarityModel:
    """``bioid karyo ensemble``: average trained polarity models and finish the ensemble on the same split.

    The crop collection is split by case exactly as :func:`train_from_folder`
    splits it (so the members' training cases stay out of validation and
    test); the straightening gate is chosen on the validation cases
    (:func:`choose_straighten_gate`, from ``straighten``, default: the gate the
    members were trained with; ``False``: none), then mirror averaging
    (``mirror``: ``None`` = choose on validation; default off, since each
    member already costs one pass) and the temperature
    (:func:`finish_model`, which also sets ``views_below``), and the held-out
    test is measured once. Metrics record each member's recipe and test accuracy.

    Raises
    ------
    BioidInputError
        See :func:`ensemble_models`; members trained with different gates and
        no ``straighten`` given; ``views_below`` outside [0, 1]; the errors of
        :func:`train_from_folder`'s split.
    """
    mode = augment_mode(augment)
    views_below = check_confidence(views_below)
    ens = ensemble_models(members)
    floor = _gate(_training_gate(members) if straighten is None else straighten)
    train, val, test = _split(data_dir, test_fraction, val_fraction, split_seed)
    if log:
        log(f"ensemble of {ens.members} networks; validation {len(val)} crops, test {len(test)} crops")
    gate = None
    if floor is not None:
        gate, rep = choose_straighten_gate(ens, val, floor, workers=workers, seed=seed + 111, device=device, progress=progress,
                                           cancel=cancel, mirror=bool(mirror))
        ens.metrics["straighten"] = {"trained_with": floor, "chosen_on_validation": gate, "validation": rep}
    ens.straighten = gate
    va = _cached_chain_set("val", cache_dir, val, ens.size, _VAL_VARIANTS[mode], seed + 11, workers, progress, cancel, mode, gate)
    te = _cached_chain_set("test", cache_dir, test, ens.size, 1, seed + 12, workers, progress, cancel, straighten=gate)
    ens.metrics["ensemble"] = {"members": [
        {**{k: m.metrics.get(k) for k in ("script", "recipe", "train_minutes", "trained_on", "best_val_accuracy")},
         "test_accuracy": (m.metrics.get("test") or {}).get("accuracy")} for m in members]}
    ens.metrics["split"] = _split_metrics(train, val, test)
    finish_model(ens, va, te, device=device, cancel=cancel, mirror=mirror, views_below=views_below)
    ens.metrics["test_definition"] = _test_definition(test_fraction, split_seed)
    return ens


# ---------------------------------------------------------------------------------------------------------------------
# Small-crop expert (issue 15)

#: long sides (px) the small-crop expert's training crops are scaled to, drawn uniformly
SMALL_TRAIN_SIDES = (7.0, 26.0)
#: the rest of another lab's imaging for those crops: :data:`.shift.RANDOM_LAB` without its scale (the size is drawn above)
SMALL_LAB = {k: v for k, v in RANDOM_LAB.items() if k != "scale"}


def _small_chunk(args):
    from .shift import _scale

    paths, thetas, seed, gate, small = args
    rng = np.random.default_rng(seed)
    out = []
    for path, th in zip(paths, thetas):
        img = read_crop(path)
        for t in th:
            for _ in range(10):  # a rare draw leaves no chromosome to stand upright: draw again
                side = rng.uniform(*SMALL_TRAIN_SIDES)
                src = random_shift(_scale(img, min(1.0, side / max(img.shape))), rng, SMALL_LAB)
                try:
                    canonical, up, _ = _chain_canonical(src, t, gate)
                    break
                except BioidInputError:
                    t = rng.uniform(0.0, 360.0)
            else:
                raise BioidInputError(f"{path}: no small version of this crop kept a chromosome to stand upright")
            out.append((to_canvas(canonical, small[2], small[1]), up))
    return out


def build_small_set(crops: Sequence[Crop], variants: int = 8, seed: int = 0, workers: int = 1,
                    straighten: Optional[dict] = None, small: tuple = SMALL_SPEC,
                    progress: Optional[ProgressCallback] = None, cancel: Any = None) -> ChainSet:
    """The small-crop expert's examples: every crop made small, imaged as another lab would, through the chain.

    Each crop (standing p-arm up), at each of ``variants`` random angles, is
    scaled so its long side is drawn uniformly from :data:`SMALL_TRAIN_SIDES`
    px (never enlarged), changed by :func:`.shift.random_shift` with
    :data:`SMALL_LAB` (blur, gamma, contrast, background, noise, JPEG of
    another lab), run through the chain (upright search, rotation, the
    ``straighten`` gate) and put on the expert's canvas
    (:func:`~.data.to_canvas` with ``small`` = (max side, magnification,
    canvas, margin); the crop as the chain leaves it, untrimmed: at these sizes
    the rotations leave 2–4 px of white on each side, which is why inference
    keeps a 3-px margin). Returns a :class:`ChainSet` whose ``squares`` are those
    canvases (uint8 (N · variants, canvas, canvas), canonical), ready for
    :func:`train_polarity`. Memory: N · variants · canvas² bytes
    (14,206 crops × 8 at 72² ≈ 0.6 GB).

    Raises
    ------
    BioidInputError
        No crops, or an unreadable crop.
    """
    crops = list(crops)
    if not crops:
        raise BioidInputError("no crops to build the small-crop expert's examples from")
    small = (int(small[0]), float(small[1]), int(small[2]), int(small[3]))
    thetas = np.random.default_rng(seed).uniform(0.0, 360.0, size=(len(crops), variants))
    out = np.empty((len(crops) * variants, small[2], small[2]), np.uint8)
    up = np.empty(len(out), bool)
    step = 256
    jobs = [([c.path for c in crops[i : i + step]], thetas[i : i + step], seed * 100_003 + i, straighten, small)
            for i in range(0, len(crops), step)]
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        row = 0
        for res in (pool.map(_small_chunk, jobs) if pool else map(_small_chunk, jobs)):
            check_cancel(cancel)
            for canvas, u in res:
                out[row], up[row] = canvas, u
                row += 1
            report(progress, row, len(out), "making small crops")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return ChainSet(out, up, np.repeat(np.arange(len(crops)), variants), crops, variants, straighten)


def add_small_expert(model: PolarityModel, expert: PolarityModel, val: ChainSet, test: Optional[ChainSet] = None,
                     weight: float = SMALL_WEIGHT, device: Optional[str] = None, cancel: Any = None) -> PolarityModel:
    """A copy of ``model`` with the small-crop ``expert``, its temperature fitted again on ``val``.

    ``expert``: a :class:`.polarity.PolarityModel` (or ensemble) trained on
    :func:`build_small_set` canvases; its input side must be the canvas of
    ``val``'s ``small_spec``, whose max side and magnification the result
    keeps. The mix changes the small crops' log-odds, so the temperature is
    fitted again (:func:`fit_temperature`) on ``val`` (validation cases,
    built with :func:`build_chain_set`'s canvases); ``val`` errors with and
    without the expert go to ``metrics["small_expert"]``, and ``test``, if
    given, is measured once (``metrics["test"]``). ``model`` is not changed.

    Raises
    ------
    BioidInputError
        ``weight`` outside [0, 1], ``val`` without canvases or with canvases
        of another side than the expert's input.
    """
    if val.small_spec is None or int(val.small_spec[2]) != expert.size:
        raise BioidInputError(f"the expert takes {expert.size}-px canvases but the validation set has {val.small_spec} "
                              "(max side, magnification, canvas)")
    out = copy.copy(model)
    out.metrics = copy.deepcopy(model.metrics)
    out.small_expert, out.small_weight = expert, float(weight)
    out.small_max_side, out.small_magnification = int(val.small_spec[0]), float(val.small_spec[1])
    out.small_margin = int(val.small_spec[3])
    out.__post_init__()  # checks the weight
    before = chain_log_odds(model, val, cancel=cancel, device=device)
    after = chain_log_odds(out, val, cancel=cancel, device=device)
    out.temperature = fit_temperature(out, val, log_odds=after)
    if isinstance(out.metrics.get("temperature"), dict):
        out.metrics["temperature"].update({"value": out.temperature, "before_small_expert": model.temperature})
    sign = np.where(val.up, 1.0, -1.0)
    rows = val.small_rows
    out.metrics["small_expert"] = {
        "max_side_px": out.small_max_side, "margin_px": out.small_margin, "magnification": out.small_magnification,
        "canvas_px": expert.size,
        "weight": out.small_weight, "depth": expert.depth, "width": expert.width, "members": expert.members,
        "training": expert.metrics.get("small_training"),
        "validation": {"crops": len(val), "small_crops": int(len(rows)),
                       "errors_without": int(np.sum(sign * before <= 0)), "errors_with": int(np.sum(sign * after <= 0)),
                       "small_errors_without": int(np.sum(sign[rows] * before[rows] <= 0)),
                       "small_errors_with": int(np.sum(sign[rows] * after[rows] <= 0)),
                       "temperature": {"before": model.temperature, "after": out.temperature}}}
    if test is not None:
        out.metrics["test"] = evaluate_polarity(out, test, device=device, cancel=cancel)
    return out


def small_expert_from_folder(data_dir, model: PolarityModel, seeds: Sequence[int] = (0,), epochs: int = 30,
                             variants: int = 8, depth: int = 18, width: int = 16, weight: float = SMALL_WEIGHT,
                             test_fraction: float = 0.3, val_fraction: float = 0.1, split_seed: int = 0, workers: int = 1,
                             cache_dir=None, device: Optional[str] = None, progress: Optional[ProgressCallback] = None,
                             cancel: Any = None, log: Optional[Callable[[str], None]] = None) -> PolarityModel:
    """``bioid karyo small-expert``: train a small-crop expert for ``model`` on a crop collection and attach it.

    The collection is split by case exactly as :func:`train_from_folder`
    splits it. One ResNet (``depth``, ``width``) per seed in ``seeds`` learns
    on :func:`build_small_set` examples of the training cases (``variants``
    per crop, reference recipe, ``epochs``), keeping the epoch with the
    fewest errors on small examples of the validation cases (2 per crop);
    several are averaged (:func:`ensemble_models`). Then
    :func:`add_small_expert` attaches it with ``weight``, fits the
    temperature again on the validation cases (through the chain at 4 angles,
    another lab on every fourth, as :func:`ensemble_from_folder`) and measures
    the test cases. Returns the new model; ``model`` is not changed.

    Raises
    ------
    BioidInputError
        No seeds, the errors of :func:`train_from_folder`'s split, or of :func:`add_small_expert`.
    """
    seeds = list(seeds)
    if not seeds:
        raise BioidInputError("name at least one seed for the small-crop expert")
    train, val, test = _split(data_dir, test_fraction, val_fraction, split_seed)
    gate = model.straighten
    if log:
        log(f"small-crop expert: {len(train)} training crops x {variants}, {len(seeds)} network(s), {epochs} epochs")
    t0 = time.perf_counter()
    tr = build_small_set(train, variants, seed=1000, workers=workers, straighten=gate, progress=progress, cancel=cancel)
    va = build_small_set(val, 2, seed=2000, workers=workers, straighten=gate, progress=progress, cancel=cancel)
    nets = []
    for seed in seeds:
        def on_epoch(rec, seed=seed):
            if log:
                log(f"expert seed {seed} epoch {rec['epoch']}: loss {rec['loss']:.4f}, validation {rec['val_accuracy']:.4f}")

        nets.append(train_polarity(tr, va, depth=depth, width=width, epochs=epochs, seed=seed, device=device,
                                   progress=progress, cancel=cancel, on_epoch=on_epoch))
    expert = nets[0] if len(nets) == 1 else ensemble_models(nets)
    expert.metrics["small_training"] = {
        "train_crops": len(train), "variants": variants, "sides_px": list(SMALL_TRAIN_SIDES),
        "lab": {k: list(v) for k, v in SMALL_LAB.items()}, "epochs": epochs, "seeds": seeds,
        "best_val_accuracy": [n.metrics.get("best_val_accuracy") for n in nets], "val_examples": len(va),
        "minutes": round((time.perf_counter() - t0) / 60, 1)}
    val_set = _cached_chain_set("val", cache_dir, val, model.size, _VAL_VARIANTS["lab"], 11, workers, progress, cancel, "lab", gate)
    test_set = _cached_chain_set("test", cache_dir, test, model.size, 1, 12, workers, progress, cancel, straighten=gate)
    return add_small_expert(model, expert, val_set, test_set, weight, device, cancel)
