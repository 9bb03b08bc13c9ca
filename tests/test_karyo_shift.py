"""Issue 15 (first part): the domain-shift crops and the calibration figures of the polarity evaluation."""

import numpy as np
import pytest

from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.karyo.shift import SHIFT_LEVELS, shift_crop, shift_levels
from napari_bioid.engine.karyo.training import expected_calibration_error

from conftest import SHARED

CROPS = SHARED / "data" / "chromosomes" / "karyogram_crops"


@pytest.fixture(scope="module")
def crop():
    from napari_bioid.engine.karyo.data import list_crops, read_crop

    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    return read_crop(list_crops(CROPS)[0].path)


def test_each_shift_changes_the_crop_as_its_name_says(crop):
    dark = crop < 128
    h, w = crop.shape
    small = shift_crop(crop, "scale", 0.3)
    assert small.shape == (round(h * 0.3), round(w * 0.3))
    grey = shift_crop(crop, "background", 200)
    assert np.median(grey[~dark]) == pytest.approx(200 * np.median(crop[~dark]) / 255, abs=1)  # the white background becomes grey
    low = shift_crop(crop, "contrast", 0.35)
    assert (255 - low[dark].astype(float)).mean() == pytest.approx(0.35 * (255 - crop[dark].astype(float)).mean(), rel=0.02)
    noisy = shift_crop(crop, "noise", 10, np.random.default_rng(1))
    assert 8 < np.std(noisy[~dark].astype(float) - crop[~dark]) < 11
    assert shift_crop(crop, "blur", 2.5).std() < crop.std()
    jpeg = shift_crop(crop, "jpeg", 20)
    assert jpeg.shape == crop.shape and 0 < np.abs(jpeg.astype(float) - crop).mean() < 10
    lab = shift_crop(crop, "lab", 3)
    assert lab.shape == (round(h * 0.3), round(w * 0.3)) and np.median(lab) < 230
    for kind, level in shift_levels():
        out = shift_crop(crop, kind, level)
        assert out.dtype == np.uint8 and out.ndim == 2
    assert len(shift_levels()) == sum(len(v) for v in SHIFT_LEVELS.values())
    with pytest.raises(BioidInputError, match="unknown shift"):
        shift_crop(crop, "sepia", 1)
    with pytest.raises(BioidInputError, match="scale level"):
        shift_crop(crop, "scale", 1.5)


def test_expected_calibration_error():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 200_000)
    calibrated = rng.uniform(size=conf.size) < conf  # right with probability = confidence
    assert expected_calibration_error(conf, calibrated) < 0.005
    overconfident = rng.uniform(size=conf.size) < conf - 0.2
    assert expected_calibration_error(conf, overconfident) == pytest.approx(0.2, abs=0.01)


def test_upright_search_holds_on_small_low_contrast_grey_background_crops():
    """Known rotations of crops shrunk to 30 %, blurred, at 35 % contrast on a grey background with noise: the upright
    angle found matches the one found on the original crop at the same rotation."""
    from napari_bioid.engine.karyo.data import list_crops, read_crop
    from napari_bioid.engine.karyo.rotate import background_fill, normalise_crop, rotate_image, upright_angle

    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    crops = list_crops(CROPS)
    rng = np.random.default_rng(3)
    picks = rng.choice(len(crops), 60, replace=False)
    errors = []
    for i in picks:
        crop = read_crop(crops[i].path)
        if max(crop.shape) < 60:
            continue
        small = shift_crop(crop, "scale", 0.3)
        for kind, level in (("blur", 1.0), ("contrast", 0.35), ("background", 170), ("noise", 10)):
            small = shift_crop(small, kind, level, rng)
        theta = float(rng.uniform(0, 360))
        reference = upright_angle(rotate_image(crop, theta))
        turned = rotate_image(small, theta, fill=background_fill(small))  # cut at θ from a grey-background image
        found = upright_angle(normalise_crop(turned))
        errors.append(abs(((found - reference) + 90) % 180 - 90))
    errors = np.array(errors)
    assert len(errors) >= 40
    assert np.mean(errors <= 8) >= 0.9 and np.median(errors) <= 3, np.sort(errors)


