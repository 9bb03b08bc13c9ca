"""Boxes: IoU, CIoU, non-maximum suppression, matching and detection metrics (in torch/numpy).

Boxes are ``[x_min, y_min, x_max, y_max]`` in pixels (x = column, y = row).
CIoU follows Zheng et al., "Distance-IoU loss" (AAAI 2020); mAP50 is the area
under the interpolated precision-recall curve at IoU 0.5 (PASCAL VOC 2010+
all-point interpolation, as YOLOv5 reports it).
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes ``a`` (n, 4) and ``b`` (m, 4) → (n, m)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise complete IoU of boxes given as (cx, cy, w, h), shapes (n, 4) → (n,)."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0).prod(dim=1)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter + eps
    iou = inter / union
    cw = torch.maximum(a2, b2) - torch.minimum(a1, b1)
    c2 = (cw**2).sum(dim=1) + eps
    rho2 = ((a[:, :2] - b[:, :2]) ** 2).sum(dim=1)
    v = (4 / math.pi**2) * (torch.atan(b[:, 2] / (b[:, 3] + eps)) - torch.atan(a[:, 2] / (a[:, 3] + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.45) -> torch.Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes, by descending score.

    Exactly the greedy result, computed on the pairs of boxes that can overlap
    only: boxes up to 4 × the median size overlap only when their centres are
    closer than the diagonal of the largest of them, so their pairs come from a
    k-d tree (``scipy.spatial.cKDTree.query_pairs``); the few larger boxes are
    compared with all, in chunks. The greedy pass visits each box once. A whole
    slide region's tens of thousands of nucleus boxes take well under a second,
    and memory stays bounded for an untrained network's boxes too.
    """
    from scipy.spatial import cKDTree

    n = len(boxes)
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].detach().double().cpu().numpy()
    wh = np.clip(b[:, 2:] - b[:, :2], 0, None)
    centres = (b[:, :2] + b[:, 2:]) / 2
    area = wh.prod(axis=1)
    side = wh.max(axis=1)
    # boxes up to 4 × the median size pair up through a k-d tree; the few larger ones (an untrained network's,
    # at a low threshold) are compared with every box in chunks, so memory stays bounded either way
    large = side > 4 * max(float(np.median(side)), 1e-6)

    def over(p, q):  # the pairs (p ranks higher) whose IoU exceeds the threshold
        p, q = np.minimum(p, q), np.maximum(p, q)
        lt = np.maximum(b[p, :2], b[q, :2])
        rb = np.minimum(b[p, 2:], b[q, 2:])
        inter = np.clip(rb - lt, 0, None).prod(axis=1)
        m = inter / (area[p] + area[q] - inter + 1e-9) > iou_threshold
        return p[m], q[m]

    # boxes up to 4 × the median size pair up through a k-d tree; the few larger ones (an untrained network's,
    # at a low threshold) are compared with every box in chunks: memory stays bounded either way
    small = np.flatnonzero(~large)
    ps, qs = [], []
    if len(small) > 1:
        reach = float(np.hypot(*wh[small].max(axis=0))) + 1e-6
        pr = cKDTree(centres[small]).query_pairs(reach, output_type="ndarray")
        for s0 in range(0, len(pr), 1 << 20):
            a, c = over(small[pr[s0 : s0 + (1 << 20), 0]], small[pr[s0 : s0 + (1 << 20), 1]])
            ps.append(a), qs.append(c)
    big = np.flatnonzero(large)
    step = max(1, (1 << 20) // max(n, 1))
    for s0 in range(0, len(big), step):
        i, j = np.meshgrid(big[s0 : s0 + step], np.arange(n), indexing="ij")
        keep = (j != i) & ~(large[j] & (j < i))  # each large-large pair once
        a, c = over(i[keep], j[keep])
        ps.append(a), qs.append(c)
    p = np.concatenate(ps) if ps else np.zeros(0, int)
    q = np.concatenate(qs) if qs else np.zeros(0, int)
    if len(p):
        srt = np.argsort(p, kind="stable")
        p, q = p[srt], q[srt]
        starts = np.searchsorted(p, np.arange(n + 1))
    alive = np.ones(n, bool)
    if len(p):
        for i in np.unique(p):
            if alive[i]:
                alive[q[starts[i] : starts[i + 1]]] = False
    return order[torch.from_numpy(np.flatnonzero(alive))]


def match_boxes(pred: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy one-to-one matching by descending score: bool (n_pred,) true positives at ``iou_threshold``."""
    tp = np.zeros(len(pred), bool)
    if len(pred) == 0 or len(truth) == 0:
        return tp
    iou = box_iou(torch.tensor(pred, dtype=torch.float64), torch.tensor(truth, dtype=torch.float64)).numpy()
    taken = np.zeros(len(truth), bool)
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(~taken, iou[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            tp[i], taken[j] = True, True
    return tp


def detection_metrics(preds, truths, iou_threshold: float = 0.5, score_threshold: float = 0.5) -> Dict[str, float]:
    """mAP at ``iou_threshold`` over images, and precision/recall/F1 of the boxes scoring ≥ ``score_threshold``.

    ``preds``: list of (boxes (n, 4), scores (n,)); ``truths``: list of boxes (m, 4); one entry per image.
    """
    all_scores, all_tp, n_true = [], [], 0
    tp_at, n_pred_at = 0, 0
    for (boxes, scores), truth in zip(preds, truths):
        boxes, scores, truth = np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float), np.asarray(truth, float).reshape(-1, 4)
        tp = match_boxes(boxes, scores, truth, iou_threshold)
        all_scores.append(scores), all_tp.append(tp)
        n_true += len(truth)
        sel = scores >= score_threshold
        tp_at += int(match_boxes(boxes[sel], scores[sel], truth, iou_threshold).sum())
        n_pred_at += int(sel.sum())
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    ctp = np.cumsum(tp[order])
    recall = ctp / max(n_true, 1)
    precision = ctp / np.arange(1, len(ctp) + 1)
    # all-point interpolation
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    ap = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
    p = tp_at / n_pred_at if n_pred_at else 0.0
    r = tp_at / n_true if n_true else 0.0
    return {"map50" if iou_threshold == 0.5 else f"map{int(iou_threshold * 100)}": ap, "precision": p, "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0, "n_true": n_true, "n_pred": n_pred_at, "tp": tp_at}


def match_points(pred: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """One-to-one matching of predicted to true points within ``radius`` (Hungarian, minimum total distance).

    ``pred`` (n, 2), ``truth`` (m, 2) in the same units. Returns int (k, 2) pairs (pred index, truth index).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    pred, truth = np.asarray(pred, float).reshape(-1, 2), np.asarray(truth, float).reshape(-1, 2)
    if not len(pred) or not len(truth):
        return np.zeros((0, 2), int)
    near = cKDTree(pred).sparse_distance_matrix(cKDTree(truth), radius, output_type="coo_matrix")
    if near.nnz == 0:
        return np.zeros((0, 2), int)
    # only points with a neighbour take part; a large cost marks pairs further than the radius
    pi, ti = np.unique(near.row), np.unique(near.col)
    cost = np.full((len(pi), len(ti)), 1e6)
    cost[np.searchsorted(pi, near.row), np.searchsorted(ti, near.col)] = near.data
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] <= radius
    return np.stack([pi[r[ok]], ti[c[ok]]], 1)


def point_detection_metrics(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], radius: float) -> Dict[str, float]:
    """Precision, recall and F1 of detected centres against true centres within ``radius``, pooled over images.

    The convention of Sirinukunwattana et al. (IEEE TMI 2016): a detection is correct when it lies within 6 px
    (20×) of an annotated nucleus centre, each annotation matched once.
    """
    tp = n_pred = n_true = 0
    for p, t in zip(preds, truths):
        tp += len(match_points(p, t, radius))
        n_pred += len(p)
        n_true += len(t)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_true if n_true else 0.0
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "n_true": n_true, "n_pred": n_pred, "tp": tp}
