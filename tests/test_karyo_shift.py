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