def test_normalise_crop_restores_grey_background_crops_and_leaves_ours_alone():
    from napari_bioid.engine.karyo.data import list_crops, read_crop
    from napari_bioid.engine.karyo.rotate import normalise_crop

    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    crops = list_crops(CROPS)
    rng = np.random.default_rng(5)
    unchanged, restored = 0, []
    for i in rng.choice(len(crops), 200, replace=False):
        crop = read_crop(crops[i].path)
        unchanged += np.array_equal(normalise_crop(crop), crop)
        faint = shift_crop(crop, "background", 170)
        before = np.abs(faint.astype(float) - crop).mean()
        restored.append(np.abs(normalise_crop(faint).astype(float) - crop).mean() / before)
    assert unchanged >= 0.95 * 200  # the training crops' own range: left as they are
    assert np.median(restored) < 0.05  # the grey-background crop comes back close to the original


def test_random_shift_covers_the_evaluated_shifts_and_keeps_the_crop_readable(crop):
    """Training augmentation: sizes down to 25 %, grey backgrounds, faint crops, and untouched ones, all uint8."""
    from napari_bioid.engine.karyo.shift import RANDOM_SHIFT, random_shift

    rng = np.random.default_rng(0)
    outs = [random_shift(crop, rng) for _ in range(300)]
    assert all(o.dtype == np.uint8 and o.ndim == 2 for o in outs)
    scale = np.array([o.shape[0] / crop.shape[0] for o in outs])
    assert scale.min() < 0.3 and np.mean(scale < 0.99) == pytest.approx(RANDOM_SHIFT["scale"][0], abs=0.1)
    assert np.mean([np.array_equal(o, crop) for o in outs]) > 0.01  # some crops stay as read
    assert min(np.percentile(o, 95) for o in outs) < 215  # grey backgrounds
    dark = [float(o.min()) for o in outs]
    assert max(dark) > crop.min() + 60  # faint (low contrast) crops


def test_temperature_scaling_calibrates_an_overconfident_model():
    """fit_temperature finds T > 1 for log-odds that are too large, and the ECE falls."""
    from napari_bioid.engine.karyo.polarity import PolarityModel
    from napari_bioid.engine.karyo.training import ChainSet, fit_temperature

    rng = np.random.default_rng(0)
    n = 4000
    up = rng.random(n) < 0.5
    # a model right 90 % of the time but always claiming ~99.97 % (log-odds ±8)
    right = rng.random(n) < 0.9
    said_up = np.where(right, up, ~up)
    d = np.where(said_up, 8.0, -8.0) * rng.uniform(0.8, 1.2, n)

    class Fixed(PolarityModel):
        def log_odds_squares(self, squares, *args, **kwargs):
            return d

    model = Fixed(depth=18, width=4, size=8)
    data = ChainSet(np.zeros((n, 8, 8), np.uint8), up, np.arange(n), [], 1)
    t = fit_temperature(model, data)
    assert t > 2.0

    def ece(temp):
        p = 1 / (1 + np.exp(-d / temp))
        return expected_calibration_error(np.maximum(p, 1 - p), (p >= 0.5) == up)

    assert ece(t) < 0.03 < ece(1.0)
    with pytest.raises(BioidInputError):
        fit_temperature(model, ChainSet(np.zeros((0, 8, 8), np.uint8), np.zeros(0, bool), np.zeros(0, int), [], 1))


