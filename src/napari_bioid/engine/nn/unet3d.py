"""3D residual U-Net with CoordConv, as in DeepETPicker.

Reference: Liu G. et al., "DeepETPicker: fast and accurate 3D particle picking
for cryo-electron tomography using weakly supervised deep learning", Nature
Communications 15, 2090 (2024); CoordConv from Liu R. et al., "An intriguing
failing of convolutional neural networks and the CoordConv solution",
NeurIPS 2018. Defaults follow ``METHODS.md`` section 1: 4 levels with channels
(24, 48, 72, 108), residual blocks of three 3×3×3 conv + BatchNorm + ELU,
average-pool down-sampling, transposed-conv up-sampling, skip connections.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def coord_channels(x: torch.Tensor) -> torch.Tensor:
    """Three channels holding each voxel's z, y, x position scaled to [-1, 1].

    ``x`` has shape (B, C, Z, Y, X); the result (B, 3, Z, Y, X) has ``x``'s
    dtype and device. Positions are relative to the block, so the network
    stays usable in sliding windows.
    """
    b, _, *size = x.shape
    axes = [torch.linspace(-1.0, 1.0, n, dtype=x.dtype, device=x.device) if n > 1 else torch.zeros(1, dtype=x.dtype, device=x.device) for n in size]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    return grid.unsqueeze(0).expand(b, -1, -1, -1, -1)


class CoordConv3d(nn.Module):
    """Concatenate :func:`coord_channels` to the input, then apply ``module``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(torch.cat([x, coord_channels(x)], dim=1))


class ResBlock3d(nn.Module):
    """Three 3×3×3 conv + BatchNorm layers with ELU and a residual connection.

    ``in_ch`` → ``out_ch``; a 1×1×1 convolution matches the shortcut's
    channels when they differ. Spatial size is unchanged.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        layers = []
        ch = in_ch
        for i in range(3):
            layers += [nn.Conv3d(ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm3d(out_ch)]
            if i < 2:
                layers.append(nn.ELU(inplace=True))
            ch = out_ch
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv3d(in_ch, out_ch, 1, bias=False)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResUNet3d(nn.Module):
    """Residual 3D U-Net with CoordConv at the input of every block.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for a tomogram).
    out_channels : int
        Background + K classes (softmax) or 1 (sigmoid).
    channels : sequence of int
        Channels per level; ``len(channels)`` levels, so inputs must have
        every spatial size divisible by ``2 ** (len(channels) - 1)``.
    coordconv : bool
        Add the three coordinate channels at every block input.

    Input (B, in_channels, Z, Y, X) float32 → logits (B, out_channels, Z, Y, X).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, channels: Sequence[int] = (24, 48, 72, 108), coordconv: bool = True):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        extra = 3 if coordconv else 0

        def block(i: int, o: int) -> nn.Module:
            b = ResBlock3d(i + extra, o)
            return CoordConv3d(b) if coordconv else b

        self.encoders = nn.ModuleList()
        prev = in_channels
        for c in self.channels:
            self.encoders.append(block(prev, c))
            prev = c
        self.pool = nn.AvgPool3d(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for c_low, c_high in zip(reversed(self.channels[:-1]), reversed(self.channels[1:])):
            self.ups.append(nn.ConvTranspose3d(c_high, c_low, 2, stride=2))
            self.decoders.append(block(2 * c_low, c_low))
        self.head = nn.Conv3d(self.channels[0], out_channels, 1)

    @property
    def divisor(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            if i:
                x = self.pool(x)
            x = enc(x)
            skips.append(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)
