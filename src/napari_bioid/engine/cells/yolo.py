"""A YOLOv5-style detector in torch (METHODS.md §4; after Ultralytics YOLOv5 v6, Jocher et al. 2020–2022).

Backbone: Conv(6×6, stride 2) stem, CSP stages of C3 blocks with stride-2
convolutions, SPPF (three chained 5×5 max-pools). Neck: PAN (top-down with
up-sampling and concatenation, then bottom-up with stride-2 convolutions).
Heads: a 1×1 convolution per level (strides 8, 16, 32), ``na`` anchors per
level, each predicting (x, y, w, h, objectness, classes). Decoding as YOLOv5:
xy = (2σ − 0.5 + grid) · stride, wh = (2σ)² · anchor. Loss: 1 − CIoU for
boxes, BCE for objectness (target = the CIoU of the matched prediction,
balance 4 / 1 / 0.4 over the levels) and classes; targets go to the cell of the
centre and its two nearest neighbours, for every anchor whose width and height
ratios to the box are below 4.

``depth`` and ``width`` scale the blocks and channels like YOLOv5's n/s/m
models (n: 0.33, 0.25).
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn as nn

from .boxes import ciou


class Conv(nn.Module):
    """Conv2d + BatchNorm + SiLU."""

    def __init__(self, c1, c2, k=1, s=1, p=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 1), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with 3 convolutions."""

    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        c_ = c2 // 2
        self.cv1, self.cv2, self.cv3 = Conv(c1, c_, 1), Conv(c1, c_, 1), Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], dim=1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1), Conv(c_ * 4, c2, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], dim=1))


