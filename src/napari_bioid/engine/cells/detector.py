"""Nucleus/cell detector: training, tiled inference and the model file (METHODS.md §4).

Training (YOLOv5's recipe, Jocher et al.): mosaic of four random crops per
sample, HSV jitter (gains 0.015 / 0.7 / 0.4), flips and 90° rotations (tissue
has no orientation); SGD (lr 0.01, momentum 0.937, Nesterov, weight decay
5e-4 on conv weights only) with a linear warm-up over the first 3 % of the
steps (at least 50), then a linear decay to 1 %; an exponential moving average
of the weights (decay 0.9999 ramped by 1 − e^(−updates/2000)) is what gets
saved; the anchors are re-fitted to the training boxes (k-means, 1 − IoU).

Inference: the image is cut into overlapping tiles (default 512 px at the
model's pixel size, overlap 64 px), each tile resampled on its own to the
model's µm/px, so memory is bounded by a tile whatever the image size; boxes
above the confidence (the model's operating point ``config.conf``, 0.5 unless
chosen on held-out images by :func:`choose_confidence`; 0.001 for mAP) are merged across tiles by
NMS (IoU 0.45), first within each tile, then across tiles.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write
from ..progress import ProgressCallback, check_cancel, report
from .boxes import detection_metrics, nms
from .data import DEFAULT_UM_PER_PX, Sample, check_rgb, resample
from .yolo import YOLO, YoloLoss, fit_anchors


MAX_NMS = 1_000_000  # boxes merged across tiles (after each tile's own NMS)


@dataclass
class DetectorConfig:
    """Everything needed to rebuild a detector: classes, anchors (px), scale, size."""

    class_names: List[str] = field(default_factory=lambda: ["nucleus"])
    anchors: List[List[float]] = field(default_factory=lambda: [[10, 13, 16, 30, 33, 23]] * 3)
    depth: float = 0.33
    width: float = 0.25
    um_per_px: float = DEFAULT_UM_PER_PX
    train_size: int = 256
    conf: float = 0.5  # the operating confidence (chosen on held-out images by choose_confidence)


def default_detector_path() -> Path:
    """The shipped nucleus detector (``scripts/train_default_detector.py``)."""
    return Path(__file__).resolve().parents[2] / "models" / "cells_detector_default.pt"


class Detector:
    """A detector network with its config and metrics; :meth:`detect` runs on any RGB image."""

    def __init__(self, config: DetectorConfig, network: Optional[YOLO] = None, metrics: Optional[dict] = None):
        self.config = config
        self.network = network or YOLO(len(config.class_names), config.anchors, config.depth, config.width)
        self.metrics = metrics or {}

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        path = Path(path)
        with atomic_write(path, overwrite=overwrite) as tmp:
            torch.save({"kind": "napari-bioid cell detector", "config": asdict(self.config),
                        "state": {k: v.detach().cpu() for k, v in self.network.state_dict().items()}, "metrics": self.metrics}, tmp)
        return path

    @classmethod
    def load(cls, path: PathLike) -> "Detector":
        path = Path(path)
        if not path.is_file():
            raise BioidInputError(f"{path}: no such model file")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            cfg = DetectorConfig(**d["config"])
        except Exception as exc:
            raise BioidInputError(f"{path}: not a cell detector saved by napari-bioid ({exc})") from exc
        det = cls(cfg, metrics=d.get("metrics", {}))
        det.network.load_state_dict(d["state"])
        det.network.eval()
        return det

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def detect(self, image: np.ndarray, um_per_px: Optional[float] = None, conf: Optional[float] = None, iou: float = 0.45, tile: int = 512,
               overlap: int = 64, progress: Optional[ProgressCallback] = None, cancel: Any = None) -> Dict[str, np.ndarray]:
        """Boxes on an RGB image of any size.

        Parameters
        ----------
        image : uint8 [y, x, 3]
        um_per_px : float, optional
            The image's pixel size; when unknown the model's is assumed, with a warning.
        conf, iou : float
            Confidence threshold (default: the model's operating point
            ``config.conf``; ~0.001 for mAP) and NMS IoU.
        tile, overlap : int
            Tile size and overlap in model pixels.

        Returns
        -------
        dict with ``boxes`` float (n, 4) in the input's pixels, ``scores`` (n,), ``classes`` (n,) int.

        Raises
        ------
        BioidInputError
            Not an RGB image.
        """
        image = check_rgb(image)
        conf = self.config.conf if conf is None else conf
        if um_per_px is None:
            warnings.warn(f"the image's pixel size is unknown: assuming the model's {self.config.um_per_px} µm/px", stacklevel=2)
            um_per_px = self.config.um_per_px
        f = um_per_px / self.config.um_per_px  # input px → model px
        net = self.network.eval()
        H, W = image.shape[:2]
        t_in = max(32, int(round(tile / f)))  # tile and overlap in input pixels
        o_in = int(round(overlap / f))
        step = max(1, t_in - o_in)
        ys = list(range(0, max(H - o_in, 1), step)) or [0]
        xs = list(range(0, max(W - o_in, 1), step)) or [0]
        boxes, scores, classes = [], [], []
        total = len(ys) * len(xs)
        k = 0
        for y0 in ys:
            for x0 in xs:
                check_cancel(cancel)
                crop = image[y0 : y0 + t_in, x0 : x0 + t_in]
                small = resample(crop, f)
                h, w = small.shape[:2]
                ph, pw = (32 - h % 32) % 32, (32 - w % 32) % 32
                x = torch.from_numpy(np.pad(small, ((0, ph), (0, pw), (0, 0)), constant_values=0)).permute(2, 0, 1)[None].float() / 255
                pred = net.decode(net(x))[0]
                score = pred[:, 4] * (pred[:, 5:].max(1)[0] if net.nc > 1 else 1.0)
                keep = score >= conf  # no cap: a tile has at most 3 × (h·w/64 + h·w/256 + h·w/1024) candidates
                p = pred[keep]
                if len(p):
                    b = torch.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1) / f
                    b[:, [0, 2]] += x0
                    b[:, [1, 3]] += y0
                    # drop boxes centred in the overlap margin that a neighbouring tile sees whole
                    cx, cy = (b[:, 0] + b[:, 2]) / 2 - x0, (b[:, 1] + b[:, 3]) / 2 - y0
                    m = o_in / 2
                    inner = ((cx >= (m if x0 > 0 else -1e9)) & (cx < (crop.shape[1] - m if x0 + t_in < W else 1e9)) &
                             (cy >= (m if y0 > 0 else -1e9)) & (cy < (crop.shape[0] - m if y0 + t_in < H else 1e9)))
                    bt, st = b[inner], score[keep][inner]
                    ct = p[inner, 5:].argmax(1) if net.nc > 1 else torch.zeros(int(inner.sum()), dtype=torch.long)
                    # NMS within the tile for boxes that no other tile's box can reach (deeper inside than two
                    # box sides), so candidates never pile up over a large image; the band near a neighbour
                    # goes to the final NMS whole, which therefore equals one NMS over the image
                    if len(bt):
                        reach = 2 * float(torch.max(bt[:, 2:] - bt[:, :2]))
                        cxi, cyi = cx[inner], cy[inner]
                        deep = ((cxi >= (m + reach if x0 > 0 else -1e9)) & (cxi < (crop.shape[1] - m - reach if x0 + t_in < W else 1e9)) &
                                (cyi >= (m + reach if y0 > 0 else -1e9)) & (cyi < (crop.shape[0] - m - reach if y0 + t_in < H else 1e9)))
                        d_idx = torch.nonzero(deep).flatten()
                        sel = torch.cat([d_idx[nms(bt[d_idx], st[d_idx], iou)], torch.nonzero(~deep).flatten()])
                        bt, st, ct = bt[sel], st[sel], ct[sel]
                    boxes.append(bt)
                    scores.append(st)
                    classes.append(ct)
                k += 1
                report(progress, k, total, f"tile {k}/{total}")
        if not boxes:
            return {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}
        b, s, c = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        if len(s) > MAX_NMS:
            top = torch.topk(s, MAX_NMS).indices
            b, s, c = b[top], s[top], c[top]
        b[:, [0, 2]] = b[:, [0, 2]].clamp(0, W)
        b[:, [1, 3]] = b[:, [1, 3]].clamp(0, H)
        keep = nms(b, s, iou)
        return {"boxes": b[keep].numpy().astype(float), "scores": s[keep].numpy().astype(float), "classes": c[keep].numpy().astype(int)}


# ---------------------------------------------------------------------- training
def _hsv_jitter(img: np.ndarray, rng, gains=(0.015, 0.7, 0.4)) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    r = rng.uniform(-1, 1, 3) * np.asarray(gains) + 1
    hsv = rgb_to_hsv(img.astype(np.float32) / 255)
    hsv[..., 0] = (hsv[..., 0] * r[0]) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * r[1], 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * r[2], 0, 1)
    return (hsv_to_rgb(hsv) * 255).astype(np.uint8)


def _crop(sample: Sample, h: int, w: int, rng):
    H, W = sample.image.shape[:2]
    y0 = int(rng.integers(0, max(H - h, 0) + 1))
    x0 = int(rng.integers(0, max(W - w, 0) + 1))
    img = np.zeros((h, w, 3), np.uint8)
    part = sample.image[y0 : y0 + h, x0 : x0 + w]
    img[: part.shape[0], : part.shape[1]] = part
    b = sample.boxes - [x0, y0, x0, y0]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = b.copy()
    c[:, [0, 2]] = c[:, [0, 2]].clip(0, min(w, part.shape[1]))
    c[:, [1, 3]] = c[:, [1, 3]].clip(0, min(h, part.shape[0]))
    keep = ((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1]) >= 0.4 * np.maximum(area, 1e-9)) & (c[:, 2] - c[:, 0] > 2) & (c[:, 3] - c[:, 1] > 2)
    return img, c[keep], sample.classes[keep] if len(sample.classes) == len(sample.boxes) else np.zeros(int(keep.sum()), int)


def mosaic(samples: Sequence[Sample], size: int, rng, p_mosaic: float = 1.0):
    """One augmented training image (uint8 [size, size, 3]) and its boxes/classes."""
    if rng.random() < p_mosaic:
        cx, cy = (int(rng.uniform(0.25, 0.75) * size) for _ in range(2))
        img = np.zeros((size, size, 3), np.uint8)
        boxes, classes = [], []
        for (y0, y1), (x0, x1) in (((0, cy), (0, cx)), ((0, cy), (cx, size)), ((cy, size), (0, cx)), ((cy, size), (cx, size))):
            part, b, c = _crop(samples[int(rng.integers(len(samples)))], y1 - y0, x1 - x0, rng)
            img[y0:y1, x0:x1] = part
            boxes.append(b + [x0, y0, x0, y0]), classes.append(c)
        boxes, classes = np.concatenate(boxes), np.concatenate(classes)
    else:
        img, boxes, classes = _crop(samples[int(rng.integers(len(samples)))], size, size, rng)
    img = _hsv_jitter(img, rng)
    if rng.random() < 0.5:
        img, boxes = img[:, ::-1], np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
    if rng.random() < 0.5:
        img, boxes = img[::-1], np.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], 1)
    if rng.random() < 0.5:  # transpose (with the flips: all 8 symmetries of the square)
        img, boxes = img.transpose(1, 0, 2), boxes[:, [1, 0, 3, 2]]
    return np.ascontiguousarray(img), boxes.reshape(-1, 4), classes


class _EMA:
    def __init__(self, model, decay=0.9999, tau=2000):
        self.ema = copy.deepcopy(model).eval()
        self.decay = lambda n: decay * (1 - math.exp(-n / tau))
        self.updates = 0
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay(self.updates)
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)


def choose_confidence(det: Detector, samples: Sequence[Sample], grid: Sequence[float] = tuple(np.round(np.arange(0.2, 0.61, 0.05), 2))) -> float:
    """The confidence in ``grid`` with the best F1 (IoU 0.5) on ``samples``: the model's operating point.

    YOLOv5 trains objectness towards the box IoU, so a model whose boxes are
    small or loosely annotated scores lower; its F1-best threshold (chosen on
    held-out images, never on the test set) is stored in ``config.conf``."""
    preds, truths = [], []
    for s in samples:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = det.detect(s.image, s.um_per_px, conf=min(grid))
        preds.append((r["boxes"], r["scores"])), truths.append(s.boxes)
    return float(max(grid, key=lambda c: detection_metrics(preds, truths, 0.5, c)["f1"]))


def evaluate_detector(det: Detector, samples: Sequence[Sample], conf_map: float = 0.001, conf_use: Optional[float] = None) -> dict:
    """mAP50 (boxes at ``conf_map``) and precision/recall/F1 at IoU 0.5 of the boxes at ``conf_use`` (default the model's)."""
    conf_use = det.config.conf if conf_use is None else conf_use
    preds, truths = [], []
    for s in samples:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = det.detect(s.image, s.um_per_px, conf=conf_map)
        preds.append((r["boxes"], r["scores"])), truths.append(s.boxes)
    return detection_metrics(preds, truths, 0.5, conf_use)


def train_detector(train: Sequence[Sample], val: Sequence[Sample] = (), class_names: Sequence[str] = ("nucleus",), steps: int = 2000,
                   batch_size: int = 16, size: int = 256, lr: float = 0.01, depth: float = 0.33, width: float = 0.25, seed: int = 0,
                   init: Optional[Detector] = None, val_every: int = 0, progress: Optional[ProgressCallback] = None, cancel: Any = None,
                   on_eval: Optional[Callable[[dict], None]] = None) -> Detector:
    """Train a detector on samples (at one pixel size); see the module docstring for the recipe.

    Parameters
    ----------
    train, val : sequences of :class:`~.data.Sample`
        ``val`` (exact boxes) chooses the saved checkpoint by mAP50 when
        ``val_every`` > 0, and is measured at the end.
    init : Detector, optional
        Fine-tune from these weights (its anchors and classes are kept).

    Returns
    -------
    Detector
        The EMA weights; ``metrics`` holds the validation results, steps and time.

    Raises
    ------
    BioidInputError
        No training samples or boxes, or samples at different pixel sizes.
    Cancelled
    """
    if not train or sum(len(s.boxes) for s in train) == 0:
        raise BioidInputError("no training images with boxes")
    scales = {round(s.um_per_px, 6) for s in list(train) + list(val)}
    if len(scales) != 1:
        raise BioidInputError(f"training and validation images must share one pixel size, got {sorted(scales)} µm/px")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init is not None:
        det = Detector(copy.deepcopy(init.config), copy.deepcopy(init.network))
    else:
        wh = np.concatenate([np.stack([s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1]], 1) for s in train if len(s.boxes)])
        cfg = DetectorConfig(list(class_names), fit_anchors(wh), depth, width, scales.pop(), size)
        det = Detector(cfg)
    nc = len(det.config.class_names)
    bad = [s.name for s in train if len(s.classes) and int(np.max(s.classes)) >= nc]
    if bad:
        raise BioidInputError(f"class indices outside the detector's classes {det.config.class_names} in {bad[:3]}")
    net = det.network.train()
    loss_fn = YoloLoss(net)
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (decay if p.ndim == 4 else no_decay).append(p)
    opt = torch.optim.SGD([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 5e-4}], lr=lr, momentum=0.937,
                          nesterov=True)
    ema = _EMA(net)
    warm = max(50, int(0.03 * steps))
    best = {"map50": -1.0, "state": None, "step": 0}
    history = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        check_cancel(cancel)
        frac = step / steps
        lr_now = lr * (step / warm if step <= warm else (1 - frac) * (1 - 0.01) + 0.01)
        for g in opt.param_groups:
            g["lr"] = lr_now
        imgs, targets = [], []
        for i in range(batch_size):
            img, b, c = mosaic(train, size, rng)
            imgs.append(img)
            if len(b):
                cxcywh = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
                targets.append(np.concatenate([np.full((len(b), 1), i), np.clip(c, 0, None)[:, None], cxcywh], 1))
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
        t = torch.from_numpy(np.concatenate(targets)).float() if targets else torch.zeros((0, 6))
        loss, parts = loss_fn(net(x), t, size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        ema.update(net)
        history.append([float(v) for v in parts])
        report(progress, step, steps, f"step {step}/{steps} loss box {parts[0]:.3f} obj {parts[1]:.3f}")
        if val and val_every and (step % val_every == 0 or step == steps):
            cand = Detector(det.config, ema.ema)
            m = evaluate_detector(cand, val)
            m["step"] = step
            if on_eval is not None:
                on_eval(m)
            if m["map50"] > best["map50"]:
                best = {"map50": m["map50"], "state": copy.deepcopy(ema.ema.state_dict()), "step": step, "metrics": m}
    final = copy.deepcopy(ema.ema)
    if best["state"] is not None:
        final.load_state_dict(best["state"])
    det = Detector(det.config, final.eval())
    det.metrics = {"steps": steps, "batch_size": batch_size, "size": size, "seconds": time.perf_counter() - t0,
                   "loss_last100": np.mean(history[-100:], axis=0).tolist() if history else None}
    if val:
        det.metrics["val"] = best.get("metrics") or evaluate_detector(det, val)
        det.metrics["best_step"] = best["step"] or steps
    return det