def test_shipped_model_holds_on_another_labs_small_faint_crops():
    """300 held-out crops as another lab would give them, turned at random and handed to the deployed chain (orient_images).

    Measured on 1,000 crops (bench_karyo_shift.py): see the README's table. The deployed chain and the stored chain
    outputs the training measures itself on must agree: before the classifier's inputs were centred to the half pixel
    they did not (scale 0.3: 94.3 % deployed against 98.4 % on chain outputs), and this test would have failed.
    """
    import copy

    from napari_bioid.engine.karyo import list_crops, load_polarity_model, split_by_case
    from napari_bioid.engine.karyo.training import build_chain_set, evaluate_orient, evaluate_polarity

    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    test = split_by_case(list_crops(CROPS), 0.3, seed=0)[1]
    rng = np.random.default_rng(3)
    crops = [test[i] for i in np.sort(rng.choice(len(test), 300, replace=False))]
    model = load_polarity_model()
    for shift, floor in ((("lab", 2.0), 0.96), (("scale", 0.3), 0.96), (("contrast", 0.35), 0.96), (("lab", 3.0), 0.93)):
        ev = evaluate_orient(model, crops, seed=5, shift=shift)
        print(shift, round(ev["accuracy"], 4), round(ev["ece"], 4))
        assert ev["accuracy"] >= floor, (shift, ev["accuracy"], ev["weakest"])
        assert ev["ece"] <= 0.03, (shift, ev["ece"])
        if shift[0] == "scale":  # one pass (no test-time turns, which stored chain outputs cannot have)
            one = copy.copy(model)
            one.turns_below = 0.0
            deployed = evaluate_orient(one, crops, seed=5, shift=shift)["accuracy"]
            stored = evaluate_polarity(model, build_chain_set(crops, model.size, seed=5, workers=2, shift=shift,
                                                              straighten=model.straighten))["accuracy"]
            assert abs(stored - deployed) <= 0.01, (stored, deployed)


def test_classifier_inputs_turn_with_the_crop():
    """A crop turned 180° (or mirrored) gives exactly the turned square, canvas and cut: no offset can tell up from down."""
    from napari_bioid.engine.karyo.data import to_canvas, to_square, trim_to_chromosome

    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = rng.integers(5, 90, 2)
        x = np.full((h, w), 255, np.uint8)
        x[1:-1, 1:-1] = rng.integers(0, 200, (h - 2, w - 2))
        for make in (lambda z: to_square(z, 128), lambda z: to_canvas(z, 72, 3.0), lambda z: trim_to_chromosome(z, 3)[0]):
            np.testing.assert_array_equal(make(x[::-1, ::-1]), make(x)[::-1, ::-1])
            np.testing.assert_array_equal(make(x[:, ::-1]), make(x)[:, ::-1])
    # an odd difference between width and long side: the rod is centred to the half pixel, not half a pixel left
    rod = np.full((20, 7), 255, np.uint8)
    rod[:, 1:-1] = 0
    sq = to_square(rod, 40).astype(float)
    cols = (255 - sq).sum(0)
    assert abs((cols * np.arange(40)).sum() / cols.sum() - 19.5) < 1e-6


def test_random_lab_shift_changes_several_things_at_once_and_variants_follow_the_mode(crop):
    """RANDOM_LAB: always smaller (25–70 %), usually fainter/greyer/noisier together; the variant plan of each mode."""
    from napari_bioid.engine.karyo.shift import RANDOM_LAB, RANDOM_SHIFT, random_shift
    from napari_bioid.engine.karyo.training import augment_mode, variant_table

    rng = np.random.default_rng(0)
    outs = [random_shift(crop, rng, RANDOM_LAB) for _ in range(200)]
    scale = np.array([o.shape[0] / crop.shape[0] for o in outs])
    assert 0.24 < scale.min() and scale.max() < 0.72 and scale.min() < 0.3
    # the background is no longer pure white in most (grey level, noise or JPEG), unlike the crop as read
    assert np.mean([np.percentile(o, 95) < 250 or o.max() < 255 or np.std(o[o > 200]) > 1.5 for o in outs]) > 0.8
    assert [variant_table("lab", v) for v in range(8)] == [None, RANDOM_SHIFT, None, RANDOM_LAB] * 2
    assert [variant_table("shift", v) for v in range(4)] == [None, RANDOM_SHIFT] * 2
    assert all(variant_table("none", v) is None for v in range(4))
    assert augment_mode(True) == "shift" and augment_mode(False) == "none" and augment_mode("lab") == "lab"
    with pytest.raises(BioidInputError, match="unknown augmentation"):
        augment_mode("sepia")


