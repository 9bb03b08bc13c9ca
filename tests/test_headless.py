"""The engine must run without Qt or napari."""

import re
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "src" / "napari_bioid" / "engine"
GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")


def test_engine_sources_import_no_gui():
    pattern = re.compile(r"^\s*(import|from)\s+(%s)\b" % "|".join(GUI), re.M)
    offenders = [str(p) for p in ENGINE.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_importing_engine_and_cli_loads_no_gui_module():
    code = (
        "import sys, napari_bioid.engine, napari_bioid.engine.io, napari_bioid.engine.tomo, napari_bioid.engine.karyo.orient,"
        " napari_bioid.engine.seq.run, napari_bioid.engine.seq.iss, napari_bioid.engine.seq.simulate, napari_bioid.cli;"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {GUI!r}]; print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
