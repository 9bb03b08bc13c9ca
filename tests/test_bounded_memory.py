"""Issue 16.1: NMS, pruning and validation stay bounded whatever the network outputs.

An untrained network's segmentation can be foreground almost everywhere; the
average-pool maxima of such a plateau used to be one candidate per voxel and
the pruning's neighbour lists then exhausted memory (MemoryError, or napari
killed). These tests run under a hard address-space limit.
"""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_bioid.engine.tomo.inference import Segmentation
from napari_bioid.engine.tomo.nms import find_candidates, greedy_suppress, prune_picks

LIMIT_GB = 5  # address space for the child process: torch + the sample tomogram need < 3


def _run_limited(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_GB} << 30, resource.RLIM_INFINITY))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


def test_saturated_segmentation_gives_bounded_candidates():
    seg = Segmentation(np.ones((64, 128, 128), np.float32), np.ones((64, 128, 128), np.uint8))
    cand = find_candidates(seg, 1, 0.5, n_pools=4)
    # one plateau, one candidate (it used to be 602,112 candidates, one per interior voxel)
    assert len(cand) == 1
    assert np.allclose(cand[["z", "y", "x"]].to_numpy()[0], [31.5, 63.5, 63.5], atol=1)


def test_candidate_cap_warns_and_keeps_the_highest():
    rng = np.random.default_rng(1)
    prob = rng.random((48, 96, 96)).astype(np.float32)
    seg = Segmentation(prob, np.ones(prob.shape, np.uint8))
    full = find_candidates(seg, 1, 0.5, n_pools=1, max_candidates=None)
    assert len(full) > 100
    with pytest.warns(UserWarning, match="NMS candidates"):
        capped = find_candidates(seg, 1, 0.5, n_pools=1, max_candidates=100)
    assert len(capped) == 100
    assert capped["score"].min() >= full["score"].nlargest(100).min() - 1e-7


def test_greedy_suppression_equals_brute_force_and_is_linear():
    rng = np.random.default_rng(0)
    zyx = rng.random((600, 3)) * [30, 60, 60]
    radii = rng.choice([3.0, 6.0], len(zyx))
    kept = greedy_suppress(zyx, radii)
    brute = np.zeros(len(zyx), bool)
    for i in range(len(zyx)):
        brute[i] = not (np.linalg.norm(zyx[brute] - zyx[i], axis=1) < radii[i]).any()
    np.testing.assert_array_equal(kept, brute)
    # 200,000 candidates packed densely (every one has hundreds of neighbours within the radius)
    dense = rng.random((200_000, 3)) * [40, 100, 100]
    t0 = time.perf_counter()
    kept = greedy_suppress(dense, np.full(len(dense), 6.0))
    assert time.perf_counter() - t0 < 60
    assert 0 < kept.sum() < 2000  # at most a packing of 6-voxel spheres in the box


def test_prune_dense_candidates_under_memory_limit():
    res = _run_limited(
        """
        import numpy as np
        from napari_bioid.engine.tomo.inference import Segmentation
        from napari_bioid.engine.tomo.nms import find_candidates, prune_picks
        seg = Segmentation(np.ones((64, 128, 128), np.float32), np.ones((64, 128, 128), np.uint8))
        cand = find_candidates(seg, 1, 0.5, n_pools=4)
        rng = np.random.default_rng(0)
        cand = cand.loc[np.zeros(300_000, int)].reset_index(drop=True)   # 300,000 candidates in one small region
        cand[["z", "y", "x"]] = rng.random((300_000, 3)) * [64, 128, 128]
        cand["score"] = rng.random(300_000)
        print("kept", len(prune_picks(cand, 0.0, 6.0)))
        """
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) > 0


def test_training_from_five_clicks_finishes_under_memory_limit():
    """The issue's set-up: sample tomogram, 5 annotations, 1 epoch, block 40, validation on itself."""
    res = _run_limited(
        """
        import warnings
        from napari_bioid._sample import SAMPLE_DIR
        from napari_bioid.engine.io import read_volume, read_coordinates
        from napari_bioid.engine.tomo import ParticleClass, PickerConfig, train_picker
        vol = read_volume(SAMPLE_DIR / "sample_tomogram.mrc")
        clicks = read_coordinates(SAMPLE_DIR / "sample_truth.csv").iloc[:5][["x", "y", "z", "class_id", "score"]]
        clicks["class_id"] = 1
        cfg = PickerConfig(classes=[ParticleClass(1, "particle", 11)], block_size=40, pad_size=6, channels=(8, 16, 32),
                           voxel_size=vol.voxel_size)
        warnings.simplefilter("ignore")
        for lr in (2e-3, 5e-2):   # a normal and a diverging learning rate
            model = train_picker([vol], [clicks], cfg, epochs=1, batch_size=4, lr=lr, val_every=1, seed=0)
            print("finished", model.metrics["history"][-1]["val_f1"])
        """
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("finished") == 2
