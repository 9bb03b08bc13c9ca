"""Issue 14 (first part): picking slab by slab gives the whole-tomogram picks with memory bounded by the slab."""

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest

from napari_bioid.engine.tomo import evaluate_picks, load_picker, pick, pick_chunked, segment
from napari_bioid.engine.tomo.config import default_model_path

SAMPLE = default_model_path().parents[1] / "sample_data" / "sample_tomogram.mrc"


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE.is_file():
        pytest.skip("sample data not in this installation")
    vol = mrcfile.mmap(SAMPLE, permissive=True, mode="r").data
    return vol, load_picker(default_model_path(), voxel_size=10.0)


def test_slab_segmentation_equals_the_whole_one(sample):
    vol, model = sample
    whole = segment(vol, model)
    part = segment(vol, model, z_range=(17, 45))
    np.testing.assert_array_equal(part.probability, whole.probability[17:45])
    np.testing.assert_array_equal(part.class_map, whole.class_map[17:45])
    with pytest.raises(ValueError, match="empty z_range"):
        segment(vol, model, z_range=(30, 30))


@pytest.mark.parametrize("chunk", [13, 40])
def test_chunked_picks_equal_the_whole_tomogram_picks(sample, chunk):
    vol, model = sample
    whole = pick(vol, model)
    prob = np.full(vol.shape, -1.0, np.float32)
    seen = []
    part = pick_chunked(vol, model, chunk_slices=chunk, probability_out=prob, progress=lambda d, t, m="": seen.append((d, t)))
    cols = ["x", "y", "z", "class_id", "score"]
    pd.testing.assert_frame_equal(part.picks[cols].reset_index(drop=True), whole.picks[cols].reset_index(drop=True))
    np.testing.assert_allclose(prob, whole.segmentation.probability, atol=1e-5)  # other batches: float rounding
    assert part.segmentation is None and seen[-1][0] == seen[-1][1]
    from napari_bioid.engine.io import read_coordinates

    truth = read_coordinates(SAMPLE.with_name("sample_truth.csv"), 10.0, vol.shape)
    radius = max(c.radius for c in model.config.classes)
    assert evaluate_picks(part.picks, truth, radius)["f1"] >= 0.8
    with pytest.raises(ValueError, match="chunk_slices"):
        pick_chunked(vol, model, chunk_slices=0)
    with pytest.raises(ValueError, match="probability_out has shape"):
        pick_chunked(vol, model, probability_out=np.zeros((2, 2, 2), np.float32))


def test_cli_writes_the_probability_map_slab_by_slab(tmp_path, capsys):
    from napari_bioid.cli import main

    out = tmp_path / "p.csv"
    assert main(["tomo", "pick", str(SAMPLE), "--out", str(out), "--chunk-slices", "20", "--probability-out", str(tmp_path / "prob.mrc"),
                 "--truth", str(SAMPLE.with_name("sample_truth.csv"))]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluation"]["f1"] >= 0.8
    with mrcfile.open(tmp_path / "prob.mrc", permissive=True) as m:
        assert m.data.shape == (64, 128, 128) and m.data.dtype == np.float32 and 0 <= m.data.min() and m.data.max() <= 1
        assert float(m.voxel_size.x) == pytest.approx(10.0)
    assert main(["tomo", "pick", str(SAMPLE), "--out", str(tmp_path / "q.csv"), "--chunk-slices", "0"]) == 2
    assert not (tmp_path / "q.csv").exists()
