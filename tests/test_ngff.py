"""Issue 14: Zarr / OME-Zarr tomograms read lazily at the level nearest the model's voxel size; probability maps written as OME-Zarr."""

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest
import zarr

from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.io import read_volume
from napari_bioid.engine.io.ngff import choose_level, create_ome_zarr, zarr_levels
from napari_bioid.engine.tomo.config import default_model_path

SAMPLE = default_model_path().parents[1] / "sample_data" / "sample_tomogram.mrc"


def write_pyramid(path, volume, voxel_size, unit="angstrom"):
    """A two-level OME-Zarr image (the finest level and a 2× binned one), as the CryoET Data Portal serves them."""
    from ome_zarr.writer import write_multiscale

    binned = volume.reshape(volume.shape[0] // 2, 2, volume.shape[1] // 2, 2, volume.shape[2] // 2, 2).mean(axis=(1, 3, 5))
    group = zarr.open_group(str(path), mode="w")
    transforms = [[{"type": "scale", "scale": [voxel_size * f] * 3}] for f in (1, 2)]
    write_multiscale([volume, binned.astype(np.float32)], group, axes=[{"name": a, "type": "space", "unit": unit} for a in "zyx"],
                     coordinate_transformations=transforms)
    return path


@pytest.fixture(scope="module")
def sample_volume():
    if not SAMPLE.is_file():
        pytest.skip("sample data not in this installation")
    return mrcfile.read(SAMPLE).astype(np.float32)


def test_levels_are_chosen_by_voxel_size(tmp_path, sample_volume):
    path = write_pyramid(tmp_path / "t.zarr", sample_volume, 10.0)
    levels = zarr_levels(path)
    assert [lv["voxel_size"] for lv in levels] == [10.0, 20.0]
    assert levels[1]["shape"] == (32, 64, 64)
    vol = read_volume(path, target_voxel_size=19.0)
    assert vol.metadata["level"] == 1 and vol.voxel_size == 20.0 and vol.shape == (32, 64, 64)
    assert isinstance(vol.data, zarr.Array)  # lazy, not loaded
    fine = read_volume(path, target_voxel_size=9.0)
    np.testing.assert_array_equal(fine.data[5:9, 10:20, 30:40], sample_volume[5:9, 10:20, 30:40])
    assert read_volume(path, level=1).voxel_size == 20.0
    with pytest.raises(BioidInputError, match="no level 2"):
        read_volume(path, level=2)
    # nanometre axes are converted to Å
    nm = write_pyramid(tmp_path / "nm.zarr", sample_volume, 1.0, unit="nanometer")
    assert [lv["voxel_size"] for lv in zarr_levels(nm)] == [10.0, 20.0]
    assert choose_level(zarr_levels(nm), None) == 0


def test_bad_zarr_stores_are_refused_with_the_reason(tmp_path, sample_volume):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.create_dataset("tomo", data=sample_volume[:4])
    with pytest.raises(BioidInputError, match="without OME-NGFF 'multiscales'.*tomo"):
        read_volume(tmp_path / "plain.zarr")
    assert read_volume(tmp_path / "plain.zarr" / "tomo").shape == (4, 128, 128)  # a plain array opens as it is
    tczyx = zarr.open_array(str(tmp_path / "tczyx.zarr"), mode="w", shape=(1, 1) + sample_volume[:4].shape, dtype="f4")
    tczyx[0, 0] = sample_volume[:4]
    lead = read_volume(tmp_path / "tczyx.zarr")  # singleton t, c axes are dropped, lazily
    assert lead.shape == (4, 128, 128)
    np.testing.assert_array_equal(lead.data[1:3, 5, 6:9], sample_volume[1:3, 5, 6:9])
    flat = zarr.open_array(str(tmp_path / "flat.zarr"), mode="w", shape=(128, 128), dtype="f4")
    flat[:] = 1
    with pytest.raises(BioidInputError, match="expected a 3D volume"):
        read_volume(tmp_path / "flat.zarr")
    bad = sample_volume[:8].copy()
    bad[3, 4, 5] = np.nan
    zarr.open_array(str(tmp_path / "nan.zarr"), mode="w", shape=bad.shape, dtype="f4")[:] = bad
    with pytest.raises(BioidInputError, match="NaN"):
        read_volume(tmp_path / "nan.zarr")


def test_ome_zarr_output_is_atomic(tmp_path):
    target = tmp_path / "p.zarr"
    with pytest.raises(RuntimeError):
        with create_ome_zarr(target, (4, 8, 8), 10.0) as arr:
            arr[:2] = 1
            raise RuntimeError("interrupted")
    assert not target.exists() and not list(tmp_path.iterdir())  # nothing half-written is left
    with create_ome_zarr(target, (4, 8, 8), 10.0) as arr:
        arr[:] = 0.5
    with pytest.raises(FileExistsError):
        with create_ome_zarr(target, (4, 8, 8), 10.0):
            pass
    with create_ome_zarr(target, (4, 8, 8), 10.0, overwrite=True) as arr:
        arr[:] = 0.25
    assert float(read_volume(target).data[0, 0, 0]) == 0.25 and float(read_volume(tmp_path / "p.zarr.bak").data[0, 0, 0]) == 0.5


def test_cli_picks_an_ome_zarr_like_the_mrc_and_writes_the_probability_as_ome_zarr(tmp_path, sample_volume, capsys):
    from napari_bioid.cli import main

    zpath = write_pyramid(tmp_path / "sample.zarr", sample_volume, 10.0)
    assert main(["tomo", "pick", str(SAMPLE), "--out", str(tmp_path / "mrc.csv"), "--probability-out", str(tmp_path / "p.mrc")]) == 0
    capsys.readouterr()
    assert main(["tomo", "pick", str(zpath), "--out", str(tmp_path / "zarr.csv"), "--probability-out", str(tmp_path / "p.zarr"),
                 "--truth", str(SAMPLE.with_name("sample_truth.csv"))]) == 0
    assert json.loads(capsys.readouterr().out)["evaluation"]["f1"] >= 0.8
    a, b = pd.read_csv(tmp_path / "mrc.csv"), pd.read_csv(tmp_path / "zarr.csv")
    assert len(a) > 20
    pd.testing.assert_frame_equal(a, b)  # level 0 (10 Å, the model's) was picked, voxels and Å identical
    prob = read_volume(tmp_path / "p.zarr")
    assert prob.voxel_size == 10.0
    np.testing.assert_allclose(prob.data[:], mrcfile.read(tmp_path / "p.mrc"), atol=1e-6)


def test_reader_opens_an_ome_zarr_tomogram_lazily(tmp_path, sample_volume):
    from napari_bioid._reader import get_reader

    zpath = write_pyramid(tmp_path / "sample.zarr", sample_volume, 10.0)
    reader = get_reader(str(zpath) + "/")
    assert reader is not None
    (data, kwargs, kind), = reader(str(zpath))
    assert kind == "image" and kwargs["scale"] == (10.0,) * 3 and isinstance(data, zarr.Array)
    assert [lv["voxel_size"] for lv in kwargs["metadata"]["levels"]] == [10.0, 20.0]
