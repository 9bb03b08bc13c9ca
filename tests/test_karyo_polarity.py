"""Polarity classifier: tiny training beats chance; the whole chain turns real crops p-arm up."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.karyo import (
    Decision, PolarityModel, crops_from_labels, list_crops, load_polarity_model, orient_images, oriented_image,
    read_crop, read_decisions, rotate_image, save_polarity_model, split_by_case, to_square, write_decisions,
)
from napari_bioid.engine.karyo.training import build_chain_set, evaluate_polarity, train_polarity

from conftest import SHARED

CROPS = SHARED / "data" / "chromosomes" / "karyogram_crops"


@pytest.fixture(scope="module")
def crops():
    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    return list_crops(CROPS)


@pytest.fixture(scope="module")
def test_cases(crops):
    """Crops of the default model's held-out cases (the 30 % test split, seed 0)."""
    return split_by_case(crops, 0.3, seed=0)[1]


def _similarity(a, b, size=64):
    """Correlation of two crops after padding to squares (1 = identical)."""
    x, y = to_square(a, size).astype(float).ravel(), to_square(b, size).astype(float).ravel()
    return float(np.corrcoef(x, y)[0, 1])


def test_tiny_training_on_a_subset_beats_chance(crops):
    train_crops, test_crops = split_by_case(crops, 0.3, seed=0)
    train_cases = sorted({c.case for c in train_crops})[:24]
    test_cases = sorted({c.case for c in test_crops})[:8]
    train = build_chain_set([c for c in train_crops if c.case in train_cases], size=48, variants=1, seed=1)
    test = build_chain_set([c for c in test_crops if c.case in test_cases], size=48, variants=1, seed=2)
    assert 0.35 < test.up.mean() < 0.65  # random input angles leave about half of the crops upside down
    model = train_polarity(train, depth=18, width=8, epochs=5, batch_size=32, lr=0.01, seed=0)
    assert all(p.is_contiguous() for p in model.net.parameters())  # trained channels-last on CPU, handed back in the default layout
    result = evaluate_polarity(model, test)
    print("tiny polarity model:", json.dumps({k: result[k] for k in ("accuracy", "n", "tp", "fp", "tn", "fn", "weakest")}))
    assert result["n"] == len(test) > 300
    # chance is 0.5 (and a constant answer scores at most max(up, down) < 0.65)
    assert result["accuracy"] > 0.8
    assert result["tp"] + result["fn"] == int(test.up.sum())


def test_model_file_round_trip(tmp_path):
    model = PolarityModel(depth=18, width=4, size=32, metrics={"note": "untrained"})
    path = save_polarity_model(model, tmp_path / "m.pt")
    again = load_polarity_model(path)
    x = [np.full((30, 10), 255, np.uint8)]
    x[0][5:25, 3:7] = 40
    assert again.config() == model.config() and again.metrics["note"] == "untrained"
    assert again.p_up(x) == pytest.approx(model.p_up(x))
    with pytest.raises(FileExistsError):
        save_polarity_model(model, path)
    with pytest.raises(BioidInputError, match="no such model file"):
        load_polarity_model(tmp_path / "missing.pt")


def test_model_file_keeps_its_straightening_gate_and_applies_it(tmp_path):
    from napari_bioid.engine.karyo.straighten import straighten
    from test_karyo_straighten import GATE, arc_chromosome

    model = PolarityModel(depth=18, width=4, size=32, straighten=dict(GATE))
    again = load_polarity_model(save_polarity_model(model, tmp_path / "m.pt"))
    assert again.straighten == GATE
    arc, _ = arc_chromosome()
    # the bent arc is classified straightened: the same as feeding its straightened square
    assert again.p_up([arc]) == pytest.approx(again.p_up_squares(to_square(straighten(arc)[0], 32)[None]))
    again.straighten = None
    assert again.p_up([arc]) == pytest.approx(again.p_up_squares(to_square(arc, 32)[None]))


