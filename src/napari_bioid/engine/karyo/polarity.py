"""Polarity classifier: is the short (p) arm of an upright chromosome up or down?

METHODS.md §2 (after the reference of the karyotyping pipeline): a ResNet
(He et al., CVPR 2016; the reference uses ResNet-101, 2048 → 2) on the
upright crop padded to a white square and resized to 224 × 224, grey
replicated to 3 channels, normalised with mean 0.772 / std 0.245; class 0 =
"down" (short arm down), class 1 = "up". The input side is the model's
``size``: the shipped ensemble uses 128 px (issue 15), which keeps most crops
(median 61 px long, 95 % ≤ 116 px) near their own resolution instead of
stretching them ~3.7 times, at a third of the cost per network.

A model file (``.pt``, written with :func:`save_polarity_model`) carries the
weights, the architecture (depth, width, number of ensemble members), the input
size and normalisation and the metrics it reached, so a file is all that is
needed to use it.

Test-time symmetry (issue 15): polarity does not change when the upright crop
is mirrored left-right, and is reversed when it is turned 180° or mirrored
top-bottom. The network learnt these symmetries only approximately (training
draws "down" examples by turning crops 180° and mirrors half of them), so for
the crops it is unsure of (confidence below ``views_below``; models finished
by :func:`~.training.finish_model` use the review threshold 0.9) the
log-odds of the four views are averaged, signs turned where the view
reverses polarity. The sure crops (≈ 98 % of our own) cost one pass; on
small, degraded crops of another lab the four views correct about one error
in six to eight (shipped ensemble, validation cases: lab level 3 55 → 46
errors, scale 0.3 34 → 30; our own crops 96 → 97 of 12,512).

A model may be an ensemble of independently trained networks of one
architecture (:class:`PolarityEnsemble`, "deep ensembles", Lakshminarayanan et
al., NeurIPS 2017): their logits are averaged, so the log-odds are the mean of
the members' log-odds.

Small-crop expert (issue 15): another lab's small chromosomes (bounding box's
long side ≤ ``small_max_side``, 20 px by default: our crops at 25–35 % of their
size) are the chain's weak point, and the main networks only see them stretched
5–12 times into soft blobs of one apparent size. A model may carry a second,
cheap network (``small_expert``, itself a :class:`PolarityModel` whose input is
:func:`~.data.to_canvas`: the chromosome with a 3-px margin
(:func:`~.data.trim_to_chromosome`) at a fixed 3× magnification on a 72-px
canvas, so its apparent size is kept) trained only on such crops
(:func:`~.training.build_small_set`). For a small crop the log-odds are
``(1 − w) · main + w · expert`` (``small_weight`` w = 0.5; the expert averages
its four symmetric views); other crops are not touched. The two err on
different crops: on the validation cases at lab level 3 the mix makes about a
third fewer errors than either alone (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import BioidInputError
from ..io.atomic import PathLike
from ..nn.resnet import resnet
from ..progress import ProgressCallback, check_cancel, report
from ..train.checkpoint import load_checkpoint, save_checkpoint
from .data import MEAN, STD, small_canvas, to_square
from .straighten import straighten_if_bent

MODEL_KIND = "napari-bioid/karyo-polarity"
DEFAULT_MODEL_NAME = "karyo_polarity_default.pt"
#: class indices of the reference classifier
DOWN, UP = 0, 1
#: default review threshold: crops whose confidence is below it are shown to the reviewer first
REVIEW_THRESHOLD = 0.9
#: small-crop expert (issue 15): chromosomes whose bounding box's long side is at most this many px go to it
SMALL_MAX_SIDE = 20
#: white margin (px) kept around the chromosome's bounding box before it is put on the expert's canvas
SMALL_MARGIN = 3
#: its input: the crop enlarged this many times on a white square canvas of this side (px)
SMALL_MAGNIFICATION, SMALL_CANVAS = 3.0, 72
#: weight of its log-odds in the mix for small crops
SMALL_WEIGHT = 0.5
#: prefix of the small-crop expert's weights in a model file's state dict
SMALL_PREFIX = "small_expert."


class PolarityEnsemble(torch.nn.Module):
    """Networks of one architecture whose logits are averaged: (B, 3, S, S) float32 → (B, 2) float32.

    Deep ensembles (Lakshminarayanan et al., NeurIPS 2017): members trained
    apart (other seeds, recipes) err on partly different crops, so the mean
    is more accurate than either, at the cost of one forward pass per member.
    """

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.members[0](x)
        for m in self.members[1:]:
            out = out + m(x)
        return out / len(self.members)


def check_confidence(value: float, name: str = "views_below") -> float:
    """``value`` as a float if it is a confidence in [0, 1] (a threshold such as ``views_below`` or ``turns_below`` of
    :class:`PolarityModel`).

    Raises
    ------
    BioidInputError
        Outside [0, 1]; the message names the option ``name``.
    """
    if not 0.0 <= value <= 1.0:
        raise BioidInputError(f"{name} is a confidence between 0 and 1, got {value}")
    return float(value)


def _log_odds(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """logit(up) − logit(down) of a batch: (B, 3, S, S) → (B,)."""
    logits = net(x.contiguous(memory_format=torch.channels_last))
    return logits[:, UP] - logits[:, DOWN]


def _four_views(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean log-odds of the four symmetric views of a batch: the crop, its left-right mirror and, sign turned, its 180° turn and top-bottom mirror."""
    return 0.25 * (_log_odds(net, x) + _log_odds(net, x.flip(-1)) - _log_odds(net, x.flip(-2, -1)) - _log_odds(net, x.flip(-2)))