def test_fine_tuning_on_another_labs_crops_recovers_accuracy_there():
    """A tiny model trained on our crops only, then fine-tuned (init=) with lab augmentation: better on held-out cases
    at 35 % contrast (measured: 58 % → 81 % on 368 crops of 8 held-out cases), the starting model untouched."""
    import torch
    from napari_bioid.engine.karyo import list_crops, split_by_case
    from napari_bioid.engine.karyo.training import build_chain_set, evaluate_polarity, train_polarity

    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    train_crops, test_crops = split_by_case(list_crops(CROPS), 0.3, seed=0)
    train_crops = [c for c in train_crops if c.case in sorted({c.case for c in train_crops})[:24]]
    test_crops = [c for c in test_crops if c.case in sorted({c.case for c in test_crops})[:8]]
    clean = build_chain_set(train_crops, size=48, variants=1, seed=1)
    base = train_polarity(clean, depth=18, width=8, epochs=5, batch_size=32, lr=0.01, seed=0)
    before = {k: v.clone() for k, v in base.net.state_dict().items()}
    shifted_test = build_chain_set(test_crops, size=48, seed=2, shift=("contrast", 0.35))
    acc_base = evaluate_polarity(base, shifted_test)["accuracy"]
    lab = build_chain_set(train_crops, size=48, variants=4, seed=3, augment="lab")
    tuned = train_polarity(lab, epochs=4, batch_size=32, lr=0.01, seed=0, init=base)
    acc_tuned = evaluate_polarity(tuned, shifted_test)["accuracy"]
    in_domain = evaluate_polarity(tuned, build_chain_set(test_crops, size=48, seed=2))["accuracy"]
    print("contrast 0.35:", acc_base, "->", acc_tuned, "in-domain", in_domain)
    assert acc_tuned > acc_base + 0.1
    assert in_domain > 0.85
    assert tuned.metrics["recipe"]["initial_weights"] == "fine-tuned" and tuned.width == 8
    assert all(torch.equal(before[k], v) for k, v in base.net.state_dict().items())  # the starting model is not changed
    with pytest.raises(BioidInputError, match="takes 48-px squares"):
        train_polarity(build_chain_set(test_crops[:20], size=32, seed=0), epochs=1, init=base)


def test_test_time_turns_count_each_pass_with_the_end_it_put_on_top():
    """A turn of exactly 180° gives the first pass's upright crop turned 180°: it must count with the sign reversed, so
    the mean is (own − turned) / 2; no turns below the threshold leave the first pass alone."""
    import copy

    from napari_bioid.engine.karyo import list_crops, load_polarity_model, orient_images, split_by_case
    from napari_bioid.engine.karyo.rotate import normalise_crop, rotate_image
    from napari_bioid.engine.karyo.training import lab_inputs

    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    model = load_polarity_model()
    assert model.turn_angles and model.turns_below == 0.9  # the shipped default (README)
    crops = split_by_case(list_crops(CROPS), 0.3, seed=0)[1][::400][:12]
    images, _ = lab_inputs(crops, seed=2, shift=("lab", 3.0))
    plain = copy.copy(model)
    plain.turn_angles, plain.turns_below = (), 0.0
    first = orient_images(images, model=plain)
    uprights = [rotate_image(normalise_crop(im), d.upright_angle_deg) for im, d in zip(images, first)]
    own = model.log_odds(uprights)
    turned = model.log_odds([u[::-1, ::-1] for u in uprights])
    half = copy.copy(model)
    half.turn_angles, half.turns_below = (180.0,), 1.0
    both = orient_images(images, model=half)
    p = np.array([d.p_up for d in both])
    np.testing.assert_allclose(p, model.calibrated((own - turned) / 2), atol=0.06)  # resampled once more: not bit-exact
    assert np.abs(p - model.calibrated((own - turned) / 2)).mean() < 0.2 * np.abs(p - model.calibrated((own + turned) / 2)).mean()
    assert [d.upright_angle_deg for d in both] == [d.upright_angle_deg for d in first]
    never = copy.copy(model)
    never.turns_below = 0.0
    assert [d.p_up for d in orient_images(images, model=never)] == [d.p_up for d in first]
    with pytest.raises(BioidInputError, match="turns_below"):
        copy.copy(model).__class__(turns_below=1.5)
