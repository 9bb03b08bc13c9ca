import os
import warnings
from pathlib import Path

import numpy as np
import pytest

#: real data beside the checkout (never copied into the repo)
SHARED = Path(os.environ.get("BIOID_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
TOY = SHARED / "data" / "cryoet" / "deepfinder_toy"
CHRM = SHARED / "data" / "sequencing" / "reference" / "chrM.fasta"


@pytest.fixture
def toy_dir():
    if not TOY.is_dir():
        pytest.skip(f"real data not found at {TOY}")
    return TOY


@pytest.fixture(scope="session")
def chrm():
    """The real human mitochondrial reference {name: sequence} (simulated reads are drawn from it)."""
    if not CHRM.is_file():
        pytest.skip(f"reference not found at {CHRM}")
    from napari_bioid.engine.seq.io import read_fasta

    return read_fasta(CHRM)


def seq_tile(chrm, seed, density, size, cycles):
    """A simulated flow-cell tile (``size``² px, ``cycles`` cycles, ``density`` K/mm²) with reads from ``chrm``."""
    from napari_bioid.engine.seq.simulate import SeqSimParams, simulate_tile

    return simulate_tile(SeqSimParams(height=size, width=size, n_cycles=cycles, density_k_per_mm2=density, seed=seed), "".join(chrm.values()))


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
