"""Cell-type re-classifier: a ResNet-34 on a crop around each box (METHODS.md §4, second stage).

Each box (or point) is classified from a square crop of fixed *physical* size
centred on it (default 24 µm, about three nucleus diameters, so the crop holds
the nucleus and its surroundings and keeps the nucleus' size as a cue), cut
from the image at its own pixel size and resized to ``input_px`` (default 64)
with an anti-aliased bilinear filter. The network is the project's ResNet-34
(He et al., CVPR 2016; :mod:`napari_bioid.engine.nn.resnet`) with a width knob
(32 channels in the first stage for the CPU; 64 in the paper).

Training follows METHODS: the classes are balanced by sub-sampling, every
epoch draws at most as many crops of each class as the rarest class has
(re-drawn each epoch, so all crops are used over the epochs), which for a
binary target-vs-normal list is "negatives sub-sampled to the positives'
count". Augmentation: flips, 90° rotations, a ±``shift_px`` translation and
HSV jitter; SGD with Nesterov momentum, cosine learning rate, weight decay
5e-4, label smoothing 0.05. The class list is whatever the user's data
defines (at least two classes).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BioidInputError
from ..io.atomic import PathLike
from ..nn.resnet import resnet
from ..train.checkpoint import load_checkpoint, save_checkpoint
from ..train.optim import training_layout
from ..progress import ProgressCallback, check_cancel, report
from .data import Sample, box_centres, check_rgb

MEAN, STD = 0.5, 0.25
KIND = "napari-bioid cell classifier"


@dataclass
class ClassifierConfig:
    """Everything needed to rebuild a classifier: classes, crop geometry, network size."""

    class_names: List[str] = field(default_factory=lambda: ["epithelial", "fibroblast", "inflammatory", "others"])
    crop_um: float = 24.0
    input_px: int = 64
    depth: int = 34
    width: int = 32


def default_classifier_path() -> Path:
    """The shipped CRC cell-type classifier (``scripts/train_default_classifier.py``)."""
    return Path(__file__).resolve().parents[2] / "models" / "cells_classifier_default.pt"


def extract_crops(image: np.ndarray, centres: np.ndarray, um_per_px: float, crop_um: float, out_px: int,
                  batch: int = 512) -> np.ndarray:
    """Square crops of ``crop_um`` µm centred on ``centres``, resized to ``out_px``.

    Parameters
    ----------
    image : uint8 [y, x, 3]
    centres : float (n, 2)
        Centres as (x, y) in the image's pixels.
    um_per_px : float
        The image's pixel size.

    Returns
    -------
    uint8 (n, out_px, out_px, 3). Crops reaching past the border are padded
    by reflection.
    """
    centres = np.asarray(centres, float).reshape(-1, 2)
    side = max(4, int(round(crop_um / um_per_px)))
    half = side // 2
    pad = half + 2
    out = np.zeros((len(centres), out_px, out_px, 3), np.uint8)
    if not len(centres):
        return out
    H, W = image.shape[:2]
    ix = np.clip(np.rint(centres[:, 0]).astype(int), 0, W - 1)
    iy = np.clip(np.rint(centres[:, 1]).astype(int), 0, H - 1)
    for s in range(0, len(centres), batch):
        sl = slice(s, s + batch)
        # pad only the region these crops touch (bounded memory on big images)
        x0, x1 = ix[sl].min() - pad, ix[sl].max() + pad + 1
        y0, y1 = iy[sl].min() - pad, iy[sl].max() + pad + 1
        region = image[max(y0, 0) : min(y1, H), max(x0, 0) : min(x1, W)]
        region = np.pad(region, ((max(0, -y0), max(0, y1 - H)), (max(0, -x0), max(0, x1 - W)), (0, 0)), mode="reflect" if min(region.shape[:2]) > pad else "edge")
        cx, cy = ix[sl] - x0, iy[sl] - y0
        win = np.stack([region[y - half : y - half + side, x - half : x - half + side] for x, y in zip(cx, cy)])
        t = torch.from_numpy(win).permute(0, 3, 1, 2).float()
        if side != out_px:
            t = F.interpolate(t, size=(out_px, out_px), mode="bilinear", align_corners=False, antialias=side > out_px)
        out[sl] = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def _to_tensor(crops: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


class Classifier:
    """A ResNet cell-type classifier with its config and metrics; :meth:`classify` works on any RGB image."""

    def __init__(self, config: ClassifierConfig, network: Optional[torch.nn.Module] = None, metrics: Optional[dict] = None):
        if len(config.class_names) < 2:
            raise BioidInputError(f"a classifier needs at least two classes, got {config.class_names}")
        self.config = config
        self.network = network or resnet(config.depth, len(config.class_names), config.width)
        self.metrics = metrics or {}

    def save(self, path: PathLike, overwrite: bool = False, half: bool = True) -> Path:
        """Write the model atomically (weights in float16 by default: half the file, same calls)."""
        state = {k: (v.half() if half and v.dtype == torch.float32 else v) for k, v in self.network.state_dict().items()}
        return save_checkpoint(path, KIND, asdict(self.config), state, self.metrics, overwrite=overwrite)

    @classmethod
    def load(cls, path: PathLike) -> "Classifier":
        """Read a model written by :meth:`save`. Raises :class:`BioidInputError` for anything else."""
        d = load_checkpoint(path, KIND)
        clf = cls(ClassifierConfig(**d["config"]), metrics=d.get("metrics", {}))
        clf.network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in d["state_dict"].items()})
        clf.network.eval()
        return clf

    @torch.inference_mode()
    def predict_crops(self, crops: np.ndarray, batch_size: int = 256, progress: Optional[ProgressCallback] = None, cancel: Any = None) -> np.ndarray:
        """Class probabilities (n, n_classes) float32 of crops made by :func:`extract_crops`."""
        net = self.network.eval()
        out = np.zeros((len(crops), len(self.config.class_names)), np.float32)
        for s in range(0, len(crops), batch_size):
            check_cancel(cancel)
            out[s : s + batch_size] = torch.softmax(net(_to_tensor(crops[s : s + batch_size])), 1).numpy()
            report(progress, min(s + batch_size, len(crops)), len(crops), "classifying")
        return out

    def classify(self, image: np.ndarray, boxes: np.ndarray, um_per_px: float, progress: Optional[ProgressCallback] = None,
                 cancel: Any = None, chunk: int = 1024) -> Dict[str, np.ndarray]:
        """Classify the cell in each box.

        Parameters
        ----------
        image : uint8 [y, x, 3]
        boxes : float (n, 4) ``x_min, y_min, x_max, y_max`` in the image's pixels
            (points work too: pass zero-size boxes).
        um_per_px : float
            The image's pixel size (the crop is ``crop_um`` µm whatever it is).

        Returns
        -------
        dict with ``classes`` int (n,), ``probability`` float (n,) of that class,
        ``probabilities`` float (n, n_classes).

        Raises
        ------
        BioidInputError
            Not an RGB image, or a non-positive pixel size.
        """
        image = check_rgb(image)
        if not um_per_px or um_per_px <= 0:
            raise BioidInputError(f"the pixel size must be positive, got {um_per_px} µm/px")
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        centres = box_centres(boxes)
        # row-major order, then chunks: each chunk's crops come from a band of the image, so memory is bounded
        # by the chunk whatever the image size and the number of cells
        order = np.lexsort((centres[:, 0], centres[:, 1])) if len(centres) else np.zeros(0, int)
        p = np.zeros((len(boxes), len(self.config.class_names)), np.float32)
        for s in range(0, len(boxes), chunk):
            idx = order[s : s + chunk]
            crops = extract_crops(image, centres[idx], um_per_px, self.config.crop_um, self.config.input_px)
            p[idx] = self.predict_crops(crops, cancel=cancel)
            report(progress, min(s + chunk, len(boxes)), len(boxes), "classifying")
        cls = p.argmax(1) if len(p) else np.zeros(0, int)
        return {"classes": cls.astype(int), "probability": p[np.arange(len(p)), cls] if len(p) else np.zeros(0), "probabilities": p}


# ---------------------------------------------------------------------- training
def crops_from_samples(samples: Sequence[Sample], crop_um: float, input_px: int, margin_px: int = 0):
    """All labelled crops (class ≥ 0) of samples: uint8 (n, input_px + 2·margin, …, 3) and int classes (n,).

    The margin is cut at the same scale, for translation augmentation."""
    crops, classes = [], []
    for s in samples:
        keep = s.classes >= 0
        if not keep.any():
            continue
        side_um = crop_um * (input_px + 2 * margin_px) / input_px
        crops.append(extract_crops(s.image, box_centres(s.boxes[keep]), s.um_per_px, side_um, input_px + 2 * margin_px))
        classes.append(s.classes[keep])
    if not crops:
        return np.zeros((0, input_px, input_px, 3), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(crops), np.concatenate(classes).astype(np.int64)


def _augment(batch: np.ndarray, out_px: int, rng) -> np.ndarray:
    from .detector import _hsv_jitter

    n, S = batch.shape[:2]
    m = S - out_px
    res = np.empty((n, out_px, out_px, 3), np.uint8)
    for i in range(n):
        dy, dx = rng.integers(0, m + 1, 2) if m else (0, 0)
        c = batch[i, dy : dy + out_px, dx : dx + out_px]
        c = np.rot90(c, rng.integers(4))
        if rng.random() < 0.5:
            c = c[:, ::-1]
        res[i] = _hsv_jitter(np.ascontiguousarray(c), rng)
    return res


def classification_metrics(truth: np.ndarray, pred: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1, weighted-average F1 (by support), confusion matrix (rows = truth)."""
    k = len(class_names)
    truth, pred = np.asarray(truth, int), np.asarray(pred, int)
    cm = np.zeros((k, k), int)
    np.add.at(cm, (truth, pred), 1)
    per = {}
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        p = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        r = tp / cm[i].sum() if cm[i].sum() else 0.0
        per[name] = {"precision": float(p), "recall": float(r), "f1": float(2 * p * r / (p + r)) if p + r else 0.0, "support": int(cm[i].sum())}
    support = cm.sum(1)
    wf1 = float(sum(per[n]["f1"] * support[i] for i, n in enumerate(class_names)) / max(support.sum(), 1))
    return {"n": int(len(truth)), "accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "weighted_f1": wf1,
            "macro_f1": float(np.mean([per[n]["f1"] for n in class_names])), "majority_rate": float(support.max() / max(support.sum(), 1)),
            "per_class": per, "confusion": cm.tolist(), "class_names": list(class_names)}


