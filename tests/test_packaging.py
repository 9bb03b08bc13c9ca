"""Issue 16.10: a plain ``pip install .`` (a wheel) carries the sample data, the models and the manifest."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_sample_data_models_and_manifest(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the tracked tree")
    # build from a copy of the tracked files (no egg-info or build folders of the checkout)
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / f).is_file():
            shutil.copy2(ROOT / f, src / f)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    [wheel] = list((tmp_path / "dist").glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("napari_bioid/sample_data/sample_tomogram.mrc", "napari_bioid/sample_data/sample_truth.csv",
                   "napari_bioid/napari.yaml", "napari_bioid/models/tomo_picker_default.pt"):
        assert needed in names, f"{needed} missing from {wheel.name}"
