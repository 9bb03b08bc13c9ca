"""npe2 reader and writer round trips through napari."""

import numpy as np
import pandas as pd
import pytest

from napari_bioid.engine.io import read_coordinates, write_coordinates, write_mrc
from napari_bioid.engine.io.coords import make_table


def test_mrc_opens_as_image_scaled_in_angstrom(make_napari_viewer, tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    write_mrc(tmp_path / "t.mrc", data, voxel_size=13.5)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "t.mrc"), plugin="napari-bioid")
    np.testing.assert_array_equal(np.asarray(layer.data), data)
    assert tuple(layer.scale) == (13.5, 13.5, 13.5)
    assert layer.metadata["voxel_size"] == pytest.approx(13.5)


@pytest.mark.parametrize("suffix", [".csv", ".star"])
def test_points_round_trip_keeps_voxels_and_angstrom(make_napari_viewer, tmp_path, suffix):
    table = make_table([[3.5, 10, 20], [5, 6, 7.25]], class_id=[2, 1], score=[0.9, 0.4])
    src = write_coordinates(table, tmp_path / "in.csv", voxel_size=10.0)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(src), plugin="napari-bioid")
    assert tuple(layer.scale) == (10.0, 10.0, 10.0)
    np.testing.assert_allclose(layer.data, table[["z", "y", "x"]].to_numpy())
    assert layer.features["class_id"].tolist() == [2, 1]
    out = tmp_path / f"out{suffix}"
    layer.save(str(out), plugin="napari-bioid")
    back = read_coordinates(out)
    np.testing.assert_allclose(back[["x", "y", "z"]], table[["x", "y", "z"]], atol=1e-4)
    assert back["class_id"].tolist() == [2, 1]
    if suffix == ".csv":
        raw = pd.read_csv(out)
        np.testing.assert_allclose(raw["z_A"], table["z"] * 10.0)
