import os
import warnings
from pathlib import Path

import numpy as np
import pytest

#: real data beside the checkout (never copied into the repo)
SHARED = Path(os.environ.get("BIOID_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
TOY = SHARED / "data" / "cryoet" / "deepfinder_toy"


@pytest.fixture
def toy_dir():
    if not TOY.is_dir():
        pytest.skip(f"real data not found at {TOY}")
    return TOY


def ball(shape, centres, radius, value=1.0):
    """Float32 volume with solid balls of ``radius`` at [z, y, x] ``centres``."""
    g = np.indices(shape)
    out = np.zeros(shape, np.float32)
    for c in centres:
        d2 = sum((g[i] - c[i]) ** 2 for i in range(3))
        out[d2 <= radius * radius] = value
    return out


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        yield
