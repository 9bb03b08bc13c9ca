import numpy as np
import pandas as pd
import pytest

from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.io import read_coordinates, read_volume, validate_coordinates, write_coordinates, write_mrc
from napari_bioid.engine.io.coords import make_table


@pytest.fixture
def table():
    rng = np.random.default_rng(1)
    t = make_table(rng.uniform(0, 50, (7, 3)), class_id=rng.integers(1, 4, 7), score=rng.uniform(0, 1, 7))
    return t


@pytest.mark.parametrize("suffix", [".csv", ".star", ".coords"])
def test_coordinates_round_trip(tmp_path, table, suffix):
    path = write_coordinates(table, tmp_path / f"p{suffix}", voxel_size=13.48, volume_shape=(60, 64, 70))
    back = read_coordinates(path)
    np.testing.assert_allclose(back[["x", "y", "z"]], table[["x", "y", "z"]], atol=1e-3)
    assert back["class_id"].tolist() == table["class_id"].tolist()
    np.testing.assert_allclose(back["score"], table["score"], atol=1e-4)


def test_csv_has_angstrom_columns_and_angstrom_only_files_convert(tmp_path, table):
    path = write_coordinates(table, tmp_path / "p.csv", voxel_size=10.0)
    raw = pd.read_csv(path)
    assert list(raw.columns[:8]) == ["x", "y", "z", "class_id", "score", "x_A", "y_A", "z_A"]
    np.testing.assert_allclose(raw["x_A"], table["x"] * 10.0, rtol=1e-5)
    raw[["x_A", "y_A", "z_A", "class_id"]].to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(BioidInputError, match="voxel size"):
        read_coordinates(tmp_path / "a.csv")
    back = read_coordinates(tmp_path / "a.csv", voxel_size=10.0)
    np.testing.assert_allclose(back["z"], table["z"], rtol=1e-5)


def test_relion5_centred_angstrom_star(tmp_path, table):
    path = write_coordinates(table, tmp_path / "p.star", voxel_size=7.0, volume_shape=(60, 64, 70))
    import starfile

    df = starfile.read(path)
    df = df.drop(columns=["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"])
    starfile.write({"particles": df}, tmp_path / "c.star")
    back = read_coordinates(tmp_path / "c.star", voxel_size=7.0, volume_shape=(60, 64, 70))
    np.testing.assert_allclose(back[["x", "y", "z"]], table[["x", "y", "z"]], atol=1e-4)


def test_deepetpicker_text_forms(tmp_path):
    (tmp_path / "a.coords").write_text("2 10 20 30\n1 5 6 7\n")
    t = read_coordinates(tmp_path / "a.coords")
    assert t["class_id"].tolist() == [2, 1] and t["x"].tolist() == [10, 5] and t["z"].tolist() == [30, 7]
    assert t["score"].isna().all()
    (tmp_path / "b.txt").write_text("10 20 30\n")
    assert read_coordinates(tmp_path / "b.txt")["class_id"].tolist() == [1]


@pytest.mark.parametrize(
    "content,match",
    [("", "empty"), ("x,y,z\n", "empty"), ("a,b,c\n1,2,3\n", "cannot recognise"), ("x,y,z\n1,two,3\n", "non-numeric")],
)
def test_bad_coordinate_files(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(BioidInputError, match=match):
        read_coordinates(p)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(BioidInputError, match="no such file"):
        read_coordinates(tmp_path / "nope.csv")
    (tmp_path / "x.xyz").write_text("1 2 3")
    with pytest.raises(BioidInputError, match="unknown coordinate format"):
        read_coordinates(tmp_path / "x.xyz")
    with pytest.raises(BioidInputError, match="no such file"):
        read_volume(tmp_path / "nope.mrc")


def test_coordinates_outside_volume(table):
    validate_coordinates(table, (60, 60, 60))
    with pytest.raises(BioidInputError, match="outside the volume"):
        validate_coordinates(table, (20, 20, 20))


def test_mrc_round_trip_voxel_size_and_warnings(tmp_path):
    data = np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32)
    write_mrc(tmp_path / "t.mrc", data, voxel_size=13.5)
    v = read_volume(tmp_path / "t.mrc")
    assert v.voxel_size == pytest.approx(13.5) and v.shape == (8, 9, 10)
    np.testing.assert_array_equal(v.data, data)
    vm = read_volume(tmp_path / "t.mrc", mmap=True)
    np.testing.assert_array_equal(np.asarray(vm.data), data)
    write_mrc(tmp_path / "n.mrc", data)
    with pytest.warns(UserWarning, match="no voxel size"):
        assert read_volume(tmp_path / "n.mrc").voxel_size is None


def test_bad_volumes(tmp_path):
    write_mrc(tmp_path / "flat.mrc", np.zeros((1, 5, 5), np.float32)[0], voxel_size=1)
    with pytest.raises(BioidInputError, match="2D image"):
        read_volume(tmp_path / "flat.mrc")
    nan = np.zeros((4, 4, 4), np.float32)
    nan[2, 1, 1] = np.nan
    write_mrc(tmp_path / "nan.mrc", nan, voxel_size=1)
    with pytest.raises(BioidInputError, match="NaN"):
        read_volume(tmp_path / "nan.mrc")
    (tmp_path / "junk.mrc").write_bytes(b"not an mrc file at all" * 10)
    with pytest.raises(BioidInputError, match="not a readable MRC"):
        read_volume(tmp_path / "junk.mrc")


def test_tiff_stack(tmp_path):
    import tifffile

    data = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    with pytest.warns(UserWarning):
        v = read_volume(tmp_path / "s.tif")
    np.testing.assert_array_equal(v.data, data)


def test_refuses_overwrite_and_keeps_backup(tmp_path, table):
    p = write_coordinates(table, tmp_path / "p.csv")
    before = p.read_text()
    with pytest.raises(FileExistsError):
        write_coordinates(table.iloc[:2], p)
    assert p.read_text() == before
    write_coordinates(table.iloc[:2], p, overwrite=True)
    assert (tmp_path / "p.csv.bak").read_text() == before
    assert len(read_coordinates(p)) == 2
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
