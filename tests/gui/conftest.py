import os

import pytest

pytest.importorskip("napari", reason="GUI tests need napari (pip install -e '.[gui]')")
os.environ.setdefault("NAPARI_ASYNC", "0")


@pytest.fixture(autouse=True)
def _autosave_home(tmp_path, monkeypatch):
    """Keep autosaves of the tests out of the real home folder."""
    from napari_bioid.widgets import picking

    monkeypatch.setattr(picking, "AUTOSAVE_DIR", tmp_path / "autosave")
