"""The multi-task super-resolution base caller (issue 11): SSIM, the shipped model on fresh dense tiles, training, CLI."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_bioid.engine.errors import BioidInputError

from conftest import seq_tile


def _tile(chrm, seed, density=400.0, size=128, cycles=16):
    return seq_tile(chrm, seed, density, size, cycles)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    from napari_bioid.engine.nn.multitask import ssim

    rng = np.random.default_rng(0)
    a = rng.random((40, 50)).astype(np.float32)
    for noise in (0.02, 0.3):
        b = (a + noise * rng.normal(size=a.shape)).astype(np.float32)
        ours = ssim(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]).item()
        ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert abs(ours - ref) < 1e-4
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.zeros(1, 1, 20, 20), torch.zeros(1, 1, 20, 21))


@pytest.fixture(scope="module")
def dense_run(chrm):
    """The shipped network and the classical caller on a fresh tile at 2× the default density (clusters touch)."""
    from napari_bioid.engine.seq.classical import call_stack
    from napari_bioid.engine.seq.multitask import MultiTaskCaller, default_multitask_path

    torch.set_num_threads(2)
    tile = _tile(chrm, 7001)
    base = call_stack(tile.stack)
    calls = MultiTaskCaller.load(default_multitask_path()).call(tile.stack, base)
    offset = (tile.shifts - base.info["shifts"]).reshape(-1, 2).mean(0)
    return tile, base, calls, offset


def test_shipped_network_resolves_touching_clusters_the_classical_detection_merges(dense_run):
    from napari_bioid.engine.cells.boxes import match_points

    tile, base, calls, offset = dense_run
    truth = tile.extra["positions_yx"] + offset
    resolved = {name: len(match_points(c.positions[["y", "x"]].to_numpy(float), truth, 1.0)) / len(truth)
                for name, c in (("classical", base), ("multitask", calls))}
    assert resolved["multitask"] > resolved["classical"] + 0.10, resolved
    assert calls.info["separated_clusters"] == int(calls.positions["separated"].sum()) > 50
    np.testing.assert_allclose(calls.corrected.sum(2), 1.0, atol=1e-4)


def test_shipped_network_calls_more_correct_reads_than_classical_at_twice_the_density(dense_run):
    from scipy.spatial import cKDTree

    tile, base, calls, offset = dense_run
    truth = np.array([["ACGT".index(b) for b in r] for r in tile.truth["read"]])
    tree = cKDTree(tile.extra["positions_yx"] + offset)

    def usable(c):  # pass-filter reads within 1.5 px of a distinct true cluster whose read they match with ≤ 1 error
        hit = set()
        for i in np.flatnonzero(c.pass_filter):
            for j in tree.query_ball_point(c.positions[["y", "x"]].to_numpy(float)[i], 1.5):
                if j not in hit and (c.bases[i] != truth[j]).sum() <= 1:
                    hit.add(j)
                    break
        return len(hit)

    assert usable(calls) > 1.3 * usable(base), (usable(calls), usable(base))


def test_super_resolved_image_beats_bicubic_up_sampling(dense_run):
    from scipy import ndimage
    from skimage.metrics import peak_signal_noise_ratio

    from napari_bioid.engine.seq.simulate import render_super_resolution
    from napari_bioid.engine.seq.unet import normalised_stack

    tile, base, calls, offset = dense_run
    norm, scales = normalised_stack(tile.stack, base.info["shifts"], return_scales=True)
    truth = render_super_resolution(tile, 2, cycles=[0, 8], frame_offset=offset) / scales[[0, 8], :, None, None]
    sr = calls.info["super_resolution"].astype(np.float32)
    assert sr.shape == (16, 4, 256, 256)
    gains = []
    for i, t in enumerate((0, 8)):
        for c in range(4):
            rng = float(np.ptp(truth[i, c]))
            bic = ndimage.zoom(norm[t, c], 2, order=3, grid_mode=True, mode="grid-mirror")
            gains.append(peak_signal_noise_ratio(truth[i, c], sr[t, c], data_range=rng) - peak_signal_noise_ratio(truth[i, c], bic, data_range=rng))
    assert min(gains) > 2.0, gains  # dB


def test_training_learns_centres_and_super_resolution(chrm):
    """A small network trained briefly on one tile finds the clusters of a fresh one and sharpens it (vs. untrained)."""
    from skimage.metrics import peak_signal_noise_ratio

    from napari_bioid.engine.cells.boxes import match_points
    from napari_bioid.engine.seq.multitask import MultiTaskCaller, MultiTaskConfig, multitask_tile, train_multitask_caller
    from napari_bioid.engine.seq.unet import _window

    torch.set_num_threads(2)
    with pytest.raises(BioidInputError, match="no training tiles"):
        train_multitask_caller([])
    train = multitask_tile(_tile(chrm, 7100, density=200.0, size=96, cycles=8))
    fresh = multitask_tile(_tile(chrm, 7101, density=200.0, size=96, cycles=8))
    with pytest.raises(BioidInputError, match="at least 128"):
        train_multitask_caller([train], crop=128)
    config = MultiTaskConfig(width=24, blocks=2, layers=3, growth=12)

    def scores(net):
        sr, prob = net.predict(_window(fresh.norm, 3, 3))
        centres = net.detect(1 - prob[0])[["y", "x"]].to_numpy(float)
        truth = np.argwhere(fresh.classes[3] > 0).astype(float)
        f1 = 2 * len(match_points(centres, truth, 1.5)) / (len(centres) + len(truth))
        gt = fresh.sr[3].astype(np.float32)
        return f1, np.mean([peak_signal_noise_ratio(gt[c], sr[c], data_range=float(np.ptp(gt[c]))) for c in range(4)])

    torch.manual_seed(0)
    f1_0, psnr_0 = scores(MultiTaskCaller(config))
    f1, psnr = scores(train_multitask_caller([train], steps=250, batch_size=4, crop=48, lr=3e-3, config=config, seed=0))
    # measured: untrained F1 0.41 / 27.9 dB, trained 0.90 / 36.2 dB
    assert f1 > 0.8 and f1 > f1_0 + 0.3, (f1_0, f1)
    assert psnr > psnr_0 + 5.0, (psnr_0, psnr)


def test_cli_writes_calls_and_the_super_resolved_stack(chrm, tmp_path):
    import tifffile

    from napari_bioid.engine.seq.io import write_stack

    tile = _tile(chrm, 7200, density=300.0, size=96, cycles=6)
    stack = write_stack(tile.stack, tmp_path / "t.tif")
    cmd = [sys.executable, "-m", "napari_bioid.cli", "seq", "call", str(stack), "--out", str(tmp_path / "r.fastq")]
    res = subprocess.run(cmd + ["--super-resolution", str(tmp_path / "sr.tif")], capture_output=True, text=True)
    assert res.returncode == 2 and "needs --caller multitask" in res.stderr
    assert not (tmp_path / "r.fastq").exists() and not (tmp_path / "sr.tif").exists()
    res = subprocess.run(cmd + ["--caller", "multitask", "--super-resolution", str(tmp_path / "sr.tif")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sr = tifffile.imread(tmp_path / "sr.tif")
    assert sr.shape == (6, 4, 192, 192) and sr.dtype == np.float32
    import pandas as pd

    table = pd.read_csv(tmp_path / "r.csv")
    assert "separated" in table and len(table) > 0.5 * len(tile.truth)


def test_unet_reads_its_bases_at_the_multitask_clusters(chrm):
    from napari_bioid.engine.seq.classical import call_stack
    from napari_bioid.engine.seq.run import call_run

    tile = _tile(chrm, 7300, size=96, cycles=8)
    run = call_run(tile.stack, caller="unet", clusters="multitask")
    classical = call_stack(tile.stack)
    c = run.calls
    assert c.info["caller"] == "unet" and c.info["clusters"] == "multitask" and "super_resolution" not in c.info
    assert "separated" in c.positions and len(c.bases) > 1.5 * len(classical.bases)  # touching clusters resolved
    np.testing.assert_allclose(c.corrected.sum(2), 1.0, atol=1e-4)
    for bad in (dict(caller="classical", clusters="multitask"), dict(caller="unet", clusters="nearest")):
        with pytest.raises(BioidInputError, match="clusters"):
            call_run(tile.stack, **bad)
