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

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

#: per spatial axis, (first voxel of the tensor within the whole level, the level's length)
Region = Sequence[Tuple[int, int]]


def coord_channels(x: torch.Tensor, region: Optional[Region] = None) -> torch.Tensor:
    """Three channels holding each voxel's z, y, x position scaled to [-1, 1].

    ``x`` has shape (B, C, Z, Y, X); the result (B, 3, Z, Y, X) has ``x``'s
    dtype and device. Positions are relative to the block, so the network
    stays usable in sliding windows. ``region``: ``x`` is only part of the
    block, starting at ``start`` of a level ``length`` voxels long per axis;
    the coordinates are then the block's, sliced (see
    :meth:`ResUNet3d.forward`'s ``crop``).
    """
    b, _, *size = x.shape
    region = region or [(0, n) for n in size]
    axes = []
    for n, (start, length) in zip(size, region):
        full = torch.linspace(-1.0, 1.0, length, dtype=x.dtype, device=x.device) if length > 1 else torch.zeros(1, dtype=x.dtype, device=x.device)
        axes.append(full[start : start + n])
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    return grid.unsqueeze(0).expand(b, -1, -1, -1, -1)


class CoordConv3d(nn.Module):
    """Concatenate :func:`coord_channels` to the input, then apply ``module``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, region: Optional[Region] = None) -> torch.Tensor:
        return self.module(torch.cat([x, coord_channels(x, region)], dim=1))


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

    def _block(self, block: nn.Module, x: torch.Tensor, region: Optional[Region]) -> torch.Tensor:
        return block(x, region) if isinstance(block, CoordConv3d) else block(x)

    def decoder_regions(self, size: Sequence[int], crop: int) -> List[List[Tuple[int, int]]]:
        """Per decoder level (0 = full resolution), per axis, the input range ``[a, b)`` it must be computed on.

        Only the central ``[crop, n − crop)`` of the output is wanted. Each
        decoder block's three 3×3×3 convolutions need 3 more voxels on each
        side (``padding=1``: values next to a cut edge are wrong but never
        reach the wanted centre); ranges are widened to even bounds so the
        2× transposed convolution below maps onto them exactly.
        """
        levels = len(self.channels)
        out = [(crop, n - crop) for n in size]
        regions = []
        for lv in range(levels - 1):
            n_lv = [n // 2**lv for n in size]
            rng = []
            for (a, b), n in zip(out, n_lv):
                a, b = max(0, a - 3), min(n, b + 3)
                rng.append((a // 2 * 2, min(n, -(-b // 2) * 2)))
            regions.append(rng)
            out = [(a // 2, b // 2) for a, b in rng]
        return regions

    def forward(self, x: torch.Tensor, crop: int = 0) -> torch.Tensor:
        """Logits of ``x`` (B, C, Z, Y, X); with ``crop`` > 0 only of the central ``[crop, n − crop)`` per axis.

        The crop is exact: the decoder is evaluated only where the central
        output depends on it (:meth:`decoder_regions`), so the result equals
        ``forward(x)[..., crop:-crop, crop:-crop, crop:-crop]`` (to float
        rounding) at a fraction of the cost: sliding-window inference keeps
        only that centre (72³ blocks, pad 18: 42 % fewer multiply-adds).
        """
        size = list(x.shape[2:])
        if crop < 0 or any(2 * crop >= n for n in size):
            raise ValueError(f"crop {crop} must be ≥ 0 and leave voxels of a {tuple(size)} input")
        skips = []
        for i, enc in enumerate(self.encoders):
            if i:
                x = self.pool(x)
            x = self._block(enc, x, None)
            skips.append(x)
        if crop == 0:
            for up, dec, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
                x = self._block(dec, torch.cat([up(x), skip], dim=1), None)
            return self.head(x)
        regions = self.decoder_regions(size, crop)
        levels = len(self.channels)
        # the deepest level's part that the lowest decoder's input region comes from
        low = regions[levels - 2]
        x = x[(...,) + tuple(slice(a // 2, b // 2) for a, b in low)]
        for k, (up, dec) in enumerate(zip(self.ups, self.decoders)):
            lv = levels - 2 - k
            rng = regions[lv]
            n_lv = [n // 2**lv for n in size]
            sl = (...,) + tuple(slice(a, b) for a, b in rng)
            x = self._block(dec, torch.cat([up(x), skips[lv][sl]], dim=1), [(a, n) for (a, _), n in zip(rng, n_lv)])
            if lv:  # keep what the next decoder's input region needs
                nxt = regions[lv - 1]
                x = x[(...,) + tuple(slice(a2 // 2 - a, b2 // 2 - a) for (a, _), (a2, b2) in zip(rng, nxt))]
            else:
                x = x[(...,) + tuple(slice(crop - a, n - crop - a) for (a, _), n in zip(rng, size))]
        return self.head(x)