def default_model_path() -> Path:
    """Path of the polarity model shipped in the package.

    Raises
    ------
    BioidInputError
        No default model is installed (train one with ``bioid karyo train``).
    """
    path = Path(__file__).resolve().parents[2] / "models" / DEFAULT_MODEL_NAME
    if not path.is_file():
        raise BioidInputError(f"no default polarity model at {path}; pass a model file (train one with `bioid karyo train`)")
    return path


@dataclass
class PolarityModel:
    """A polarity network plus what is needed to feed it.

    ``depth`` ∈ {18, 34, 50, 101}; ``width`` = channels of the first stage (64
    in the paper); ``size`` = square input side in pixels; ``mirror``: average
    the log-odds of the crop and its left-right mirror image (the training's
    flip augmentation makes both valid inputs); ``temperature``: the log-odds
    are divided by it before the sigmoid, so the confidence shown to the
    reviewer is calibrated (temperature scaling, Guo et al., ICML 2017; fitted
    on validation cases by :func:`~.training.fit_temperature`); ``straighten``:
    long, thin, bent chromosomes are straightened along their axis before they
    are squared (:func:`~.straighten.straighten_if_bent`, its gate; ``None``:
    never), as they were in training; ``members``: number of networks of this
    architecture whose logits are averaged (:class:`PolarityEnsemble`; 1: a
    single network); ``views_below``: crops whose calibrated confidence
    (max(p, 1 − p) with ``temperature``) is below it get the mean log-odds of
    four symmetric views (the square, its left-right mirror, and, with the
    sign turned, its 180° turn and top-bottom mirror); 0: never;
    ``small_expert``: optional network for small crops (the chromosome's
    bounding box at most ``small_max_side`` px long, whatever the crop's
    margins), a :class:`PolarityModel` whose ``size`` is its
    :func:`~.data.to_canvas` canvas (the chromosome with ``small_margin`` px
    of white, at ``small_magnification``); their
    log-odds become ``(1 − small_weight) · own + small_weight · expert's``
    (the expert's four symmetric views averaged). Only :meth:`p_up` and
    :meth:`log_odds_chain` use it; the ``*_squares`` methods are the main
    networks alone. ``turn_angles`` / ``turns_below``: crops whose calibrated
    confidence is below ``turns_below`` go through the whole chain again with
    the input turned by each of ``turn_angles`` (degrees), and their log-odds
    are averaged (:func:`.orient.orient_images`; () or 0: never).
    """

    depth: int = 18
    width: int = 16
    size: int = 224
    mean: float = MEAN
    std: float = STD
    mirror: bool = False  # also classify the left-right mirror image and average (polarity is mirror-invariant)
    temperature: float = 1.0  # logits are divided by it (temperature scaling, fitted on validation cases)
    straighten: Optional[dict] = None  # gate of straighten.straighten_if_bent for the upright crops (None: never)
    metrics: Dict[str, Any] = field(default_factory=dict)
    net: Optional[torch.nn.Module] = None
    members: int = 1  # networks whose logits are averaged (PolarityEnsemble); 1: a single ResNet
    views_below: float = 0.0  # confidence under which the four symmetric views are averaged (0: never)
    small_expert: Optional["PolarityModel"] = None  # network for small crops (input: to_canvas), see the module
    small_max_side: int = SMALL_MAX_SIDE  # chromosomes whose bounding box's long side is at most this (px) go to small_expert too
    small_margin: int = SMALL_MARGIN  # white margin (px) kept around the chromosome on the expert's canvas
    small_magnification: float = SMALL_MAGNIFICATION  # to_canvas magnification of the expert's input
    small_weight: float = SMALL_WEIGHT  # the expert's weight in the small crops' log-odds
    turn_angles: Tuple[float, ...] = ()  # the chain's extra input turns (degrees) for unsure crops (orient.orient_images)
    turns_below: float = 0.0  # confidence under which a crop goes through the chain again at turn_angles (0: never)

    def __post_init__(self):
        if self.members < 1:
            raise BioidInputError(f"a polarity model needs at least one network, got members={self.members}")
        self.views_below = check_confidence(self.views_below)
        self.turns_below = check_confidence(self.turns_below, "turns_below")
        self.turn_angles = tuple(float(a) for a in self.turn_angles)
        if not all(np.isfinite(self.turn_angles)):
            raise BioidInputError(f"turn_angles must be finite angles in degrees, got {self.turn_angles}")
        if not 0.0 <= self.small_weight <= 1.0:
            raise BioidInputError(f"small_weight is a weight between 0 and 1, got {self.small_weight}")
        if self.small_max_side < 1 or self.small_margin < 0 or not self.small_magnification > 0:
            raise BioidInputError(f"small_max_side must be ≥ 1 px, small_margin ≥ 0 px and small_magnification > 0, got "
                                  f"{self.small_max_side}, {self.small_margin} and {self.small_magnification}")
        if self.net is None:
            nets = [resnet(self.depth, num_classes=2, width=self.width, in_channels=3) for _ in range(self.members)]
            self.net = nets[0] if self.members == 1 else PolarityEnsemble(nets)

    def config(self) -> dict:
        small = None
        if self.small_expert is not None:
            e = self.small_expert
            small = {"depth": e.depth, "width": e.width, "canvas": e.size, "members": e.members, "mean": e.mean,
                     "std": e.std, "max_side": self.small_max_side, "margin": self.small_margin,
                     "magnification": self.small_magnification, "weight": self.small_weight}
        return {"depth": self.depth, "width": self.width, "size": self.size, "mean": self.mean, "std": self.std,
                "mirror": self.mirror, "temperature": self.temperature, "straighten": self.straighten,
                "members": self.members, "views_below": self.views_below, "small_expert": small,
                "turn_angles": list(self.turn_angles), "turns_below": self.turns_below,
                "classes": {"0": "down", "1": "up"}}

    def square(self, upright: np.ndarray) -> np.ndarray:
        """The classifier's uint8 (size, size) input for one upright crop: straightened if the gate says so, then :func:`~.data.to_square`."""
        return to_square(straighten_if_bent(upright, self.straighten)[0], self.size)

    def small_input(self, upright: np.ndarray) -> Optional[np.ndarray]:
        """The small-crop expert's uint8 (canvas, canvas) input for one upright crop, or ``None`` if it is not small.

        Straightened as :meth:`square`, cut to the chromosome plus
        ``small_margin`` px (:func:`~.data.trim_to_chromosome`); small when the
        chromosome's bounding box is at most ``small_max_side`` px long, then
        :func:`~.data.to_canvas`. ``None`` as well without an expert.
        """
        if self.small_expert is None:
            return None
        return self._small_from_straightened(straighten_if_bent(upright, self.straighten)[0])

    def _small_from_straightened(self, upright: np.ndarray) -> Optional[np.ndarray]:
        return small_canvas(upright, self.small_max_side, self.small_margin, self.small_expert.size, self.small_magnification)

    @torch.no_grad()
    def log_odds_chain(self, squares: np.ndarray, canvases: Optional[np.ndarray] = None, rows: Optional[np.ndarray] = None,
                       batch_size: int = 64, progress: Optional[ProgressCallback] = None, cancel: Any = None,
                       device: Optional[str] = None) -> np.ndarray:
        """Uncalibrated log-odds of the whole classifier: main networks, and the small-crop expert where it applies.

        ``squares``: uint8 (N, size, size) as :meth:`log_odds_squares` takes
        them; ``canvases``: uint8 (M, canvas, canvas), :meth:`canvas` of the
        small crops, which are ``squares[rows]`` (``rows``: int (M,)). Returns
        float64 (N,): :meth:`log_odds_squares`, with ``rows`` replaced by
        ``(1 − small_weight) · main + small_weight · expert`` (the expert's
        four symmetric views averaged); :meth:`small_input` makes the canvases. Without an expert or small crops,
        :meth:`log_odds_squares`.

        Raises
        ------
        BioidInputError
            Squares or canvases of the wrong shape, or ``rows`` that do not match ``canvases``.
        """
        out = self.log_odds_squares(squares, batch_size, progress, cancel, device)
        if self.small_expert is None or canvases is None or rows is None or len(rows) == 0:
            return out
        e = self.small_expert
        canvases, rows = e._check_squares(canvases), np.asarray(rows, dtype=np.int64)
        if len(rows) != len(canvases) or rows.min() < 0 or rows.max() >= len(out):
            raise BioidInputError(f"{len(canvases)} small-crop canvases for rows {rows.min()}..{rows.max()} of {len(out)} crops")
        dev, net = e._net(device)
        expert = np.zeros(len(rows))
        for j in range(0, len(rows), batch_size):
            check_cancel(cancel)
            expert[j : j + batch_size] = _four_views(net, e._input(canvases[j : j + batch_size], dev)).double().cpu().numpy()
            report(progress, len(out), len(out), f"small-crop expert ({min(j + batch_size, len(rows))}/{len(rows)})")
        out[rows] = (1.0 - self.small_weight) * out[rows] + self.small_weight * expert
        return out

    def normalise(self, squares: torch.Tensor) -> torch.Tensor:
        """(B, size, size) uint8 squares → (B, 3, size, size) float32 network input."""
        x = (squares.float() / 255.0 - self.mean) / self.std
        return x[:, None].expand(-1, 3, -1, -1)

    @torch.no_grad()
    def log_odds_squares(self, squares: np.ndarray, batch_size: int = 64, progress: Optional[ProgressCallback] = None,
                         cancel: Any = None, device: Optional[str] = None) -> np.ndarray:
        """Uncalibrated log-odds (logit up − logit down) of squares from :func:`~.data.to_square`.

        ``squares``: uint8 (N, size, size). Returns float64 (N,); with
        ``mirror`` the mean over the crop and its mirror image; where the
        confidence is below ``views_below``, the mean over the four symmetric
        views (see the class).

        Raises
        ------
        BioidInputError
            Squares of the wrong shape.
        """
        squares = self._check_squares(squares)
        dev, net = self._net(device)
        out = np.zeros(len(squares))
        for i in range(0, len(squares), batch_size):
            check_cancel(cancel)
            x = self._input(squares[i : i + batch_size], dev)
            d = _log_odds(net, x)
            if self.mirror:
                d = 0.5 * (d + _log_odds(net, x.flip(-1)))
            out[i : i + len(x)] = d.double().cpu().numpy()
            report(progress, min(i + batch_size, len(squares)), len(squares), "classifying polarity")
        return self.add_views(squares, out, batch_size, progress, cancel, device) if self.views_below > 0 else out

    def unsure(self, log_odds: np.ndarray, below: Optional[float] = None) -> np.ndarray:
        """bool (N,): crops whose calibrated confidence max(p, 1 − p) is below ``below`` (default ``views_below``), from their log-odds."""
        return self.calibrated(np.abs(np.asarray(log_odds))) < (self.views_below if below is None else below)

    @torch.no_grad()
    def add_views(self, squares: np.ndarray, log_odds: np.ndarray, batch_size: int = 64,
                  progress: Optional[ProgressCallback] = None, cancel: Any = None, device: Optional[str] = None) -> np.ndarray:
        """The first-pass ``log_odds`` of ``squares`` with the :meth:`unsure` crops' replaced by the mean of the four symmetric views.

        ``squares``: uint8 (N, size, size); ``log_odds``: float (N,), from one
        pass with the model's ``mirror`` setting (as :meth:`log_odds_squares`
        computes them before the views). The unsure crops are gathered into
        full batches. Returns a new float64 (N,) array.
        """
        squares = self._check_squares(squares)
        out = np.array(log_odds, dtype=np.float64)
        unsure = np.flatnonzero(self.unsure(out))
        dev, net = self._net(device)
        for j in range(0, len(unsure), batch_size):
            check_cancel(cancel)
            rows = unsure[j : j + batch_size]
            x = self._input(squares[rows], dev)
            views = ([] if self.mirror else [_log_odds(net, x.flip(-1))]) + \
                [-_log_odds(net, x.flip(-2, -1)), -_log_odds(net, x.flip(-2))]
            in_d = 4 - len(views)  # views already averaged into out (1, or 2 with mirror)
            out[rows] = (in_d * out[rows] + sum(views).double().cpu().numpy()) / 4.0
            # the bar stays full (these are ~6 % of the passes); the message counts the unsure crops
            report(progress, len(squares), len(squares),
                   f"symmetric views of the unsure crops ({min(j + batch_size, len(unsure))}/{len(unsure)})")
        return out

    def _check_squares(self, squares: np.ndarray) -> np.ndarray:
        squares = np.asarray(squares)
        if squares.ndim != 3 or squares.shape[1:] != (self.size, self.size):
            raise BioidInputError(f"expected (N, {self.size}, {self.size}) squares, got {squares.shape}")
        return squares

    def _net(self, device: Optional[str]):
        """``(device, network)`` ready for inference there."""
        dev = torch.device(device or "cpu")
        # channels-last (NHWC) convolutions: ~1.5x the CPU throughput of NCHW here (oneDNN), same results to ~1e-6
        return dev, self.net.to(dev, memory_format=torch.channels_last).eval()

    def _input(self, squares: np.ndarray, dev: torch.device) -> torch.Tensor:
        """uint8 (B, size, size) squares → normalised (B, 3, size, size) channels-last network input on ``dev``."""
        x = self.normalise(torch.from_numpy(np.array(squares)).to(dev))  # a copy: squares may be read-only
        return x.contiguous(memory_format=torch.channels_last)

    def p_up_squares(self, squares: np.ndarray, batch_size: int = 64, progress: Optional[ProgressCallback] = None,
                     cancel: Any = None, device: Optional[str] = None) -> np.ndarray:
        """Like :meth:`p_up` for crops already padded and resized by :func:`~.data.to_square`.

        ``squares``: uint8 (N, size, size). Returns float64 (N,), calibrated
        by ``temperature``.
        """
        d = self.log_odds_squares(squares, batch_size, progress, cancel, device)
        return 1.0 / (1.0 + np.exp(-d / self.temperature))

    @torch.no_grad()
    def log_odds(self, uprights: Sequence[np.ndarray], batch_size: int = 64, progress: Optional[ProgressCallback] = None,
                 cancel: Any = None, device: Optional[str] = None) -> np.ndarray:
        """Uncalibrated log-odds (float64, shape (N,)) that each upright crop has its short arm up.

        ``uprights``: grey or RGB uint8 crops on white, already made vertical
        (:func:`~napari_bioid.engine.karyo.rotate.make_upright`); straightened
        if the gate says so, squared, and the small ones also go to the
        small-crop expert, if the model has one (:meth:`log_odds_chain`).
        :meth:`p_up` = sigmoid(log-odds / ``temperature``).
        """
        if len(uprights) == 0:
            return np.zeros(0)
        straight = [straighten_if_bent(u, self.straighten)[0] for u in uprights]
        squares = np.stack([to_square(u, self.size) for u in straight])
        small = [self._small_from_straightened(u) if self.small_expert is not None else None for u in straight]
        rows = np.array([i for i, c in enumerate(small) if c is not None], dtype=np.int64)
        canvases = np.stack([small[i] for i in rows]) if len(rows) else None
        return self.log_odds_chain(squares, canvases, rows, batch_size, progress, cancel, device)

    def p_up(self, uprights: Sequence[np.ndarray], batch_size: int = 64, progress: Optional[ProgressCallback] = None,
             cancel: Any = None, device: Optional[str] = None) -> np.ndarray:
        """Probability (float64, shape (N,)) that each upright crop has its short arm up, calibrated by ``temperature``.

        See :meth:`log_odds` for ``uprights``.
        """
        return self.calibrated(self.log_odds(uprights, batch_size, progress, cancel, device))

    def calibrated(self, log_odds: np.ndarray) -> np.ndarray:
        """p_up (float64) from uncalibrated log-odds: sigmoid(log-odds / ``temperature``)."""
        return 1.0 / (1.0 + np.exp(-np.asarray(log_odds, dtype=np.float64) / self.temperature))


