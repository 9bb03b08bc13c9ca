import threading

import numpy as np
import pytest
import torch

from napari_bioid.engine.errors import Cancelled
from napari_bioid.engine.tomo import ParticleClass, PickerConfig, PickerModel, segment
from napari_bioid.engine.tomo.inference import window_starts
from napari_bioid.engine.tomo.preprocess import Normalizer, extract_block


class Position(torch.nn.Module):
    """Logits (0, v) from voxel value v: foreground probability = sigmoid(v)."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), x], dim=1)


class Edgy(torch.nn.Module):
    """Like Position, but garbage within ``pad`` voxels of every block face."""

    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        out = torch.cat([torch.zeros_like(x), x], dim=1)
        p = self.pad
        garbage = torch.full_like(out, 50.0)
        inner = torch.zeros_like(out, dtype=torch.bool)
        inner[..., p:-p, p:-p, p:-p] = True
        return torch.where(inner, out, garbage)


@pytest.mark.parametrize("length,block,pad", [(100, 32, 6), (20, 32, 6), (33, 16, 2), (16, 16, 0), (21, 16, 4)])
def test_window_starts_tile_the_axis(length, block, pad):
    covered = np.zeros(length, int)
    for b0, k0, k1 in window_starts(length, block, pad):
        assert b0 + pad <= k0 and k1 <= b0 + block - pad  # only the central region is kept
        covered[k0:k1] += 1
    assert (covered == 1).all()


def test_extract_block_mirrors_outside():
    v = np.arange(10)[None, None, :] * np.ones((3, 4, 1))
    b = extract_block(v, (0, 0, -3), (3, 4, 16))
    np.testing.assert_array_equal(b[0, 0], [3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8, 7, 6])


def _model(net, block=32, pad=6):
    cfg = PickerConfig(classes=[ParticleClass(1, "p", 7)], block_size=block, pad_size=pad, channels=(4, 8))
    return PickerModel(net, cfg)


def test_sliding_window_is_seamless_and_drops_block_edges():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(45, 70, 53)).astype(np.float32) * 3 + 10
    expected = 1 / (1 + np.exp(-Normalizer.fit(vol)(vol)))
    seg = segment(vol, _model(Edgy(6)), batch_size=3)
    assert seg.probability.dtype == np.float32 and seg.class_map.dtype == np.uint8
    np.testing.assert_allclose(seg.probability, expected, atol=1e-5)
    assert (seg.class_map == 1).all()


def test_segment_memmap_progress_and_cancel(tmp_path):
    vol = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=(40, 40, 40))
    vol[:] = np.random.default_rng(1).normal(size=vol.shape)
    calls = []
    seg = segment(vol, _model(Position()), progress=lambda d, t, m: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] > 1 and seg.probability.shape == vol.shape
    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled):
        segment(vol, _model(Position()), cancel=flag)


@pytest.mark.parametrize("channels,n,crop", [((4, 8, 12, 16), 40, 8), ((4, 8, 12), 48, 12), ((4, 8), 24, 5), ((4, 8, 12, 16), 72, 18)])
def test_cropped_forward_equals_the_centre_of_the_full_forward(channels, n, crop):
    """Sliding windows keep only each block's centre; computing only the decoder part it depends on changes nothing."""
    from napari_bioid.engine.nn import ResUNet3d

    torch.manual_seed(0)
    net = ResUNet3d(1, 3, channels).eval()
    x = torch.randn(2, 1, n, n, n)
    with torch.inference_mode():
        full = net(x)[..., crop : n - crop, crop : n - crop, crop : n - crop]
        centre = net(x, crop=crop)
    assert centre.shape == full.shape
    torch.testing.assert_close(centre, full, atol=1e-5, rtol=1e-5)
    # the decoder regions are tight: one voxel less margin at full resolution changes the centre
    regions = net.decoder_regions([n] * 3, crop)
    regions[0] = [(a + 2, b - 2) for a, b in regions[0]]
    net.decoder_regions = lambda size, c: regions
    with torch.inference_mode():
        assert (net(x, crop=crop) - full).abs().max() > 1e-3


def test_segment_of_a_unet_equals_uncropped_windows():
    from napari_bioid.engine.nn import ResUNet3d

    torch.manual_seed(1)
    net = ResUNet3d(1, 2, (4, 8, 12)).eval()
    vol = np.random.default_rng(2).normal(size=(30, 50, 41)).astype(np.float32)
    fast = segment(vol, _model(net, block=32, pad=6))

    class Full(torch.nn.Module):  # the same network, whole block computed, centre kept by segment
        def forward(self, x):
            return net(x)

    ref = segment(vol, _model(Full(), block=32, pad=6))
    np.testing.assert_allclose(fast.probability, ref.probability, atol=1e-5)
    assert (fast.class_map == ref.class_map).mean() > 0.999