def test_ensemble_averages_its_members_log_odds_and_round_trips(tmp_path):
    import torch

    from napari_bioid.engine.karyo.training import ensemble_models

    torch.manual_seed(0)
    a, b, c = (PolarityModel(depth=18, width=4, size=32) for _ in range(3))
    rng = np.random.default_rng(0)
    squares = rng.integers(0, 256, (6, 32, 32)).astype(np.uint8)
    ens = ensemble_models([a, b])
    assert ens.members == 2 and ens.mirror is False and ens.straighten is None
    mean = 0.5 * (a.log_odds_squares(squares) + b.log_odds_squares(squares))
    assert ens.log_odds_squares(squares) == pytest.approx(mean, abs=1e-5)
    assert not np.allclose(a.log_odds_squares(squares), b.log_odds_squares(squares))  # the members really differ
    # the file keeps the members; an ensemble joined with another model contributes each of its networks
    again = load_polarity_model(save_polarity_model(ens, tmp_path / "e.pt"))
    assert again.members == 2 and again.config() == ens.config()
    assert again.log_odds_squares(squares) == pytest.approx(mean, abs=1e-5)
    three = ensemble_models([again, c])
    assert three.members == 3
    assert three.log_odds_squares(squares) == pytest.approx((2 * mean + c.log_odds_squares(squares)) / 3, abs=1e-5)
    with pytest.raises(BioidInputError, match="at least two"):
        ensemble_models([a])
    with pytest.raises(BioidInputError, match="must share"):
        ensemble_models([a, PolarityModel(depth=18, width=8, size=32)])


def test_unsure_crops_get_the_mean_of_four_symmetric_views(tmp_path):
    """views_below: crops less sure than it get mean(d(x), d(mirror x), −d(180° x), −d(top-bottom x)); sure ones keep d(x)."""
    import torch

    torch.manual_seed(0)
    model = PolarityModel(depth=18, width=4, size=32, temperature=0.5)
    rng = np.random.default_rng(0)
    squares = rng.integers(0, 256, (40, 32, 32)).astype(np.uint8)
    views = [squares, squares[:, :, ::-1], squares[:, ::-1, ::-1], squares[:, ::-1, :]]
    d = [model.log_odds_squares(np.ascontiguousarray(v)) for v in views]
    four = (d[0] + d[1] - d[2] - d[3]) / 4
    assert not np.allclose(four, d[0], atol=1e-3)  # an untrained network is far from symmetric: the views matter
    model.views_below = 1.0  # every crop
    assert model.log_odds_squares(squares) == pytest.approx(four, abs=1e-5)
    conf = 1 / (1 + np.exp(-np.abs(d[0]) / model.temperature))
    model.views_below = float(np.median(conf))  # half of them
    unsure = conf < model.views_below
    assert 0 < unsure.sum() < len(squares)
    assert model.log_odds_squares(squares) == pytest.approx(np.where(unsure, four, d[0]), abs=1e-5)
    # the same from first-pass log-odds already computed (finish_model): only the unsure crops run again
    assert np.array_equal(model.unsure(d[0]), unsure)
    assert model.add_views(squares, d[0]) == pytest.approx(np.where(unsure, four, d[0]), abs=1e-5)
    kept, model.views_below, model.mirror = model.views_below, 1.0, True  # the mirror view is already in d: the same four views, each once
    assert model.log_odds_squares(squares) == pytest.approx(four, abs=1e-5)
    model.views_below, model.mirror = kept, False
    again = load_polarity_model(save_polarity_model(model, tmp_path / "v.pt"))
    assert again.views_below == model.views_below and again.log_odds_squares(squares) == pytest.approx(np.where(unsure, four, d[0]), abs=1e-5)
    with pytest.raises(BioidInputError, match="views_below"):
        PolarityModel(depth=18, width=4, size=32, views_below=1.5)


