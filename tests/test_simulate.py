"""Physics of the tomogram simulator, where it can fail."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_bioid.engine.tomo.simulate import (
    SimulationParams, ctf_2d, electron_wavelength, load_structures, project, reconstruct, simulate_tomogram,
)

from conftest import SHARED, ball

STRUCTURES = SHARED / "data" / "cryoet" / "structures"


@pytest.fixture(scope="module")
def structures():
    if not STRUCTURES.is_dir():
        pytest.skip(f"structures not found at {STRUCTURES}")
    return load_structures(STRUCTURES, voxel_size=10.0)


def test_noise_free_projection_integrates_to_the_mass():
    vol = ball((24, 20, 40), [(12, 10, 17)], 6) * 2.5
    tilts = project(vol, np.arange(-60, 61, 15))
    mass = vol.sum()
    np.testing.assert_allclose(tilts.sum(axis=(1, 2)), mass, rtol=0.01)
    # at 0° the projection is the sum along the beam (z)
    zero = tilts[4]
    d = zero.shape[1]
    off = (d - 40) // 2
    np.testing.assert_allclose(zero[:, off : off + 40], vol.sum(axis=0), atol=0.05 * vol.sum(axis=0).max())


def test_missing_wedge_is_visible_in_fourier_space():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(64, 8, 64)).astype(np.float32)
    rec = reconstruct(project(vol, np.arange(-60, 61, 3)), np.arange(-60, 61, 3), vol.shape)
    power = (np.abs(np.fft.fftn(rec)) ** 2).sum(axis=1)  # (kz, kx)
    kz = np.fft.fftfreq(64)[:, None]
    kx = np.fft.fftfreq(64)[None, :]
    k = np.hypot(kz, kx)
    ang_from_z = np.degrees(np.arctan2(np.abs(kx), np.abs(kz)))  # 0° = along kz
    band = (k > 0.08) & (k < 0.4)
    wedge = power[band & (ang_from_z < 25)].mean()
    sampled = power[band & (ang_from_z > 40)].mean()
    assert wedge < 0.05 * sampled


def test_ctf_sign_and_amplitude_contrast():
    ctf = ctf_2d((64, 64), 10.0, -3.0)
    assert ctf[0, 0] == pytest.approx(-0.07)  # underfocus: low frequencies negative, particles dark
    assert electron_wavelength(300) == pytest.approx(0.01969, abs=1e-5)
    # the first zero lies near k = sqrt(1 / (λ Δf)) (phase contrast alone)
    k = np.fft.fftfreq(64, d=10.0)[:32]
    first_zero = k[np.argmax(np.diff(np.sign(ctf[0, :32])) != 0)]
    assert first_zero == pytest.approx(np.sqrt(1 / (0.01969 * 3e4)), rel=0.15)


def test_truth_centres_are_density_maxima_of_a_noise_free_reconstruction(structures):
    # compact particles (a two-lobed ribosome's centre of mass lies between its subunits)
    compact = [s for s in structures if s.name in ("1bxn", "4d8q", "1qvr")]
    assert len(compact) == 3
    sim = simulate_tomogram(compact, SimulationParams(shape_zyx=(56, 96, 96), n_particles=8, snr=None, ctf=False, seed=3))
    assert len(sim.truth) >= 6
    smooth = ndi.gaussian_filter(sim.tomogram, 3)
    for row in sim.truth.itertuples():
        c = np.array([row.z, row.y, row.x], int)
        lo = np.maximum(c - 6, 0)
        hi = np.minimum(c + 7, smooth.shape)
        win = smooth[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        peak = np.array(np.unravel_index(win.argmax(), win.shape)) + lo
        assert np.linalg.norm(peak - c) <= 2.5, (row, peak)


def test_simulation_is_reproducible_and_classes_mapped(structures):
    p = dict(shape_zyx=(32, 64, 64), n_particles=8, seed=11)
    a = simulate_tomogram(structures[:3], SimulationParams(**p))
    b = simulate_tomogram(structures[:3], SimulationParams(**p))
    np.testing.assert_array_equal(a.tomogram, b.tomogram)
    assert a.truth.equals(b.truth)
    for row in a.truth.itertuples():
        z, y, x = int(row.z), int(row.y), int(row.x)
        assert row.class_id in a.class_map[max(z - 3, 0) : z + 4, max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4]
        assert row.class_name == a.class_names[row.class_id - 1]


def test_cli_simulate_writes_tomogram_truth_and_class_map(structures, tmp_path, capsys):
    import json

    from napari_bioid.cli import main
    from napari_bioid.engine.io import read_coordinates, read_volume

    args = ["tomo", "simulate", "--out-dir", str(tmp_path), "--name", "t", "--shape", "32,64,64", "--seed", "5",
            "--structures", str(STRUCTURES), "--vesicles", "1", "--fiducials", "2"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    # SHREC 2021 crowding: ~30.8 particles per million voxels → 4 in 32·64·64
    assert out["particles"] == 4
    vol = read_volume(tmp_path / "t.mrc")
    assert vol.shape == (32, 64, 64) and vol.voxel_size == pytest.approx(10.0)
    truth = read_coordinates(tmp_path / "t_truth.csv")
    assert len(truth) == 4 and {"class_name", "phi", "theta", "psi"} <= set(truth.columns)
    classes = read_volume(tmp_path / "t_classes.mrc").data
    assert set(np.unique(classes)) - {0} <= set(truth["class_id"])
    params = json.loads((tmp_path / "t_params.json").read_text())
    assert params["snr"] == 0.1 and params["tilt_step_deg"] == 3.0 and params["defocus_um"] == -3.0
    assert main(args) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