def save_polarity_model(model: PolarityModel, path: PathLike, overwrite: bool = False) -> Path:
    """Write ``model`` (weights, architecture, input spec, metrics) atomically to ``path``."""
    state = dict(model.net.state_dict())
    if model.small_expert is not None:
        state.update({SMALL_PREFIX + k: v for k, v in model.small_expert.net.state_dict().items()})
    return save_checkpoint(path, MODEL_KIND, model.config(), state, model.metrics, overwrite=overwrite)



def load_polarity_model(path: Optional[PathLike] = None) -> PolarityModel:
    """Read a polarity model file; ``None`` loads the shipped default.

    Raises
    ------
    BioidInputError
        Missing or unreadable file, or a file that is not a polarity model.
    """
    path = default_model_path() if path is None else Path(path)
    payload = load_checkpoint(path, MODEL_KIND)
    cfg = payload["config"]
    model = PolarityModel(int(cfg["depth"]), int(cfg["width"]), int(cfg["size"]), float(cfg["mean"]), float(cfg["std"]),
                          bool(cfg.get("mirror", False)), float(cfg.get("temperature", 1.0)), cfg.get("straighten"),
                          metrics=payload.get("metrics", {}), members=int(cfg.get("members", 1)),
                          views_below=float(cfg.get("views_below", 0.0)),
                          turn_angles=tuple(cfg.get("turn_angles", ())), turns_below=float(cfg.get("turns_below", 0.0)))
    state = payload["state_dict"]
    small = cfg.get("small_expert")
    if small:
        model.small_expert = PolarityModel(int(small["depth"]), int(small["width"]), int(small["canvas"]),
                                           float(small["mean"]), float(small["std"]), members=int(small["members"]))
        model.small_max_side, model.small_weight = int(small["max_side"]), float(small["weight"])
        model.small_margin = int(small.get("margin", SMALL_MARGIN))
        model.small_magnification = float(small["magnification"])
    try:
        model.net.load_state_dict({k: v for k, v in state.items() if not k.startswith(SMALL_PREFIX)})
        if model.small_expert is not None:
            model.small_expert.net.load_state_dict({k[len(SMALL_PREFIX):]: v for k, v in state.items() if k.startswith(SMALL_PREFIX)})
            model.small_expert.net.eval()
    except RuntimeError as exc:
        raise BioidInputError(f"{path}: weights do not match the stored architecture ({exc})") from exc
    model.net.eval()
    return model