def test_cli_ensemble_of_two_trained_models_is_finished_on_their_split(crops, tmp_path):
    opts = ("--size", "48", "--width", "8", "--epochs", "3", "--variants", "1", "--straighten", "off")
    res, first = _train_cli_on_cases(crops, 14, tmp_path, *opts)
    assert res.returncode == 0, res.stderr
    second = tmp_path / "m2.pt"
    cli = [sys.executable, "-m", "napari_bioid.cli", "karyo"]
    res = subprocess.run([*cli, "train", "--data", str(tmp_path / "data"), "--out", str(second), "--seed", "1", *opts],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "e.pt"
    res = subprocess.run([*cli, "ensemble", str(first), str(second), "--data", str(tmp_path / "data"), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    metrics = json.loads(out.with_suffix(".json").read_text())
    ens = load_polarity_model(out)
    assert ens.members == 2 and ens.width == 8 and ens.mirror is False and ens.straighten is None
    members = [json.loads(p.with_suffix(".json").read_text()) for p in (first, second)]
    # the same held-out cases as the members' own tests, measured again for the ensemble
    assert metrics["split"] == members[0]["split"] and summary["test_crops"] == members[0]["test"]["n"]
    assert [m["test_accuracy"] for m in metrics["ensemble"]["members"]] == [m["test"]["accuracy"] for m in members]
    assert summary["test_accuracy"] > 0.6 and set(metrics["val_mirror"]) == {"off"}
    # the four symmetric views for unsure crops, at the review threshold by default, measured on validation crops
    assert ens.views_below == 0.9 and metrics["views"]["below"] == 0.9 and 0 < metrics["views"]["val_share_with_views"] < 1
    print("tiny members", [m["test"]["accuracy"] for m in members], "ensemble", summary["test_accuracy"])
    # members of another architecture are refused before anything is written
    other = save_polarity_model(PolarityModel(depth=18, width=4, size=48), tmp_path / "w4.pt")
    res = subprocess.run([*cli, "ensemble", str(first), str(other), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "bad.pt")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "must share" in res.stderr and not (tmp_path / "bad.pt").exists()


def test_shipped_model_reports_its_held_out_accuracy():
    model = load_polarity_model()
    test = model.metrics["test"]
    assert test["accuracy"] >= 0.964 and test["n"] > 5000  # the reference's 96.4 %, on held-out cases
    assert set(test["weakest"]) <= set(test["per_chromosome"])


def known_crops(test_cases, n=8):
    """One crop each of chromosomes 2, 4, 6, 9, 13, 17, 18, X from the first held-out case holding them."""
    wanted = ["2", "4", "6", "9", "13", "17", "18", "X"][:n]
    by_case = {}
    for c in test_cases:
        by_case.setdefault(c.case, {}).setdefault(c.chromosome, c)
    case = next(k for k, v in sorted(by_case.items()) if all(w in v for w in wanted))
    return [by_case[case][w] for w in wanted]


def test_orient_cli_turns_known_crops_upright_p_arm_up(test_cases, tmp_path):
    chosen = known_crops(test_cases)
    src = tmp_path / "in"
    src.mkdir()
    originals, angles = {}, {}
    rng = np.random.default_rng(7)
    from PIL import Image

    for c in chosen:
        img = read_crop(c.path)
        theta = float(rng.uniform(0, 360))
        name = f"chr{c.chromosome}.png"
        Image.fromarray(rotate_image(img, theta)).save(src / name)
        originals[name], angles[name] = img, theta
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "orient", str(src), "--out", str(out),
                          "--karyogram", str(tmp_path / "karyogram.png")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sheet = np.asarray(Image.open(tmp_path / "karyogram.png"))
    assert sheet.ndim == 2 and (sheet < 200).sum() > sum((im < 200).sum() for im in originals.values()) * 0.8
    with open(out / "decisions.csv", newline="") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(originals)
    assert list(next(iter(rows.values())))[:6] == ["file", "upright_angle_deg", "polarity", "p_up", "total_rotation_deg", "overridden"]
    for name, original in originals.items():
        result = np.asarray(Image.open(out / name))
        # the output looks like the crop as it was cut (p-arm up), not like its 180° rotation
        same, flipped = _similarity(result, original), _similarity(result, original[::-1, ::-1])
        assert same > flipped, (name, same, flipped, rows[name])
        # and the recorded rotation undoes the input angle (crops as cut stand within ~15° of vertical)
        err = abs((float(rows[name]["total_rotation_deg"]) + angles[name] + 180) % 360 - 180)
        assert err < 15, (name, rows[name], angles[name])
        assert rows[name]["overridden"] == "False"
    # nothing is overwritten without --overwrite
    again = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "orient", str(src), "--out", str(out)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    # --one-pass skips the test-time turns: the sure crops keep their p_up exactly, the unsure ones may move
    one = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "orient", str(src), "--out", str(tmp_path / "one"),
                          "--one-pass"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    with open(tmp_path / "one" / "decisions.csv", newline="") as fh:
        single = {r["file"]: float(r["p_up"]) for r in csv.DictReader(fh)}
    assert set(single) == set(rows)
    for name, p in single.items():
        if max(p, 1 - p) >= 0.9:
            assert float(rows[name]["p_up"]) == pytest.approx(p, abs=1e-4), name


def test_whole_image_with_labels_is_cut_and_oriented(test_cases, tmp_path):
    chosen = known_crops(test_cases, 6)
    canvas = np.full((260, 460), 255, np.uint8)
    labels = np.zeros(canvas.shape, np.int32)
    thetas = [20, 200, 95, 290, 160, 340]
    originals = []
    for i, (c, th) in enumerate(zip(chosen, thetas)):
        img = rotate_image(read_crop(c.path), th)
        h, w = img.shape
        y0, x0 = 10 + (i // 3) * 125, 10 + (i % 3) * 150
        assert h <= 120 and w <= 145
        mask = img < 230
        canvas[y0 : y0 + h, x0 : x0 + w][mask] = img[mask]
        labels[y0 : y0 + h, x0 : x0 + w][mask] = i + 1
        originals.append(read_crop(c.path))
    pieces, ids, boxes = crops_from_labels(canvas, labels)
    assert ids == [1, 2, 3, 4, 5, 6] and len(boxes) == 6
    decisions = orient_images(pieces, [f"label_{i}" for i in ids])
    for piece, d, original, th in zip(pieces, decisions, originals, thetas):
        result = oriented_image(piece, d)
        assert _similarity(result, original) > _similarity(result, original[::-1, ::-1]), d
        assert abs((d.total_rotation_deg + th + 180) % 360 - 180) < 15, (d, th)
    # the same through the CLI, from image files (labels as a 16-bit PNG)
    from PIL import Image

    Image.fromarray(canvas).save(tmp_path / "metaphase.png")
    Image.fromarray(labels.astype(np.uint16)).save(tmp_path / "labels.png")
    res = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "orient", str(tmp_path / "metaphase.png"),
                          "--labels", str(tmp_path / "labels.png"), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = read_decisions(tmp_path / "out" / "decisions.csv")
    assert [r.file for r in rows] == [f"label_{i:04d}.png" for i in ids]
    assert [r.total_rotation_deg for r in rows] == pytest.approx([d.total_rotation_deg for d in decisions])


def test_decisions_override_and_csv_round_trip(tmp_path):
    d = Decision("a.tif", 30.0, "down", 0.2)
    assert d.total_rotation_deg == 210.0 and d.confidence == pytest.approx(0.8)
    f = d.flipped()
    assert f.polarity == "up" and f.overridden and f.total_rotation_deg == 30.0 and f.p_up == 0.2
    assert f.flipped() == d  # flipping back restores the classifier's call
    path = write_decisions([d, f], tmp_path / "decisions.csv")
    assert read_decisions(path) == [d, f]
    with pytest.raises(FileExistsError):
        write_decisions([d], path)
    write_decisions([f], path, overwrite=True)
    assert read_decisions(path.with_name("decisions.csv.bak")) == [d, f]  # the old file is kept


def _train_cli_on_cases(crops, n_cases, tmp_path, *options):
    """``bioid karyo train`` on the first ``n_cases`` cases (linked into a folder of the expected layout); returns (result, model path)."""
    cases = sorted({c.case for c in crops})[:n_cases]
    data = tmp_path / "data"
    for c in crops:
        if c.case in cases:
            dest = data / c.case / c.path.parent.name
            dest.mkdir(parents=True, exist_ok=True)
            (dest / c.path.name).symlink_to(c.path)
    out = tmp_path / "m.pt"
    res = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "train", "--data", str(data), "--out", str(out),
                          *options], capture_output=True, text=True)
    return res, out


def test_cli_train_on_a_few_cases_writes_model_and_metrics(crops, tmp_path):
    res, out = _train_cli_on_cases(crops, 14, tmp_path, "--size", "48", "--width", "8", "--epochs", "3", "--variants", "1")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    metrics = json.loads(out.with_suffix(".json").read_text())
    model = load_polarity_model(out)
    assert model.size == 48 and model.width == 8 and model.metrics["test"] == metrics["test"]
    assert metrics["split"]["test"]["cases"] == 4 and summary["test_crops"] == metrics["split"]["test"]["crops"]
    assert summary["test_accuracy"] > 0.6  # three tiny epochs on ten cases already beat chance
    assert len(metrics["history"]) == 3 and all(h["val_accuracy"] is not None for h in metrics["history"])


def test_cli_train_with_straightening_chooses_the_gate_on_validation_crops(crops, tmp_path):
    res, out = _train_cli_on_cases(crops, 10, tmp_path, "--size", "32", "--width", "4", "--epochs", "1", "--variants", "1",
                                   "--straighten", "0.09,3,1")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(out.with_suffix(".json").read_text())
    chosen = metrics["straighten"]["chosen_on_validation"]
    rep = metrics["straighten"]["validation"]
    assert metrics["straighten"]["trained_with"] == {"min_bend": 0.09, "min_elongation": 3.0, "min_length_ratio": 1.0}
    assert rep["crops"] == 8 * metrics["split"]["validation"]["crops"]
    # the model keeps the gate that made the fewest validation errors, or none when no gate beat straightening nothing
    assert load_polarity_model(out).straighten == chosen
    if chosen is None:
        assert rep["errors_with"] >= rep["errors_without"]
    else:
        assert rep["errors_with"] < rep["errors_without"] and rep["errors_with"] <= rep["training_gate"]["errors"]
        assert all(chosen[k] >= v for k, v in metrics["straighten"]["trained_with"].items())


def test_cli_rejects_bad_input(tmp_path):
    res = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "orient", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not a folder of crops" in res.stderr
    (tmp_path / "empty").mkdir()
    res = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "orient", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "no crop images" in res.stderr
    res = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "train", "--data", str(tmp_path / "empty"),
                          "--out", str(tmp_path / "m.pt"), "--straighten", "0.1,3"], capture_output=True, text=True)
    assert res.returncode == 2 and "BEND,ELONGATION,RATIO" in res.stderr and not (tmp_path / "m.pt").exists()
    res = subprocess.run([sys.executable, "-m", "napari_bioid.cli", "karyo", "train", "--data", str(tmp_path / "empty"),
                          "--out", str(tmp_path / "m.pt"), "--views-below", "90"], capture_output=True, text=True)
    assert res.returncode == 2 and "--views-below" in res.stderr and not (tmp_path / "m.pt").exists()


def test_shipped_model_reads_bent_chromosomes_better_straightened(test_cases):
    """All held-out crops through the chain at random angles, with and without the shipped model's straightening gate.

    The crops the gate straightens (long, thin, bent: ~2 % of them, ~150 of 6,761) are read better straightened:
    with the shipped ensemble (four 128-px networks, symmetric views for unsure crops) at the angles of seed 31, 22
    errors as they are against 3 straightened (the previous default, two 224-px networks: 16 against 3; its first
    member alone, at seeds 31 / 32 / 33: 12 / 20 / 17 against 6 / 6 / 5).
    """
    model = load_polarity_model()
    assert model.straighten is not None
    plain = build_chain_set(test_cases, model.size, seed=31, workers=2)
    straight = build_chain_set(test_cases, model.size, seed=31, workers=2, straighten=model.straighten)
    assert np.array_equal(plain.up, straight.up)
    gated = np.flatnonzero((plain.squares != straight.squares).any(axis=(1, 2)))
    assert 0.01 < len(gated) / len(test_cases) < 0.05
    errors = {}
    for name, data in (("plain", plain), ("straightened", straight)):
        x = data.squares[gated].copy()
        down = ~data.up[gated]
        x[down] = x[down, ::-1, ::-1]
        errors[name] = int(np.sum((model.p_up_squares(x) >= 0.5) != data.up[gated]))
    print("bent held-out crops:", len(gated), "errors", errors)
    assert errors["straightened"] < 0.75 * errors["plain"]
    with pytest.raises(BioidInputError, match="straightens bent chromosomes"):
        evaluate_polarity(model, plain)
