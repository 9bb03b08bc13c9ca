"""Cell detection engine (issue 10, first stage): boxes and metrics, data, baseline, a small detector that learns, CLI."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from napari_bioid.engine.cells.boxes import box_iou, ciou, detection_metrics, nms
from napari_bioid.engine.errors import BioidInputError

from conftest import SHARED

MONUSEG = SHARED / "data" / "he_nuclei" / "monuseg_train"


@pytest.fixture(scope="module")
def monuseg():
    if not MONUSEG.is_dir():
        pytest.skip("MoNuSeg not found")
    from napari_bioid.engine.cells.data import load_monuseg, split_names

    samples = load_monuseg(MONUSEG, include_mask_only=False)
    train, val = split_names(samples, 3, seed=0)
    return [s for s in samples if s.name in train], [s for s in samples if s.name in val]


def test_iou_ciou_nms_and_metrics():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]])
    assert box_iou(a, a).diagonal().tolist() == [1.0, 1.0]
    assert box_iou(a[:1], a[1:]).item() == pytest.approx(25 / 175)
    same = torch.tensor([[5.0, 5, 10, 10]])
    assert ciou(same, same).item() == pytest.approx(1.0, abs=1e-5)
    assert ciou(same, torch.tensor([[50.0, 50, 10, 10]])).item() < -0.5  # far apart: penalised beyond IoU = 0
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]])
    assert sorted(nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()) == [0, 2]
    truth = np.array([[0, 0, 10, 10], [30, 30, 40, 40]], float)
    perfect = detection_metrics([(truth, np.array([0.9, 0.8]))], [truth])
    assert perfect["map50"] == pytest.approx(1.0) and perfect["f1"] == 1.0
    shifted = detection_metrics([(truth + 8, np.array([0.9, 0.8]))], [truth])
    assert shifted["map50"] == 0.0 and shifted["f1"] == 0.0


def test_boxes_from_instances_and_watershed_split():
    from napari_bioid.engine.cells.data import boxes_from_labels, split_mask

    yy, xx = np.mgrid[:40, :60]
    two = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 81) | ((yy - 20) ** 2 + (xx - 36) ** 2 <= 81)  # touching discs
    labels = split_mask(two.astype(np.uint8), min_distance=5)
    assert labels.max() == 2
    b = boxes_from_labels(labels)
    assert len(b) == 2 and np.allclose(sorted((b[:, 0] + b[:, 2]) / 2), [20.5, 36.5], atol=1.5)


def test_monuseg_boxes_at_model_scale(monuseg):
    train, val = monuseg
    s = val[0]
    assert s.image.shape[:2] == (505, 505) and s.exact
    sides = np.concatenate([s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1]])
    assert 10 < np.median(sides) < 18  # ~7 µm nuclei at 0.5 µm/px


def test_classical_baseline_finds_nuclei(monuseg):
    from napari_bioid.engine.cells.baseline import classical_nuclei

    _, val = monuseg
    preds = [classical_nuclei(s.image, s.um_per_px) for s in val]
    m = detection_metrics([(p["boxes"], p["scores"]) for p in preds], [s.boxes for s in val], 0.5, 0.0)
    assert m["f1"] > 0.4 and m["map50"] > 0.3


def _random_boxes(truth, shape, rng):
    wh = np.stack([truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1]], 1)
    xy = rng.uniform([0, 0], [shape[1], shape[0]], (len(truth), 2))
    return np.concatenate([xy - wh / 2, xy + wh / 2], 1)


@pytest.fixture(scope="module")
def small_detector(monuseg):
    from napari_bioid.engine.cells.detector import train_detector

    train, _ = monuseg
    torch.set_num_threads(2)
    return train_detector(train, steps=360, batch_size=6, size=192, seed=0)


def test_small_detector_learns_nuclei(monuseg, small_detector):
    """A few CPU minutes of training find nuclei on held-out images far better than chance."""
    from napari_bioid.engine.cells.detector import evaluate_detector

    _, val = monuseg
    m = evaluate_detector(small_detector, val)
    rng = np.random.default_rng(0)
    chance = detection_metrics([(_random_boxes(s.boxes, s.image.shape, rng), rng.random(len(s.boxes))) for s in val], [s.boxes for s in val])
    assert m["map50"] > 0.1 and m["map50"] > 5 * chance["map50"], (m, chance)


def test_tiling_gives_the_same_boxes_as_one_pass(monuseg):
    from napari_bioid.engine.cells.detector import Detector, default_detector_path

    det = Detector.load(default_detector_path())
    img = monuseg[1][0].image
    whole = det.detect(img, 0.5, conf=0.25, tile=1024)
    tiled = det.detect(img, 0.5, conf=0.25, tile=256, overlap=64)  # 4 small tiles on this 505 px image
    assert len(whole["boxes"]) > 100
    m = detection_metrics([(tiled["boxes"], tiled["scores"])], [whole["boxes"]], 0.5, 0.0)
    assert m["recall"] > 0.95 and m["precision"] > 0.95, m


def test_detect_resamples_by_pixel_size_and_warns_when_unknown(monuseg, small_detector):
    _, val = monuseg
    from napari_bioid.engine.cells.data import resample

    img = val[0].image
    big = resample(img, 2.0)  # the same tissue at 0.25 µm/px
    a = small_detector.detect(img, 0.5, conf=0.25)
    b = small_detector.detect(big, 0.25, conf=0.25)
    m = detection_metrics([(b["boxes"] / 2, b["scores"])], [a["boxes"]], 0.5, 0.0)
    assert m["recall"] > 0.7, m
    with pytest.warns(UserWarning, match="pixel size is unknown"):
        small_detector.detect(img, None, conf=0.25)


def test_model_file_round_trip(small_detector, tmp_path, monuseg):
    from napari_bioid.engine.cells.detector import Detector

    path = small_detector.save(tmp_path / "det.pt")
    again = Detector.load(path)
    img = monuseg[1][0].image
    a, b = small_detector.detect(img, 0.5, conf=0.3), again.detect(img, 0.5, conf=0.3)
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)
    assert again.config.um_per_px == 0.5 and again.config.class_names == ["nucleus"]


def test_bad_inputs():
    from napari_bioid.engine.cells.data import check_rgb

    with pytest.raises(BioidInputError, match="RGB"):
        check_rgb(np.zeros((50, 50), np.uint8))
    with pytest.raises(BioidInputError, match="empty"):
        check_rgb(np.zeros((0, 0, 3), np.uint8))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_bioid.cli", "cells", *map(str, args)], capture_output=True, text=True)


def test_cli_classical_detect_evaluate_and_bad_files(tmp_path, monuseg):
    from PIL import Image

    _, val = monuseg
    s = val[0]
    Image.fromarray(s.image).save(tmp_path / "img.png")
    res = _cli("detect", tmp_path / "img.png", "--out", tmp_path / "boxes.csv", "--classical", "--um-per-px", 0.5)
    assert res.returncode == 0, res.stderr
    gj = json.loads((tmp_path / "boxes.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and gj["features"][0]["properties"]["objectType"] == "detection"
    truth = pd.DataFrame(s.boxes, columns=["x_min", "y_min", "x_max", "y_max"]).assign(image="img.png", score=1.0)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    ev = _cli("evaluate", tmp_path / "boxes.csv", tmp_path / "truth.csv", "--conf", 0.0)
    assert ev.returncode == 0 and json.loads(ev.stdout)["f1"] > 0.3
    truth.drop(columns=["y_max"]).to_csv(tmp_path / "broken.csv", index=False)
    bad = _cli("evaluate", tmp_path / "boxes.csv", tmp_path / "broken.csv")
    assert bad.returncode == 2 and "missing column" in bad.stderr
    Image.fromarray(s.image[..., 0]).save(tmp_path / "grey.png")
    grey = _cli("detect", tmp_path / "grey.png", "--out", tmp_path / "g.csv", "--classical")
    assert grey.returncode == 2 and "RGB" in grey.stderr and not (tmp_path / "g.csv").exists()
    # labels that do not match their image
    (tmp_path / "imgs").mkdir(), (tmp_path / "labs").mkdir()
    for k in range(3):
        Image.fromarray(s.image).save(tmp_path / "imgs" / f"a{k}.png")
        Image.fromarray(np.zeros((100, 100), np.uint16)).save(tmp_path / "labs" / f"a{k}.png")
    mism = _cli("train-detector", "--images", tmp_path / "imgs", "--labels", tmp_path / "labs", "--out", tmp_path / "m.pt", "--um-per-px", 0.5)
    assert mism.returncode == 2 and "do not match" in mism.stderr and not (tmp_path / "m.pt").exists()


# ---------------------------------------------------------------------- the re-classifier and the two-stage chain
CRC = SHARED / "data" / "he_nuclei" / "crc_phenotypes"


@pytest.fixture(scope="module")
def crc():
    if not CRC.is_dir():
        pytest.skip("CRCHistoPhenotypes not found")
    from napari_bioid.engine.cells.data import load_crc

    return load_crc(CRC / "train"), load_crc(CRC / "validation")


@pytest.fixture(scope="module")
def small_classifier(crc):
    from napari_bioid.engine.cells.classifier import train_classifier

    train, _ = crc
    torch.set_num_threads(2)
    return train_classifier(train, epochs=2, width=8, lr=0.05, seed=0)


def test_point_matching_is_one_to_one_within_the_radius():
    from napari_bioid.engine.cells.boxes import match_points, point_detection_metrics

    truth = np.array([[10.0, 10], [20, 10], [50, 50]])
    pred = np.array([[14.0, 10], [16, 10], [50, 57], [100, 100]])  # two near the first pair, one 7 px off, one far
    pairs = match_points(pred, truth, 6.0)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (1, 1)]  # Hungarian: both matched, not both to truth 0
    m = point_detection_metrics([pred], [truth], 6.0)
    assert (m["tp"], m["precision"], m["recall"]) == (2, 0.5, pytest.approx(2 / 3))


def test_crops_have_a_fixed_physical_size(crc):
    from napari_bioid.engine.cells.classifier import extract_crops
    from napari_bioid.engine.cells.data import resample

    s = crc[1][0]
    centres = np.array([[250.0, 250.0], [3.0, 4.0]])  # one inside, one at the corner (reflect-padded)
    a = extract_crops(s.image, centres, 0.5, 24.0, 32)
    b = extract_crops(resample(s.image, 2.0), centres * 2, 0.25, 24.0, 32)  # the same tissue at twice the resolution
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.uint8
    assert np.abs(a[0].astype(float) - b[0]).mean() < 12  # same content, resampling differences only
    assert np.abs(a[0].astype(float) - a[1]).mean() > 12  # and not the same crop everywhere


def test_small_classifier_beats_the_majority_class_on_crc_validation(crc, small_classifier):
    """Two short CPU epochs of a narrow ResNet-34 type CRC nuclei clearly better than always saying the commonest type."""
    from napari_bioid.engine.cells.classifier import evaluate_classifier

    _, val = crc
    m = evaluate_classifier(small_classifier, val)
    assert m["n"] == 834 + 647 + 491 + 296
    assert m["accuracy"] > m["majority_rate"] + 0.1, m
    assert np.array(m["confusion"]).sum() == m["n"] and len(m["per_class"]) == 4
    assert all(p.is_contiguous() for p in small_classifier.network.parameters())  # trained channels-last, handed back in the default layout


def test_classifier_file_round_trip_and_binary_class_list(crc, small_classifier, tmp_path):
    from napari_bioid.engine.cells.classifier import Classifier, train_classifier

    s = crc[1][0]
    path = small_classifier.save(tmp_path / "cls.pt")
    again = Classifier.load(path)
    a = small_classifier.classify(s.image, s.boxes[:50], 0.5)
    b = again.classify(s.image, s.boxes[:50], 0.5)
    assert (a["classes"] == b["classes"]).mean() > 0.95  # float16 weights on disk
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=0.02)
    # a user's binary list: inflammatory (target) vs everything else (normal)
    from napari_bioid.engine.cells.data import Sample

    binary = [Sample(t.name, t.image, t.boxes, np.where(t.classes < 0, -1, (t.classes == 2).astype(int)), t.um_per_px) for t in crc[0][:8]]
    clf = train_classifier(binary, class_names=["normal", "inflammatory"], epochs=1, width=8)
    assert clf.config.class_names == ["normal", "inflammatory"] and clf.metrics["train_counts"]["inflammatory"] > 100
    r = clf.classify(s.image, s.boxes[:10], 0.5)
    assert r["probabilities"].shape == (10, 2) and np.allclose(r["probabilities"].sum(1), 1, atol=1e-5)
    with pytest.raises(BioidInputError, match="at least two classes"):
        train_classifier([Sample("x", s.image, s.boxes, np.zeros(len(s.boxes), np.int64))], class_names=["a", "b"], epochs=1, width=8)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(BioidInputError, match="not a readable model file"):
        Classifier.load(tmp_path / "junk.pt")


def test_two_stage_chain_types_detected_cells(monuseg, crc, small_detector, small_classifier):
    from napari_bioid.engine.cells.pipeline import CELL_COLUMNS, detect_cells, evaluate_two_stage

    s = crc[1][0]
    df = detect_cells(s.image, 0.5, small_detector, small_classifier, conf=0.25)
    assert list(df.columns[:7]) == CELL_COLUMNS and len(df) > 20
    assert set(df["class"]) <= set(small_classifier.config.class_names)
    p = df[[f"p_{c}" for c in small_classifier.config.class_names]].to_numpy()
    np.testing.assert_allclose(p.max(1), df["class_probability"], atol=1e-6)
    m = evaluate_two_stage(small_detector, small_classifier, crc[1][:2], conf=0.25)
    assert 0 < m["tp"] <= min(m["n_true"], m["n_pred"]) and m["classification"]["n"] > 0


def test_cli_train_classifier_and_detect_with_classifier(crc, small_detector, small_classifier, tmp_path):
    from PIL import Image

    train, val = crc
    (tmp_path / "imgs").mkdir(), (tmp_path / "pts").mkdir()
    for s in train[:4]:
        Image.fromarray(s.image).save(tmp_path / "imgs" / f"{s.name}.png")
        names = np.array(["unclassified", "epithelial", "fibroblast", "inflammatory", "others"])[s.classes + 1]
        c = (s.boxes[:, :2] + s.boxes[:, 2:]) / 2
        pd.DataFrame({"x": c[:, 0], "y": c[:, 1], "class": names}).to_csv(tmp_path / "pts" / f"{s.name}.csv", index=False)
    out = tmp_path / "cls.pt"
    res = _cli("train-classifier", "--images", tmp_path / "imgs", "--points", tmp_path / "pts", "--out", out, "--um-per-px", 0.5,
               "--epochs", 1, "--width", 8, "--val", 1)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["classes"] == ["epithelial", "fibroblast", "inflammatory", "others"] and out.is_file()
    # a point outside its image: a clear error, no model written
    bad_dir = tmp_path / "badpts"
    bad_dir.mkdir()
    for p in (tmp_path / "pts").iterdir():
        pd.read_csv(p).assign(x=lambda d: d["x"] + 10_000).to_csv(bad_dir / p.name, index=False)
    bad = _cli("train-classifier", "--images", tmp_path / "imgs", "--points", bad_dir, "--out", tmp_path / "bad.pt", "--um-per-px", 0.5)
    assert bad.returncode == 2 and "outside the image" in bad.stderr and not (tmp_path / "bad.pt").exists()
    # detect with both stages
    small_detector.save(tmp_path / "det.pt")
    small_classifier.save(tmp_path / "cls4.pt")
    Image.fromarray(val[0].image).save(tmp_path / "v.png")
    res = _cli("detect", tmp_path / "v.png", "--out", tmp_path / "b.csv", "--detector", tmp_path / "det.pt", "--classifier", tmp_path / "cls4.pt",
               "--um-per-px", 0.5, "--conf", 0.25, "--overlay", tmp_path / "o.png")
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(tmp_path / "b.csv")
    assert {"class", "class_probability", "p_epithelial"} <= set(df.columns) and set(df["class"]) <= {"epithelial", "fibroblast", "inflammatory", "others"}
    assert (tmp_path / "o.png").is_file() and (tmp_path / "b.geojson").is_file()


def test_a_large_field_tiled_equals_one_pass_and_keeps_every_cell(monuseg):
    """The shipped detector on a 4 × 4 mosaic (1920² px): the default 512 px tiles give the boxes of one pass over
    the whole field, and 16 times the cells of one copy. (Candidate caps per tile and per image once lost most
    cells of large fields at low confidence.)"""
    from napari_bioid.engine.cells.detector import Detector, default_detector_path

    det = Detector.load(default_detector_path())
    img = monuseg[1][0].image[:480, :480]
    mosaic = np.tile(img, (4, 4, 1))
    for conf in (0.3, 0.05):
        tiled = det.detect(mosaic, 0.5, conf=conf)
        whole = det.detect(mosaic, 0.5, conf=conf, tile=2048)
        m = detection_metrics([(tiled["boxes"], tiled["scores"])], [whole["boxes"]], 0.5, 0.0)
        assert m["recall"] > 0.95 and m["precision"] > 0.95, (conf, m)
    one = len(det.detect(img, 0.5)["boxes"])
    assert abs(len(det.detect(mosaic, 0.5)["boxes"]) / (16 * one) - 1) < 0.1


def test_nms_equals_the_greedy_definition():
    """The k-d-tree NMS gives exactly the textbook greedy result on dense random boxes of mixed sizes."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 200, (600, 2))
    wh = rng.uniform(4, 30, (600, 2))
    wh[:20] *= 10  # a few large boxes (an untrained network's) take the other path
    boxes = torch.tensor(np.concatenate([xy, xy + wh], 1))
    scores = torch.tensor(rng.random(600))
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    alive = torch.ones(600, dtype=torch.bool)
    for i in range(600):
        if alive[i]:
            sup = iou[i] > 0.45
            sup[: i + 1] = False
            alive &= ~sup
    assert nms(boxes, scores, 0.45).tolist() == order[alive].tolist()
