"""Multi-task dense network: 2× super-resolution and per-pixel base calling from one backbone (METHODS.md §3).

Backbone: a 3×3 convolution to ``width`` (64) channels, then ``blocks`` (6)
dense blocks of ``layers`` (6) 3×3 convolutions with ReLU, each layer seeing
the concatenation of the block input and all earlier layers' outputs and adding
``growth`` (16) channels (Huang et al., CVPR 2017); a 1×1 convolution fuses each
block back to ``width`` channels and the block input is added (the residual
dense block of Zhang et al., CVPR 2018, which keeps six blocks trainable).

Branches:

* super-resolution: transposed convolution 4×4 stride 2 → ``width`` channels,
  ReLU, 3×3 convolution → ``out_channels`` (4) channels: the image at 2× sampling;
* base calling: two 3×3 convolutions (ReLU between) → ``n_classes`` (5) logits
  per pixel of the input grid: background, or a cluster centre of base A/C/G/T.

Also :func:`ssim`, the differentiable structural similarity index with an
11 × 11 Gaussian window of σ 1.5 (Wang et al., IEEE TIP 2004), for the
``1 − SSIM`` term of the loss.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class DenseBlock(nn.Module):
    """``layers`` densely connected 3×3 conv + ReLU, 1×1 fusion to ``width`` channels, residual."""

    def __init__(self, width: int = 64, layers: int = 6, growth: int = 16):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(width + i * growth, growth, 3, padding=1) for i in range(layers)])
        self.fuse = nn.Conv2d(width + layers * growth, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(F.relu(conv(torch.cat(feats, 1)), inplace=True))
        return x + self.fuse(torch.cat(feats, 1))


class MultiTaskNet(nn.Module):
    """(B, in_channels, H, W) → (super-resolved (B, out_channels, 2H, 2W), class logits (B, n_classes, H, W))."""

    def __init__(self, in_channels: int = 12, out_channels: int = 4, n_classes: int = 5, width: int = 64, blocks: int = 6,
                 layers: int = 6, growth: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.Sequential(*[DenseBlock(width, layers, growth) for _ in range(blocks)])
        self.global_fuse = nn.Conv2d(width, width, 3, padding=1)
        self.sr = nn.Sequential(nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                                nn.Conv2d(width, out_channels, 3, padding=1))
        self.call = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, n_classes, 3, padding=1))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        f = s + self.global_fuse(self.blocks(s))
        return self.sr(f), self.call(f)


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=None) -> torch.Tensor:
    g = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two (B, C, H, W) float tensors, each channel on its own (Wang et al. 2004).

    Gaussian-weighted local means, variances and covariance (``size`` × ``size``
    window of ``sigma`` px, valid region only), constants K1 = 0.01, K2 = 0.03
    of ``data_range``. Differentiable; 1 for identical images.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    C = a.shape[1]
    g = _gaussian_window(size, sigma, a.device, a.dtype)
    wy = g.view(1, 1, -1, 1).repeat(C, 1, 1, 1)
    wx = g.view(1, 1, 1, -1).repeat(C, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, wy, groups=C), wx, groups=C)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()
