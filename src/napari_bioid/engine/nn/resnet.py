"""ResNet family (18/34/50/101) in torch, without torchvision.

He K. et al., "Deep residual learning for image recognition", CVPR 2016: the
ImageNet architecture (7×7 stride-2 stem, max-pool, four stages of basic
(18/34) or bottleneck (50/101) blocks, global average pool, fully connected
layer). ``width`` scales every stage (64 in the paper) so that CPU-sized
variants keep the same depth.
"""

from __future__ import annotations

from typing import List, Type, Union

import torch
from torch import nn

class StridedPointwise(nn.Conv2d):
    """1×1 convolution with a stride, computed as a subsample then a stride-1 1×1 convolution.

    (B, cin, H, W) → (B, cout, ⌈H / stride⌉, ⌈W / stride⌉): the same output,
    weights and state-dict keys as ``nn.Conv2d(cin, cout, 1, stride,
    bias=False)``. It stands in for that layer (the residual shortcut of a
    down-sampling block) because PyTorch 2.13's CPU weight gradient of a
    strided 1×1 convolution on channels-last tensors corrupts the heap (a
    segmentation fault or "corrupted size vs. prev_size" abort, sometimes
    only later) for few input channels (4 or 8) and odd batch sizes, e.g. the
    last batch of an epoch; measured on 2 threads over 167 layer shapes,
    nowhere else (tests/test_training.py).
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sy, sx = self.stride
        return nn.functional.conv2d(x[:, :, ::sy, ::sx], self.weight, self.bias)


DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != planes:
            self.down = nn.Sequential(StridedPointwise(cin, planes, stride), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != out_ch:
            self.down = nn.Sequential(StridedPointwise(cin, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """ResNet classifier: (B, in_channels, H, W) float → (B, num_classes) logits."""

    def __init__(self, depth: int = 18, num_classes: int = 2, in_channels: int = 3, width: int = 64):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
        kind, layers = DEPTHS[depth]
        block: Type[Union[BasicBlock, Bottleneck]] = BasicBlock if kind == "basic" else Bottleneck
        self.depth, self.width = depth, width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages: List[nn.Module] = []
        cin = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet(depth: int, num_classes: int = 2, width: int = 64, in_channels: int = 3) -> ResNet:
    """ResNet-``depth`` (18, 34, 50 or 101); the reference polarity model is ResNet-101 (2048 → 2)."""
    return ResNet(depth, num_classes, in_channels, width)