def evaluate_classifier(clf: Classifier, samples: Sequence[Sample]) -> dict:
    """:func:`classification_metrics` of the classifier on the labelled points/boxes of samples."""
    truth, pred = [], []
    for s in samples:
        keep = s.classes >= 0
        if keep.any():
            truth.append(s.classes[keep])
            pred.append(clf.classify(s.image, s.boxes[keep], s.um_per_px)["classes"])
    if not truth:
        raise BioidInputError("no labelled cells to evaluate on")
    return classification_metrics(np.concatenate(truth), np.concatenate(pred), clf.config.class_names)


def train_classifier(train: Sequence[Sample], val: Sequence[Sample] = (), class_names: Sequence[str] = ("epithelial", "fibroblast", "inflammatory", "others"),
                     epochs: int = 30, batch_size: int = 64, lr: float = 0.05, width: int = 32, depth: int = 34, crop_um: float = 24.0,
                     input_px: int = 64, shift_px: int = 4, seed: int = 0, init: Optional[Classifier] = None,
                     progress: Optional[ProgressCallback] = None, cancel: Any = None) -> Classifier:
    """Train a cell-type classifier on typed points/boxes (see the module docstring for the recipe).

    Parameters
    ----------
    train, val : sequences of :class:`~.data.Sample`
        ``classes`` index into ``class_names`` (−1 = unlabelled, skipped).
        ``val`` picks the saved epoch by weighted F1 and is measured.
    init : Classifier, optional
        Fine-tune from these weights (its classes and crop geometry are kept).

    Returns
    -------
    Classifier with ``metrics`` (validation metrics, epochs, time, class counts).

    Raises
    ------
    BioidInputError
        Fewer than two classes with examples, or a class index outside ``class_names``.
    Cancelled
    """
    if init is not None:
        cfg = copy.deepcopy(init.config)
        net = copy.deepcopy(init.network)
    else:
        cfg = ClassifierConfig(list(class_names), crop_um, input_px, depth, width)
        net = None
    k = len(cfg.class_names)
    crops, y = crops_from_samples(train, cfg.crop_um, cfg.input_px, shift_px)
    if len(y) and (y.max() >= k):
        raise BioidInputError(f"class index {int(y.max())} outside the class list {cfg.class_names}")
    counts = np.bincount(y, minlength=k)
    if (counts > 0).sum() < 2:
        raise BioidInputError(f"training needs examples of at least two classes, got counts {dict(zip(cfg.class_names, counts.tolist()))}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    clf = Classifier(cfg, net)
    layout = training_layout(torch.device("cpu"), 2)  # trained on CPU
    net = clf.network.to(memory_format=layout).train()
    per_class = int(counts[counts > 0].min())
    by_class = [np.flatnonzero(y == c) for c in range(k)]
    n_epoch = per_class * int((counts > 0).sum())
    steps_per_epoch = max(1, n_epoch // batch_size)
    total = epochs * steps_per_epoch
    decay, no_decay = [], []
    for p in net.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1)
    best = {"score": -1.0, "state": None, "epoch": 0, "metrics": None}
    history = []
    t0 = time.perf_counter()
    step = 0
    for epoch in range(1, epochs + 1):
        idx = np.concatenate([rng.choice(ix, per_class, replace=False) for ix in by_class if len(ix)])
        rng.shuffle(idx)
        net.train()
        losses = []
        for b in range(steps_per_epoch):
            check_cancel(cancel)
            sel = idx[b * batch_size : (b + 1) * batch_size]
            x = _to_tensor(_augment(crops[sel], cfg.input_px, rng)).contiguous(memory_format=layout)
            loss = F.cross_entropy(net(x), torch.from_numpy(y[sel]), label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            report(progress, step, total, f"epoch {epoch}/{epochs} loss {np.mean(losses[-20:]):.3f}")
        rec = {"epoch": epoch, "loss": float(np.mean(losses))}
        if val:
            net.eval()
            m = evaluate_classifier(clf, val)
            rec.update(weighted_f1=m["weighted_f1"], accuracy=m["accuracy"])
            if m["weighted_f1"] > best["score"]:
                best = {"score": m["weighted_f1"], "state": copy.deepcopy(net.state_dict()), "epoch": epoch, "metrics": m}
        history.append(rec)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.to(memory_format=torch.contiguous_format).eval()
    clf.metrics = {"epochs": epochs, "best_epoch": best["epoch"] or epochs, "seconds": time.perf_counter() - t0, "history": history,
                   "train_counts": dict(zip(cfg.class_names, counts.tolist())), "per_class_per_epoch": per_class}
    if best["metrics"] is not None:
        clf.metrics["val"] = best["metrics"]
    return clf

