import numpy as np
import pytest

from napari_bioid.engine.io.coords import make_table
from napari_bioid.engine.tomo import avgpool_peaks, evaluate_picks, label_kernel, make_weak_labels, match_points, prune_picks
from napari_bioid.engine.tomo.inference import Segmentation
from napari_bioid.engine.tomo.nms import find_candidates

from conftest import ball


def test_label_kernels():
    sphere, gauss, cube = (label_kernel(3, s) for s in ("sphere", "gaussian", "cube"))
    assert sphere.shape == gauss.shape == cube.shape == (7, 7, 7)
    # a ball of radius 3 on the integer grid holds 123 voxels
    assert sphere.sum() == 123
    assert sphere.sum() < gauss.sum() < cube.sum() == 343
    assert gauss[3, 3, 0] and not gauss[0, 0, 0]  # √2·r reaches the face centres, not the corners


def test_weak_labels_classes_radii_and_overlap():
    t = make_table([[10, 10, 10], [10, 10, 13], [2, 30, 30]], class_id=[1, 2, 2])
    lab = make_weak_labels((20, 40, 40), t, {1: 3, 2: 2})
    assert lab[10, 10, 10] == 1 and lab[10, 10, 13] == 2  # neither particle erases the other's centre
    assert lab[10, 10, 11] == 1 and lab[10, 10, 12] == 2  # overlap split by nearest centre
    assert (lab == 1).sum() < 123 and (lab == 2).sum() > 0
    assert lab[2, 30, 30] == 2 and lab[0, 30, 30] == 2  # clipped at the border, not dropped
    assert lab.dtype == np.uint8


def test_avgpool_nms_finds_blob_centres_and_scores_by_size():
    centres = [(20, 20, 20), (20, 40, 45), (45, 25, 40)]
    mask = ball((64, 64, 64), centres, 5) > 0
    mask |= ball((64, 64, 64), [(50, 50, 10)], 2) > 0  # a speck: low score
    zyx, score = avgpool_peaks(mask, n_pools=3)
    cand = make_table(zyx, 1, score)
    picks = prune_picks(cand, min_score=0.2, distance=6)
    assert len(picks) == 3
    m = match_points(picks[["z", "y", "x"]].to_numpy(), np.array(centres, float), 1.0)
    assert len(m) == 3
    speck = cand[(cand.z == 50) & (cand.y == 50) & (cand.x == 10)]
    assert speck["score"].max() < 0.2 < picks["score"].min()


def test_avgpool_nms_equals_full_volume_computation():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    mask = np.zeros((40, 50, 60), bool)
    for c in rng.integers(8, 32, (5, 3)):
        mask |= ball(mask.shape, [c], 4) > 0
    zyx, score = avgpool_peaks(mask, n_pools=4)
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    for _ in range(4):
        x = F.avg_pool3d(x, 5, 1, 2, count_include_pad=True)
    peaks = (x == F.max_pool3d(x, 5, 1, 2)) & (x > 0.1)
    ref = torch.nonzero(peaks[0, 0]).numpy()
    assert sorted(map(tuple, zyx)) == sorted(map(tuple, ref))


def test_find_candidates_per_class_and_threshold():
    prob = ball((48, 48, 48), [(12, 12, 12), (30, 30, 30)], 4) * 0.9
    cls = np.ones((48, 48, 48), np.uint8)
    cls[20:] = 2
    cand = find_candidates(Segmentation(prob, cls), 2, threshold=0.5, n_pools=3)
    picks = prune_picks(cand, 0.2, distance=5)
    assert sorted(picks["class_id"].tolist()) == [1, 2]
    none = find_candidates(Segmentation(prob, cls), 2, threshold=0.95, n_pools=3)
    assert len(none) == 0


def test_prune_keeps_highest_of_close_picks():
    cand = make_table([[10, 10, 10], [10, 10, 12], [10, 10, 30]], 1, [0.5, 0.9, 0.7])
    kept = prune_picks(cand, 0.0, distance=4)
    assert kept["score"].tolist() == [0.9, 0.7]
    assert prune_picks(cand, 0.6, None)["score"].tolist() == [0.9, 0.7]


def test_matching_is_one_to_one_and_maximal():
    truth = np.array([[0, 0, 0], [0, 0, 3.0]])
    # greedy-by-distance would give pred 0 (at 1.5, equidistant) to truth 0 and leave pred 1 unmatched
    pred = np.array([[0, 0, 1.5], [0, 0, -1.0]])
    m = match_points(pred, truth, 2.0)
    assert len(m) == 2
    assert len(match_points(np.array([[0, 0, 0.0]] * 3), truth[:1], 1.0)) == 1  # duplicates count once
    assert len(match_points(np.zeros((0, 3)), truth, 1.0)) == 0


def test_evaluate_picks_counts_and_fbeta():
    truth = make_table([[10, 10, 10], [20, 20, 20], [30, 30, 30], [40, 40, 40]], [1, 1, 2, 2])
    picks = make_table([[10, 10, 11], [20, 22, 20], [30, 30, 30], [5, 5, 5]], [1, 2, 2, 1], [0.9, 0.8, 0.7, 0.6])
    ev = evaluate_picks(picks, truth, tolerance=2.5)
    assert (ev["tp"], ev["fp"], ev["fn"]) == (3, 1, 1)
    assert ev["precision"] == pytest.approx(0.75) and ev["recall"] == pytest.approx(0.75) and ev["f1"] == pytest.approx(0.75)
    # class-aware: the pick at (20, 22, 20) has the wrong class
    assert ev["per_class"]["1"]["tp"] == 1 and ev["per_class"]["2"]["tp"] == 1
    ev = evaluate_picks(picks.iloc[:3], truth, tolerance=2.5)
    p, r, b = 1.0, 3 / 4, 4.0
    assert ev["fbeta"] == pytest.approx((1 + b * b) * p * r / (b * b * p + r))
    assert evaluate_picks(picks, truth, tolerance=0.5)["tp"] == 1


def test_per_class_tolerance_applies_to_each_true_particle():
    truth = make_table([[10, 10, 10], [40, 40, 40]], [1, 2])
    picks = make_table([[10, 10, 14], [40, 40, 44]], [1, 1])
    ev = evaluate_picks(picks, truth, tolerance={1: 3.0, 2: 5.0})
    assert ev["tp"] == 1  # 4 voxels off: outside class 1's tolerance, inside class 2's
    assert ev["per_class"]["2"]["tp"] == 0  # the class-aware matching needs the right class


def test_pooled_evaluation_sums_the_tomograms():
    from napari_bioid.engine.tomo.evaluate import pool_tomograms

    truth = [make_table([[10, 10, 10], [20, 20, 20]]), make_table([[10, 10, 10]])]
    # tomogram 2's pick sits on tomogram 1's second particle: it must not match across tomograms
    picks = [make_table([[10, 10, 11]]), make_table([[20, 20, 20], [10, 10, 10]])]
    ev = evaluate_picks(pool_tomograms(picks), pool_tomograms(truth), 2.0)
    singles = [evaluate_picks(p, t, 2.0) for p, t in zip(picks, truth)]
    assert ev["tp"] == sum(s["tp"] for s in singles) == 2
    assert (ev["n_pred"], ev["n_true"]) == (3, 3)