@pytest.mark.parametrize("crop", [0, 9])
def test_folded_network_computes_the_same_function(crop):
    """The inference copy (BatchNorm folded, CoordConv fields, channels-last) equals the trained network in eval mode."""
    from napari_bioid.engine.nn.unet3d import FoldedResUNet3d, ResUNet3d, fold_for_inference

    torch.manual_seed(3)
    net = ResUNet3d(1, 3, (4, 8, 12)).eval()
    for m in net.modules():  # BatchNorm statistics far from the identity, as after training
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    fast = fold_for_inference(net)
    assert isinstance(fast, FoldedResUNet3d)
    x = torch.randn(2, 1, 32, 40, 36)
    with torch.inference_mode():
        ref, out = net(x, crop=crop), fast(x, crop=crop)
        again = fast(x, crop=crop)  # cached coordinate fields reused
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again, ref, atol=1e-5, rtol=1e-4)
    assert fold_for_inference(net.train()) is net  # training mode: never replaced


def test_skip_flat_leaves_out_empty_windows_only():
    """Opt-in: windows on flat (masked / padded) volume are not computed and stay background; the rest is unchanged."""
    rng = np.random.default_rng(4)
    vol = rng.normal(size=(70, 50, 50)).astype(np.float32)
    vol[:36] = 0.5  # masked volume outside the sample
    model = _model(Position(), block=32, pad=6)
    full = segment(vol, model)
    calls = []
    fast = segment(vol, model, skip_flat=0.05, progress=lambda d, t, m: calls.append((d, t)))
    assert fast.skipped_blocks == 9 and full.skipped_blocks == 0  # the first row of 3 × 3 windows
    assert calls[-1][0] == calls[-1][1]
    assert (fast.probability[:20] == 0).all() and (full.probability[:20] > 0.3).all()
    np.testing.assert_array_equal(fast.probability[20:], full.probability[20:])


def test_precision_option_runs_the_network_in_bfloat16_and_refuses_float16_on_cpu():
    """bfloat16 autocast gives the float32 probabilities to bfloat16 rounding; float16 needs a GPU."""
    from napari_bioid.engine.nn import ResUNet3d

    torch.manual_seed(5)
    model = _model(ResUNet3d(1, 2, (4, 8)).eval(), block=32, pad=6)
    vol = np.random.default_rng(5).normal(size=(20, 24, 24)).astype(np.float32)
    ref = segment(vol, model)
    low = segment(vol, model, precision="bfloat16")
    diff = np.abs(low.probability - ref.probability)
    assert 0 < diff.max() < 0.05 and diff.mean() < 0.01
    with pytest.raises(ValueError, match="float16"):
        segment(vol, model, precision="float16", device="cpu")
    with pytest.raises(ValueError, match="precision"):
        segment(vol, model, precision="int8")


def test_bin_volume_means_whole_cubes_chunk_by_chunk_and_leaves_factor_one_unread(tmp_path):
    from napari_bioid.engine.tomo.preprocess import bin_volume, unbin_coordinates

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(21, 17, 30)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=vol.shape)
    mm[:] = vol
    expected = vol[:20, :16, :30].reshape(10, 2, 8, 2, 15, 2).mean(axis=(1, 3, 5))
    for chunk in (2, 5, 64):  # slabs of whole cubes, the last one short
        np.testing.assert_allclose(bin_volume(mm, 2, chunk_slices=chunk), expected, rtol=1e-6)
    assert bin_volume(mm, 1) is mm  # factor 1: not read into memory
    assert bin_volume(vol, 3).shape == (7, 5, 10)
    # voxel i of a 2x binned volume is centred between input voxels 2i and 2i + 1
    import pandas as pd

    t = unbin_coordinates(pd.DataFrame({"x": [0.0, 3.0], "y": [1.0, 1.0], "z": [2.0, 0.0]}), 2)
    assert t["x"].tolist() == [0.5, 6.5] and t["z"].tolist() == [4.5, 0.5]
    with pytest.raises(ValueError, match="bin factor"):
        bin_volume(vol, 0)
    with pytest.raises(ValueError, match="cannot bin"):
        bin_volume(vol, 18)
