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



def synthetic_balls(seed, n=10, shape=(48, 48, 48), radius=3):
    """Bright balls at random non-overlapping positions in Gaussian noise (SNR ~ 1 per voxel)."""
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < n:
        c = rng.integers(radius + 1, np.array(shape) - radius - 1)
        if all(np.linalg.norm(c - o) > 3 * radius for o in centres):
            centres.append(c)
    vol = ball(shape, centres, radius) + rng.normal(0, 0.7, shape).astype(np.float32)
    from napari_bioid.engine.io.coords import make_table

    return vol, make_table(np.array(centres))


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        yield
