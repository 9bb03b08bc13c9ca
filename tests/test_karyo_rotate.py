"""Upright rotation of chromosome crops and the ResNet family."""

import time

import numpy as np
import pytest
import torch

from napari_bioid.engine.karyo import foreground_mask, make_upright, projection_widths, rotate_image, upright_angle
from napari_bioid.engine.nn.resnet import resnet

from conftest import SHARED

CROPS = SHARED / "data" / "chromosomes" / "karyogram_crops"


def straight_chromosome(length=90, width=22):
    """A vertical banded rod with rounded ends on white (uint8)."""
    img = np.full((length + 40, width + 40), 255, np.uint8)
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    cy0, cy1, cx = 20 + width / 2, 20 + length - width / 2, img.shape[1] / 2
    d = np.where(y < cy0, np.hypot(y - cy0, x - cx), np.where(y > cy1, np.hypot(y - cy1, x - cx), np.abs(x - cx)))
    body = d <= width / 2
    bands = 60 + 80 * (np.sin(y / 4.0) > 0)
    img[body] = bands[body]
    return img


@pytest.mark.parametrize("angle", [0, 17, 45, 90, 123, 160])
def test_upright_angle_recovers_a_known_rotation(angle):
    rotated = rotate_image(straight_chromosome(), angle)
    found = upright_angle(rotated)
    # rotating back by `found` must make it vertical again: found ≡ −angle (mod 180)
    err = abs(((found + angle) + 90) % 180 - 90)
    assert err <= 3, (angle, found)
    upright, _ = make_upright(rotated)
    ys, xs = np.nonzero(upright < 200)
    assert np.ptp(ys) > 3 * np.ptp(xs)  # tall and thin


def test_rotation_of_real_crops_is_consistent_and_fast():
    files = sorted(CROPS.glob("*/*/*.tiff"))[:40]
    if not files:
        pytest.skip(f"chromosome crops not found at {CROPS}")
    from PIL import Image

    rng = np.random.default_rng(0)
    t = []
    for f in files[:20]:
        crop = np.asarray(Image.open(f).convert("L"))
        a0 = upright_angle(crop)
        theta = float(rng.integers(0, 180))
        t0 = time.perf_counter()
        rotated = rotate_image(crop, theta)
        a1 = upright_angle(rotated)
        t.append(time.perf_counter() - t0)
        # the optimum moves with the rotation: a1 ≡ a0 − θ (mod 180). Bent crops have a flat
        # optimum, so where the angles differ by more than 3° the widths must agree within one pixel.
        err = abs(((a1 - (a0 - theta)) + 90) % 180 - 90)
        widths = projection_widths(foreground_mask(rotated), np.array([a1, (a0 - theta) % 180]))
        assert err <= 3 or widths[1] <= widths[0] + 1.0, (f.name, a0, theta, a1, widths)
    print("median seconds per crop", np.median(t))


@pytest.mark.parametrize("depth,features", [(18, 512), (34, 512), (50, 2048), (101, 2048)])
def test_resnet_family_shapes(depth, features):
    net = resnet(depth, num_classes=2, width=8 if depth > 34 else 16)
    assert net.fc.in_features == features * (8 if depth > 34 else 16) // 64
    out = net(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 2)
    if depth == 101:
        full = resnet(101)
        assert full.fc.in_features == 2048 and sum(p.numel() for p in full.parameters()) > 40e6


def test_crops_split_by_case_and_classifier_input():
    from napari_bioid.engine.karyo.data import MEAN, STD, list_crops, read_crop, split_by_case, to_classifier_input

    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    crops = list_crops(CROPS)
    assert len(crops) > 20000 and {"1", "22", "X"} <= {c.chromosome for c in crops}
    train, test = split_by_case(crops, 0.3, seed=0)
    assert len(train) + len(test) == len(crops)
    assert not ({c.case for c in train} & {c.case for c in test})  # never the same karyogram on both sides
    assert 0.2 < len(test) / len(crops) < 0.4
    x = to_classifier_input(read_crop(crops[0].path), 224)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert x[:, 0, 0] == pytest.approx((1.0 - MEAN) / STD)  # white background corner
