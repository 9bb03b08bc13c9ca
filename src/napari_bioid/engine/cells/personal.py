"""Corrections and personal models: the fine-tuning loop of METHODS.md §4.

* **Corrections** of one image live beside it as ``<image>.cells.csv`` (the
  boxes file's columns; atomic, the previous version kept as ``.bak``) and are
  read back when the image is opened again.
* **A cell model** is a folder ``<name>/`` holding ``detector.pt``, an optional
  ``classifier.pt`` and ``model.json`` (name, classes, pixel size, the images it
  was tuned on, metrics before and after on a held-back corrected image, the
  model it was tuned from, date). ``default`` is the shipped pair. Personal
  models are kept under ``~/.napari-bioid/cell_models`` (``BIOID_CELL_MODELS``
  overrides) and listed by :func:`list_cell_models`.
* :func:`finetune` continues the detector (and the classifier) from the current
  weights on corrected images: the detector on their boxes (then its operating
  confidence is chosen again by F1 on the held-back image, since training moves
  the scores), the classifier on their boxes' classes; a class the classifier
  does not know yet gets a new output (the others keep their weights).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write
from ..progress import ProgressCallback, check_cancel, report
from .boxes import detection_metrics, match_boxes
from .classifier import Classifier, default_classifier_path, train_classifier
from .data import Sample, resample
from .detector import Detector, choose_confidence, default_detector_path, train_detector
from .io import BOX_COLUMNS, read_boxes

SIDECAR_SUFFIX = ".cells.csv"


def models_root() -> Path:
    """Where personal cell models are kept (``BIOID_CELL_MODELS`` or ``~/.napari-bioid/cell_models``)."""
    return Path(os.environ.get("BIOID_CELL_MODELS", Path.home() / ".napari-bioid" / "cell_models"))


# ---------------------------------------------------------------------- corrections beside the image
def sidecar_path(image_path: PathLike) -> Path:
    """``<image>.cells.csv`` beside the image file."""
    p = Path(image_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def save_corrections(boxes: pd.DataFrame, path: PathLike) -> Path:
    """Write a boxes table atomically, keeping the previous file as ``.bak``."""
    path = Path(path)
    cols = [c for c in BOX_COLUMNS if c in boxes] + [c for c in ("edited",) if c in boxes]
    with atomic_write(path, overwrite=True) as tmp:
        boxes[cols].to_csv(tmp, index=False, float_format="%.2f")
    return path


def load_corrections(path: PathLike) -> Optional[pd.DataFrame]:
    """The saved boxes of an image, or None when there are none. Raises :class:`BioidInputError` on a broken file."""
    path = Path(path)
    return read_boxes(path) if path.is_file() else None


# ---------------------------------------------------------------------- cell models (detector + classifier)
@dataclass
class CellModel:
    """A detector, an optional classifier and what describes them."""

    name: str
    detector: Detector
    classifier: Optional[Classifier] = None
    info: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def class_names(self) -> List[str]:
        return list(self.classifier.config.class_names if self.classifier is not None else self.detector.config.class_names)

    @property
    def um_per_px(self) -> float:
        return self.detector.config.um_per_px

    def save(self, folder: PathLike, overwrite: bool = False) -> Path:
        """Write ``detector.pt``, ``classifier.pt``, ``model.json`` into ``folder`` (atomically, file by file)."""
        folder = Path(folder)
        if (folder / "model.json").exists() and not overwrite:
            raise FileExistsError(f"{folder}: a cell model of that name exists; choose another name")
        folder.mkdir(parents=True, exist_ok=True)
        self.detector.save(folder / "detector.pt", overwrite=True)
        if self.classifier is not None:
            self.classifier.save(folder / "classifier.pt", overwrite=True)
        info = {**self.info, "name": self.name, "classes": self.class_names, "um_per_px": self.um_per_px,
                "classifier": self.classifier is not None}
        with atomic_write(folder / "model.json", overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(info, indent=1, default=float))
        self.path = folder
        return folder


def default_cell_model() -> CellModel:
    """The shipped nucleus detector with the shipped CRC cell-type classifier."""
    clf = Classifier.load(default_classifier_path()) if default_classifier_path().is_file() else None
    return CellModel("default", Detector.load(default_detector_path()), clf, {"shipped": True})


def load_cell_model(name_or_path: PathLike = "default") -> CellModel:
    """``"default"``, a personal model's name (under :func:`models_root`) or a model folder.

    Raises :class:`BioidInputError` when there is no such model."""
    if str(name_or_path) == "default":
        return default_cell_model()
    folder = Path(name_or_path)
    if not (folder / "model.json").is_file():
        folder = models_root() / str(name_or_path)
    if not (folder / "model.json").is_file():
        raise BioidInputError(f"{name_or_path}: no cell model of that name or folder (looked in {models_root()})")
    info = json.loads((folder / "model.json").read_text())
    clf = Classifier.load(folder / "classifier.pt") if (folder / "classifier.pt").is_file() else None
    return CellModel(info.get("name", folder.name), Detector.load(folder / "detector.pt"), clf, info, folder)


def list_cell_models(root: Optional[PathLike] = None) -> List[str]:
    """``["default", <personal model names>…]`` (newest personal model last)."""
    root = Path(root) if root is not None else models_root()
    names = sorted((p for p in root.glob("*/model.json")), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return ["default"] + [p.parent.name for p in names]


# ---------------------------------------------------------------------- fine-tuning
@dataclass
class Corrected:
    """One corrected image: RGB uint8 [y, x, 3], its boxes table (px, with ``class``) and pixel size."""

    name: str
    image: np.ndarray
    boxes: pd.DataFrame
    um_per_px: float


def _sample(c: Corrected, um: float, class_names: Sequence[str]) -> Sample:
    f = c.um_per_px / um
    b = c.boxes[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float) * f
    names = list(class_names)
    cls = np.array([names.index(str(k)) if str(k) in names else -1 for k in c.boxes.get("class", pd.Series(["?"] * len(b)))], np.int64)
    return Sample(c.name, resample(c.image, f), b, cls, um, exact=True)


def evaluate_cell_model(model: CellModel, images: Sequence[Corrected], conf: Optional[float] = None) -> dict:
    """Detection F1 at IoU 0.5 and class accuracy of the matched boxes, on corrected images."""
    from .pipeline import detect_cells

    conf = model.detector.config.conf if conf is None else conf
    preds, truths, right, n_matched = [], [], 0, 0
    for c in images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = detect_cells(c.image, c.um_per_px, model.detector, model.classifier, conf=0.001)
        t = c.boxes[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)
        p = df[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)
        preds.append((p, df["score"].to_numpy(float)))
        truths.append(t)
        sel = df["score"].to_numpy() >= conf
        if "class" in c.boxes and sel.any() and len(t):
            from .boxes import box_iou

            ps = p[sel]
            tp = match_boxes(ps, df["score"].to_numpy()[sel], t, 0.5)
            if tp.any():
                iou = box_iou(torch.tensor(ps[tp]), torch.tensor(t)).numpy()
                j = iou.argmax(1)
                right += int((df["class"].to_numpy()[sel][tp] == c.boxes["class"].astype(str).to_numpy()[j]).sum())
                n_matched += int(tp.sum())
    m = detection_metrics(preds, truths, 0.5, conf)
    m["class_accuracy"] = right / n_matched if n_matched else None
    return m


def finetune(model: CellModel, images: Sequence[Corrected], name: str, detector_steps: int = 300, classifier_epochs: int = 5,
             tune_detector: bool = True, tune_classifier: bool = True, batch_size: int = 8, held_back: Optional[int] = None,
             seed: int = 0, progress: Optional[ProgressCallback] = None, cancel: Any = None,
             on_loss: Optional[Any] = None) -> CellModel:
    """Fine-tune a cell model from its current weights on corrected images → a new, named :class:`CellModel`.

    Parameters
    ----------
    model : the model to start from (its weights are not changed).
    images : corrected images (boxes in the image's pixels, ``class`` per box).
    name : the personal model's name.
    detector_steps, classifier_epochs : training length (SGD from the current
        weights, warm-up, EMA: the recipes of :func:`train_detector` and
        :func:`train_classifier` with a lower learning rate).
    held_back : index of the image measured before and after and not trained
        on; default the last one when there are at least two images (with one
        image the metrics are on the training image, and say so).
    on_loss : optional ``on_loss(stage, step, loss)`` for a live loss plot.

    Returns
    -------
    CellModel (not yet saved) whose ``info`` records the images, the base model
    and the metrics before/after.

    Raises
    ------
    BioidInputError
        No corrected image, or no boxes in them.
    Cancelled
    """
    if not images:
        raise BioidInputError("no corrected images to fine-tune on")
    if sum(len(c.boxes) for c in images) == 0:
        raise BioidInputError("the corrected images hold no boxes")
    if not name or any(ch in name for ch in "/\\") or name == "default":
        raise BioidInputError(f"{name!r} is not a usable model name")
    if held_back is None:
        held_back = len(images) - 1 if len(images) > 1 else None
    train_imgs = [c for i, c in enumerate(images) if i != held_back]
    test_imgs = [images[held_back]] if held_back is not None else list(images)
    report(progress, 0, 100, "measuring the current model")
    before = evaluate_cell_model(model, test_imgs)
    det, clf = model.detector, model.classifier
    um = det.config.um_per_px
    w_det = 0.7 if (tune_detector and tune_classifier and clf is not None) else 1.0

    if tune_detector:
        det_samples = [_sample(c, um, ["x"]) for c in train_imgs]
        for s in det_samples:
            s.classes = np.zeros(len(s.boxes), np.int64)

        def det_progress(done, total, msg):
            report(progress, int(100 * w_det * done / max(total, 1)), 100, f"detector: {msg}")
            if on_loss is not None and "loss box" in msg:
                parts = msg.split()
                on_loss("detector", done, float(parts[parts.index("box") + 1]) + float(parts[parts.index("obj") + 1]))

        det = train_detector(det_samples, steps=detector_steps, batch_size=batch_size, size=det.config.train_size, lr=0.002, init=det,
                             seed=seed, progress=det_progress, cancel=cancel)
        if held_back is not None:  # the scores moved: choose the operating confidence again, on the held-back image
            det.config.conf = choose_confidence(det, [_sample(c, um, ["x"]) for c in test_imgs])
    if tune_classifier and clf is not None:
        check_cancel(cancel)
        found = [str(k) for c in train_imgs for k in c.boxes.get("class", [])]
        new = [k for k in dict.fromkeys(found) if k not in clf.config.class_names and k not in ("", "nan", "unclassified")]
        base = clf
        if new:  # a new output per new class; the known classes keep their weights
            base = Classifier(copy.deepcopy(clf.config), copy.deepcopy(clf.network))
            base.config.class_names = list(clf.config.class_names) + new
            old = base.network.fc
            fc = torch.nn.Linear(old.in_features, len(base.config.class_names))
            with torch.no_grad():
                fc.weight[: old.out_features] = old.weight
                fc.bias[: old.out_features] = old.bias
            base.network.fc = fc
        cls_samples = [_sample(c, um, base.config.class_names) for c in train_imgs]
        n_typed = np.bincount(np.concatenate([s.classes[s.classes >= 0] for s in cls_samples]), minlength=len(base.config.class_names))
        if (n_typed > 0).sum() >= 2:

            def cls_progress(done, total, msg):
                report(progress, int(100 * (w_det + (1 - w_det) * done / max(total, 1))), 100, f"classifier: {msg}")
                if on_loss is not None and "loss" in msg:
                    on_loss("classifier", done, float(msg.split()[-1]))

            clf = train_classifier(cls_samples, epochs=classifier_epochs, batch_size=32, lr=0.005, init=base, seed=seed,
                                   progress=cls_progress, cancel=cancel)
        else:
            warnings.warn("the corrected boxes hold fewer than two classes: the classifier is kept as it was", stacklevel=2)
    tuned = CellModel(name, det, clf)
    report(progress, 99, 100, "measuring the tuned model")
    after = evaluate_cell_model(tuned, test_imgs)
    tuned.info = {"tuned_from": model.name, "tuned_on": [c.name for c in train_imgs], "measured_on": [c.name for c in test_imgs],
                  "measured_on_training_image": held_back is None, "metrics_before": before, "metrics_after": after,
                  "detector_steps": detector_steps if tune_detector else 0, "classifier_epochs": classifier_epochs if tune_classifier else 0,
                  "created": datetime.datetime.now().isoformat(timespec="seconds")}
    report(progress, 100, 100, "done")
    return tuned
