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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from ..errors import BioidInputError
from ..io.atomic import PathLike
from ..nn.resnet import resnet
from ..progress import ProgressCallback, check_cancel, report
from ..train.checkpoint import load_checkpoint, save_checkpoint
from .data import MEAN, STD, to_square
from .straighten import straighten_if_bent

MODEL_KIND = "napari-bioid/karyo-polarity"
DEFAULT_MODEL_NAME = "karyo_polarity_default.pt"
#: class indices of the reference classifier
DOWN, UP = 0, 1
#: default review threshold: crops whose confidence is below it are shown to the reviewer first
REVIEW_THRESHOLD = 0.9


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


def check_views_below(value: float, name: str = "views_below") -> float:
    """``value`` as a float if it is a confidence in [0, 1] (``views_below`` of :class:`PolarityModel`).

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
    sign turned, its 180° turn and top-bottom mirror); 0: never.
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

    def __post_init__(self):
        if self.members < 1:
            raise BioidInputError(f"a polarity model needs at least one network, got members={self.members}")
        self.views_below = check_views_below(self.views_below)
        if self.net is None:
            nets = [resnet(self.depth, num_classes=2, width=self.width, in_channels=3) for _ in range(self.members)]
            self.net = nets[0] if self.members == 1 else PolarityEnsemble(nets)

    def config(self) -> dict:
        return {"depth": self.depth, "width": self.width, "size": self.size, "mean": self.mean, "std": self.std,
                "mirror": self.mirror, "temperature": self.temperature, "straighten": self.straighten,
                "members": self.members, "views_below": self.views_below, "classes": {"0": "down", "1": "up"}}

    def square(self, upright: np.ndarray) -> np.ndarray:
        """The classifier's uint8 (size, size) input for one upright crop: straightened if the gate says so, then :func:`~.data.to_square`."""
        return to_square(straighten_if_bent(upright, self.straighten)[0], self.size)

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

    def unsure(self, log_odds: np.ndarray) -> np.ndarray:
        """bool (N,): crops whose calibrated confidence max(p, 1 − p) is below ``views_below``, from their log-odds."""
        return 1.0 / (1.0 + np.exp(-np.abs(np.asarray(log_odds)) / self.temperature)) < self.views_below

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
    def p_up(self, uprights: Sequence[np.ndarray], batch_size: int = 64, progress: Optional[ProgressCallback] = None,
             cancel: Any = None, device: Optional[str] = None) -> np.ndarray:
        """Probability (float64, shape (N,)) that each upright crop has its short arm up.

        ``uprights``: grey or RGB uint8 crops on white, already made vertical
        (:func:`~napari_bioid.engine.karyo.rotate.make_upright`).
        """
        if len(uprights) == 0:
            return np.zeros(0)
        squares = np.stack([self.square(u) for u in uprights])
        return self.p_up_squares(squares, batch_size, progress, cancel, device)


def save_polarity_model(model: PolarityModel, path: PathLike, overwrite: bool = False) -> Path:
    """Write ``model`` (weights, architecture, input spec, metrics) atomically to ``path``."""
    return save_checkpoint(path, MODEL_KIND, model.config(), model.net.state_dict(), model.metrics, overwrite=overwrite)


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
                          views_below=float(cfg.get("views_below", 0.0)))
    try:
        model.net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise BioidInputError(f"{path}: weights do not match the stored architecture ({exc})") from exc
    model.net.eval()
    return model
