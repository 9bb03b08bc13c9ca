"""The semi-supervised U-Net base caller (issue 11): labels from the reference, training, calling, CLI."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_bioid.engine.errors import BioidInputError

from conftest import seq_tile


def _tile(chrm, seed, density=300.0, size=128, cycles=24):
    return seq_tile(chrm, seed, density, size, cycles)


def _truth_error_rate(calls, tile):
    from scipy.spatial import cKDTree

    truth = np.array([[c for c in r] for r in tile.truth["read"]])
    called = np.array([[c for c in r] for r in calls.reads])
    near = cKDTree(tile.truth[["y", "x"]].to_numpy()).query_ball_point(calls.positions[["y", "x"]].to_numpy(), r=2.0)
    errs = [min(int((truth[j] != called[i]).sum()) for j in n) for i, n in enumerate(near) if n]
    return sum(errs) / (len(errs) * called.shape[1])


@pytest.fixture(scope="module")
def trained(chrm):
    from napari_bioid.engine.seq.unet import labels_from_reference, train_unet_caller

    torch.set_num_threads(2)
    tiles = [_tile(chrm, s) for s in (11, 12)]
    labelled = [labels_from_reference(t.stack, chrm) for t in tiles]
    return tiles, labelled, train_unet_caller(labelled, epochs=6, steps_per_epoch=25, batch_size=8, seed=0)


def test_labels_come_from_the_aligned_reads_and_are_right(trained):
    """Labelled clusters carry the reference bases (never the simulator's truth), and those agree with the truth."""
    from scipy.spatial import cKDTree

    tiles, labelled, _ = trained
    tile, lab = tiles[0], labelled[0]
    has = lab.labels[:, 0] >= 0
    assert 0.2 < has.mean() < 1.0  # some labelled (mask 1), some not (mask 2)
    truth = np.array([["ACGT".index(c) for c in r] for r in tile.truth["read"]])
    near = cKDTree(tile.truth[["y", "x"]].to_numpy()).query_ball_point(lab.yx[has].astype(float), r=2.0)
    err = [min(int((truth[j] != lab.labels[has][i]).sum()) for j in n) for i, n in enumerate(near) if n]
    assert np.sum(err) / (len(err) * truth.shape[1]) < 0.01


def test_short_training_calls_bases_on_a_fresh_tile(chrm, trained):
    from napari_bioid.engine.seq.classical import call_stack

    _, _, caller = trained
    fresh = _tile(chrm, 99)
    base = call_stack(fresh.stack)
    calls = caller.call(fresh.stack, base)
    assert all(p.is_contiguous() for p in caller.network.parameters())  # trained channels-last, handed back in the default layout
    assert calls.bases.shape == base.bases.shape and calls.info["caller"] == "unet"
    np.testing.assert_allclose(calls.corrected.sum(2), 1.0, atol=1e-4)  # probabilities
    e_unet, e_classical = _truth_error_rate(calls, fresh), _truth_error_rate(base, fresh)
    # all detected clusters, touching ones included (chance: 0.75); a short training matches the classical caller
    assert e_unet < 0.15 and e_unet < 1.5 * e_classical + 0.01, (e_unet, e_classical)


def test_model_file_and_cli(chrm, trained, tmp_path):
    from napari_bioid.engine.seq.io import write_stack
    from napari_bioid.engine.seq.unet import UNetCaller

    tiles, _, caller = trained
    path = caller.save(tmp_path / "unet.pt")
    again = UNetCaller.load(path)
    for a, b in zip(caller.network.state_dict().values(), again.network.state_dict().values()):
        assert torch.equal(a, b)
    stack = write_stack(tiles[1].stack, tmp_path / "t.tif")
    res = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "seq", "call", str(stack), "--out", str(tmp_path / "r.fastq"),
                          "--caller", "unet", "--model", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r.fastq").read_text().count("\n@") > 20
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(BioidInputError, match="not a readable model file"):
        UNetCaller.load(tmp_path / "junk.pt")
    from napari_bioid.engine.seq.run import call_run

    with pytest.raises(BioidInputError, match="only the classical caller"):
        call_run(np.ones((10, 3, 4), np.float32), caller="unet", model=caller)
