"""The two-stage cell scanner as one call: detect boxes, re-classify each box's crop (METHODS.md §4).

:func:`detect_cells` is what the CLI (``bioid cells detect``) and the widget run; :func:`evaluate_two_stage`
measures the chain on annotated centroids (CRCHistoPhenotypes).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from ..progress import ProgressCallback, report
from .boxes import match_points
from .classifier import Classifier, classification_metrics
from .data import Sample, box_centres, check_rgb
from .detector import Detector

#: columns of :func:`detect_cells` (the boxes file without ``image``)
CELL_COLUMNS = ["x_min", "y_min", "x_max", "y_max", "score", "class", "class_probability"]


def detect_cells(image: np.ndarray, um_per_px: Optional[float] = None, detector: Optional[Detector] = None,
                 classifier: Optional[Classifier] = None, conf: Optional[float] = None, iou: float = 0.45, tile: int = 512,
                 progress: Optional[ProgressCallback] = None, cancel: Any = None) -> pd.DataFrame:
    """Boxes of every cell on an RGB image, each with a class and its probability.

    Parameters
    ----------
    image : uint8 [y, x, 3], any size (tiled; memory bounded by the tile).
    um_per_px : float, optional
        The image's pixel size; unknown: the detector's, with a warning.
    detector : Detector, optional
        Default: the shipped nucleus detector.
    classifier : Classifier, optional
        Re-classifies each box (class and probability from it); without one
        the detector's class and score are used.
    conf, iou : float
        Detection confidence (default: the detector's operating point) and NMS IoU.

    Returns
    -------
    DataFrame with :data:`CELL_COLUMNS`: box corners in the image's pixels
    (x = column, y = row), detector ``score``, ``class`` name,
    ``class_probability``; plus one ``p_<class>`` column per classifier class.

    Raises
    ------
    BioidInputError
        Not an RGB image, or an empty one.
    Cancelled
    """
    from .detector import default_detector_path

    image = check_rgb(image)
    detector = detector or Detector.load(default_detector_path())
    if um_per_px is None:
        warnings.warn(f"the image's pixel size is unknown: assuming the detector's {detector.config.um_per_px} µm/px", stacklevel=2)
        um_per_px = detector.config.um_per_px
    w_det = 0.8 if classifier is not None else 1.0

    def det_progress(done, total, msg):
        report(progress, int(1000 * w_det * done / max(total, 1)), 1000, f"detecting: {msg}")

    r = detector.detect(image, um_per_px, conf=conf, iou=iou, tile=tile, progress=det_progress, cancel=cancel)
    df = pd.DataFrame(r["boxes"], columns=CELL_COLUMNS[:4])
    df["score"] = r["scores"]
    if classifier is None:
        df["class"] = [detector.config.class_names[int(c)] for c in r["classes"]]
        df["class_probability"] = r["scores"]
    else:
        def cls_progress(done, total, msg):
            report(progress, int(1000 * (w_det + (1 - w_det) * done / max(total, 1))), 1000, msg)

        c = classifier.classify(image, r["boxes"], um_per_px, progress=cls_progress, cancel=cancel)
        names = classifier.config.class_names
        df["class"] = [names[int(k)] for k in c["classes"]]
        df["class_probability"] = c["probability"]
        for j, n in enumerate(names):
            df[f"p_{n}"] = c["probabilities"][:, j] if len(df) else []
    report(progress, 1000, 1000, f"{len(df)} cells")
    return df


def evaluate_two_stage(detector: Detector, classifier: Optional[Classifier], samples: Sequence[Sample], radius_um: float = 3.0,
                       conf: Optional[float] = None) -> dict:
    """The chain on annotated centroids: detection P/R/F1 within ``radius_um`` and classification of the matches.

    Every annotated nucleus (typed or not) is a detection target; the typed ones
    that a detection matched give the classification metrics (weighted F1 over
    the classes, confusion matrix). 3 µm is the 6 px at 20× of Sirinukunwattana
    et al., IEEE TMI 2016. Without a classifier only the detection is measured.
    """
    tp = n_pred = n_true = 0
    truth_c, pred_c = [], []
    names = classifier.config.class_names if classifier is not None else None
    for s in samples:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = detect_cells(s.image, s.um_per_px, detector, classifier, conf=conf)
        pc = box_centres(df[CELL_COLUMNS[:4]].to_numpy(float))
        tc = box_centres(s.boxes)
        pairs = match_points(pc, tc, radius_um / s.um_per_px)
        tp, n_pred, n_true = tp + len(pairs), n_pred + len(pc), n_true + len(tc)
        if names is None:
            continue
        typed = s.classes[pairs[:, 1]] >= 0 if len(pairs) else np.zeros(0, bool)
        truth_c.append(s.classes[pairs[typed, 1]])
        pred_c.append(np.array([names.index(c) for c in df["class"].to_numpy()[pairs[typed, 0]]], int))
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    out = {"radius_um": radius_um, "detection_precision": p, "detection_recall": r, "detection_f1": 2 * p * r / (p + r) if p + r else 0.0,
           "n_true": n_true, "n_pred": n_pred, "tp": tp}
    if names is not None:
        cm = classification_metrics(np.concatenate(truth_c), np.concatenate(pred_c), names)
        out.update(weighted_f1=cm["weighted_f1"], accuracy=cm["accuracy"], classification=cm)
    return out