class YOLO(nn.Module):
    """The detector. ``forward`` returns the raw head maps, one (B, na, H, W, 5 + nc) tensor per level."""

    strides = (8, 16, 32)

    def __init__(self, n_classes: int = 1, anchors: Sequence[Sequence[float]] = ((10, 13, 16, 30, 33, 23),) * 3,
                 depth: float = 0.33, width: float = 0.25):
        super().__init__()
        ch = [max(8, int(math.ceil(c * width / 8) * 8)) for c in (64, 128, 256, 512, 1024)]
        n = [max(1, round(k * depth)) for k in (3, 6, 9, 3)]
        self.nc = n_classes
        self.no = 5 + n_classes
        a = torch.tensor(anchors, dtype=torch.float32).view(3, -1, 2)
        self.na = a.shape[1]
        self.register_buffer("anchors", a)  # pixels
        self.stem = Conv(3, ch[0], 6, 2, 2)
        self.b1 = nn.Sequential(Conv(ch[0], ch[1], 3, 2), C3(ch[1], ch[1], n[0]))
        self.b2 = nn.Sequential(Conv(ch[1], ch[2], 3, 2), C3(ch[2], ch[2], n[1]))  # P3/8
        self.b3 = nn.Sequential(Conv(ch[2], ch[3], 3, 2), C3(ch[3], ch[3], n[2]))  # P4/16
        self.b4 = nn.Sequential(Conv(ch[3], ch[4], 3, 2), C3(ch[4], ch[4], n[3]), SPPF(ch[4], ch[4]))  # P5/32
        self.h1 = Conv(ch[4], ch[3], 1)
        self.h2 = C3(ch[3] * 2, ch[3], n[3], shortcut=False)
        self.h3 = Conv(ch[3], ch[2], 1)
        self.h4 = C3(ch[2] * 2, ch[2], n[3], shortcut=False)  # out P3
        self.h5 = Conv(ch[2], ch[2], 3, 2)
        self.h6 = C3(ch[2] * 2, ch[3], n[3], shortcut=False)  # out P4
        self.h7 = Conv(ch[3], ch[3], 3, 2)
        self.h8 = C3(ch[3] * 2, ch[4], n[3], shortcut=False)  # out P5
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.heads = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in (ch[2], ch[3], ch[4]))
        self._init_biases()

    def _init_biases(self):
        for head, s in zip(self.heads, self.strides):
            b = head.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)  # ~8 objects per 640² image prior
            b.data[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if self.nc > 1 else 0.0

    def forward(self, x) -> List[torch.Tensor]:
        p3 = self.b2(self.b1(self.stem(x)))
        p4 = self.b3(p3)
        p5 = self.b4(p4)
        t5 = self.h1(p5)
        t4 = self.h3(self.h2(torch.cat([self.up(t5), p4], 1)))
        o3 = self.h4(torch.cat([self.up(t4), p3], 1))
        o4 = self.h6(torch.cat([self.h5(o3), t4], 1))
        o5 = self.h8(torch.cat([self.h7(o4), t5], 1))
        out = []
        for head, f in zip(self.heads, (o3, o4, o5)):
            b, _, h, w = f.shape
            out.append(head(f).view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return out

    def decode(self, maps: List[torch.Tensor]) -> torch.Tensor:
        """Raw maps → (B, N, 5 + nc): cx, cy, w, h (px), objectness, class probabilities (sigmoid)."""
        outs = []
        for level, (p, s) in enumerate(zip(maps, self.strides)):
            b, na, h, w, no = p.shape
            gy, gx = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
            grid = torch.stack([gx, gy], -1).view(1, 1, h, w, 2).float()
            y = p.sigmoid()
            xy = (y[..., :2] * 2 - 0.5 + grid) * s
            wh = (y[..., 2:4] * 2) ** 2 * self.anchors[level].view(1, na, 1, 1, 2)
            outs.append(torch.cat([xy, wh, y[..., 4:]], -1).view(b, -1, no))
        return torch.cat(outs, 1)


class YoloLoss:
    """YOLOv5's loss (see the module docstring). ``targets``: (n, 6) = image index, class, cx, cy, w, h in px."""

    def __init__(self, model: YOLO, box_gain=0.05, obj_gain=1.0, cls_gain=0.5, anchor_t=4.0):
        self.m = model
        self.gains = (box_gain, obj_gain, cls_gain)
        self.anchor_t = anchor_t
        self.balance = (4.0, 1.0, 0.4)
        self.bce = nn.BCEWithLogitsLoss()

    def __call__(self, maps: List[torch.Tensor], targets: torch.Tensor, image_size: int):
        dev = maps[0].device
        lbox, lobj, lcls = torch.zeros(1, device=dev), torch.zeros(1, device=dev), torch.zeros(1, device=dev)
        for level, p in enumerate(maps):
            s = self.m.strides[level]
            b, na, h, w, _ = p.shape
            tobj = torch.zeros(p.shape[:4], device=dev)
            if len(targets):
                anchors = self.m.anchors[level] / s  # grid units
                t = targets.clone()
                t[:, 2:6] /= s
                r = t[None, :, 4:6] / anchors[:, None]  # (na, n, 2)
                ok = torch.max(r, 1 / r).max(2)[0] < self.anchor_t
                ai = torch.arange(na, device=dev)[:, None].expand(na, len(t))[ok]
                tt = t[None].expand(na, -1, -1)[ok]
                gxy = tt[:, 2:4]
                gxi = torch.tensor([w, h], device=dev) - gxy
                j, k = ((gxy % 1 < 0.5) & (gxy > 1)).T
                l, m = ((gxi % 1 < 0.5) & (gxi > 1)).T
                off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=dev).float() * 0.5
                sel = torch.stack([torch.ones_like(j), j, k, l, m])
                tt = tt.repeat(5, 1, 1)[sel]
                ai = ai.repeat(5, 1)[sel]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[sel]
                gij = (tt[:, 2:4] - offsets).long()
                gi, gj = gij[:, 0].clamp(0, w - 1), gij[:, 1].clamp(0, h - 1)
                bi, cls = tt[:, 0].long(), tt[:, 1].long()
                ps = p[bi, ai, gj, gi]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[ai]
                tbox = torch.cat([tt[:, 2:4] - torch.stack([gi, gj], 1).float(), tt[:, 4:6]], 1)
                iou = ciou(torch.cat([pxy, pwh], 1), tbox)
                lbox += (1.0 - iou).mean()
                tobj[bi, ai, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.m.nc > 1:
                    tc = torch.zeros_like(ps[:, 5:])
                    tc[torch.arange(len(cls)), cls] = 1.0
                    lcls += self.bce(ps[:, 5:], tc)
            lobj += self.bce(p[..., 4], tobj) * self.balance[level]
        bs = maps[0].shape[0]
        loss = lbox * self.gains[0] + lobj * self.gains[1] * (image_size / 640) ** 2 + lcls * self.gains[2]
        return loss * bs, torch.cat([lbox, lobj, lcls]).detach()


def fit_anchors(wh, n: int = 9, iters: int = 30, seed: int = 0):
    """k-means of box sizes (w, h in px) by 1 − IoU of co-centred boxes; n anchors sorted by area, 3 per level."""
    import numpy as np

    wh = np.asarray(wh, float).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), n, replace=len(wh) < n)]
    for _ in range(iters):
        inter = np.minimum(wh[:, None], centres[None]).prod(2)
        iou = inter / (wh.prod(1)[:, None] + centres.prod(1)[None] - inter)
        a = iou.argmax(1)
        new = np.array([np.median(wh[a == k], axis=0) if np.any(a == k) else centres[k] for k in range(n)])
        if np.allclose(new, centres):
            break
        centres = new
    centres = centres[np.argsort(centres.prod(1))]
    return [list(map(float, centres[i * 3 : (i + 1) * 3].ravel())) for i in range(3)]
