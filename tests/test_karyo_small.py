"""Small-crop expert (issue 15): another lab's small chromosomes get a second opinion from a network that sees them at
their own size. The machinery is kept (``bioid karyo small-expert``), but the shipped model no longer carries an
expert: once the classifier's inputs were centred to the half pixel, the expert no longer made fewer errors on the
validation cases (see the README)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.karyo import PolarityModel, list_crops, load_polarity_model, save_polarity_model, split_by_case
from napari_bioid.engine.karyo.data import to_canvas
from napari_bioid.engine.karyo.polarity import _four_views
from napari_bioid.engine.karyo.training import (
    SMALL_SPEC, build_chain_set, build_small_set, chain_inputs, chain_log_odds, chain_small_inputs,
)

from conftest import SHARED

CROPS = SHARED / "data" / "chromosomes" / "karyogram_crops"


@pytest.fixture(scope="module")
def held_out():
    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    return split_by_case(list_crops(CROPS), 0.3, seed=0)[1]


def _rod(h, w, p_arm=0.35):
    """A dark rod on white, uint8 (h, w), with a constriction (centromere) at ``p_arm`` of its height."""
    img = np.full((h + 4, w + 4), 255, np.uint8)
    img[2 : 2 + h, 2 : 2 + w] = 60
    c = 2 + int(round(p_arm * h))
    img[c, 2] = img[c, 1 + w] = 255
    return img


def test_to_canvas_keeps_the_crops_size():
    small = to_canvas(_rod(10, 4), canvas=72, magnification=3)
    dark = np.argwhere(small < 200)
    assert small.shape == (72, 72) and small.dtype == np.uint8
    # the 10 x 4 px rod spans about 3 x its size (bilinear edges add a pixel or two), unstretched
    assert 30 <= np.ptp(dark[:, 0]) + 1 <= 33 and 12 <= np.ptp(dark[:, 1]) + 1 <= 15
    assert abs(dark[:, 0].mean() - 35.5) < 1.0 and abs(dark[:, 1].mean() - 35.5) < 1.0  # centred
    # twice as long stays twice as long (to_square would stretch both to the full side)
    longer = np.argwhere(to_canvas(_rod(20, 4), 72, 3) < 200)
    assert 60 <= np.ptp(longer[:, 0]) + 1 <= 63
    # too long for the magnification (64 x 14 px with the margin): shrunk so that the whole crop fits, 72 / 64 = 1.125 x
    big = np.argwhere(to_canvas(_rod(60, 10), 72, 3) < 200)
    assert 66 <= np.ptp(big[:, 0]) + 1 <= 69
    with pytest.raises(BioidInputError, match="magnification"):
        to_canvas(_rod(10, 4), 72, 0)


def _tiny_model_with_expert(seed=0):
    torch.manual_seed(seed)
    model = PolarityModel(depth=18, width=4, size=32, temperature=1.3)
    model.small_expert = PolarityModel(depth=18, width=4, size=72)
    for m in (model.net, model.small_expert.net):  # untrained BatchNorm statistics would make every output alike
        m.train()
        with torch.no_grad():
            m(torch.randn(8, 3, 72, 72))
        m.eval()
    return model


def test_expert_changes_only_the_small_crops_and_round_trips(tmp_path):
    model = _tiny_model_with_expert()
    wide = np.full((60, 50), 255, np.uint8)
    wide[20:38, 22:28] = 60  # an 18-px chromosome in a crop with wide margins
    uprights = [_rod(12, 5), _rod(60, 18), wide, _rod(24, 8)]
    # small means the chromosome's length (<= 20 px), whatever the margins the crop was cut with
    assert [model.small_input(u) is not None for u in uprights] == [True, False, True, False]
    # the canvas holds the chromosome at 3x (18 -> 54 px), with a 3-px margin, centred
    dark = np.argwhere(model.small_input(wide) < 200)
    assert 52 <= np.ptp(dark[:, 0]) + 1 <= 56 and abs(dark[:, 0].mean() - 35.5) < 1.5
    alone = PolarityModel(depth=18, width=4, size=32, temperature=1.3, net=model.net)
    squares = np.stack([model.square(u) for u in uprights])
    main = alone.log_odds_squares(squares)
    with torch.no_grad():
        x = model.small_expert._input(np.stack([model.small_input(uprights[i]) for i in (0, 2)]), torch.device("cpu"))
        expert = _four_views(model.small_expert.net.to(memory_format=torch.channels_last), x).double().numpy()
    mixed = main.copy()
    mixed[[0, 2]] = 0.5 * main[[0, 2]] + 0.5 * expert
    p = model.p_up(uprights)
    assert p == pytest.approx(1 / (1 + np.exp(-mixed / 1.3)), abs=1e-6)
    assert p[[1, 3]] == pytest.approx(alone.p_up(uprights)[[1, 3]], abs=1e-9)  # large crops: the main networks alone
    assert not np.allclose(p[[0, 2]], alone.p_up(uprights)[[0, 2]], atol=1e-4)
    # the expert's weights, input and mix travel in the model file
    path = save_polarity_model(model, tmp_path / "m.pt")
    again = load_polarity_model(path)
    assert again.config()["small_expert"] == {"depth": 18, "width": 4, "canvas": 72, "members": 1, "mean": model.mean,
                                             "std": model.std, "max_side": 20, "margin": 3, "magnification": 3.0,
                                             "weight": 0.5}
    assert again.p_up(uprights) == pytest.approx(p, abs=1e-6)
    # without an expert a file has none, and weights are checked
    assert load_polarity_model(save_polarity_model(alone, tmp_path / "a.pt")).small_expert is None
    with pytest.raises(BioidInputError, match="small_weight"):
        PolarityModel(depth=18, width=4, size=32, small_weight=1.5)
    assert alone.small_input(uprights[0]) is None


def test_chain_sets_carry_the_small_crops_canvases(held_out):
    crops = held_out[:60]
    data = build_chain_set(crops, 32, seed=4, shift=("lab", 3.0))
    assert data.small_spec == SMALL_SPEC and len(data.small) == len(data.small_rows) > 20  # lab 3: most crops are small
    assert build_chain_set(crops[:5], 32, seed=4).small_rows.size == 0  # our own crops are not
    model = _tiny_model_with_expert()
    canvases, rows = chain_small_inputs(model, data)
    down = ~data.up[rows]
    assert down.any() and np.array_equal(canvases[down], data.small[down][:, ::-1, ::-1])
    assert np.array_equal(canvases[~down], data.small[~down])
    main = chain_log_odds(PolarityModel(depth=18, width=4, size=32, net=model.net), data)
    both = chain_log_odds(model, data)
    others = np.setdiff1d(np.arange(len(data)), rows)
    assert both[others] == pytest.approx(main[others]) and not np.allclose(both[rows], main[rows])
    assert main == pytest.approx(model.log_odds_squares(chain_inputs(data)))
    with pytest.raises(BioidInputError, match="small-crop expert takes canvases"):
        chain_small_inputs(model, build_chain_set(crops[:3], 32, seed=4, small=None))


def test_small_training_examples_are_another_labs_small_crops(held_out):
    data = build_small_set(held_out[:30], variants=4, seed=0)
    assert data.squares.shape == (120, 72, 72) and 0.3 < data.up.mean() < 0.7
    # at 3x magnification the chromosome spans at most 3 x 26 px; many are far smaller than the canvas
    extents = np.array([np.ptp(np.argwhere(s < 200)[:, 0]) + 1 if (s < 200).any() else 0 for s in data.squares])
    assert extents.max() <= 3 * 26 + 2 and np.median(extents) < 60 and (extents > 10).mean() > 0.9


def test_cli_small_expert_trains_attaches_and_refuses_bad_input(held_out, tmp_path):
    cases = sorted({c.case for c in list_crops(CROPS)})[:10]
    data = tmp_path / "data"
    for c in list_crops(CROPS):
        if c.case in cases:
            dest = data / c.case / c.path.parent.name
            dest.mkdir(parents=True, exist_ok=True)
            (dest / c.path.name).symlink_to(c.path)
    base = save_polarity_model(PolarityModel(depth=18, width=4, size=32), tmp_path / "base.pt")
    cli = [sys.executable, "-m", "napari_bioid.cli", "karyo", "small-expert", "--model", str(base), "--data", str(data)]
    bad = subprocess.run([*cli, "--out", str(tmp_path / "bad.pt"), "--seeds", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--seeds" in bad.stderr and not (tmp_path / "bad.pt").exists()
    out = tmp_path / "s.pt"
    res = subprocess.run([*cli, "--out", str(out), "--seeds", "0", "--epochs", "6", "--variants", "2", "--width", "8"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    metrics = json.loads(out.with_suffix(".json").read_text())
    model = load_polarity_model(out)
    assert model.small_expert is not None and model.small_expert.width == 8 and model.small_expert.size == 72
    rec = metrics["small_expert"]
    assert rec["training"]["epochs"] == 6 and rec["validation"]["small_crops"] > 0
    # six tiny epochs on seven cases' small crops already beat chance on the validation cases' small crops
    assert max(rec["training"]["best_val_accuracy"]) > 0.6, rec
    assert metrics["test"]["n"] == sum(1 for c in split_by_case(list_crops(data), 0.3, seed=0)[1])
