"""Simulated cryo-electron tomograms from real macromolecular structures.

Image formation follows the usual weak-phase-object model of cryo-ET
simulators (e.g. TEM-simulator, Rullgård et al., J. Microsc. 2011; the SHREC
2019/2021 cryo-ET challenge generators, Gubins et al., 2020/2021), simplified
to what matters for particle picking:

1. **Sample**: density maps (real maps at 10 Å such as 4V94, 4CR2, 5MRC, and
   binary shape masks) resampled to the voxel size, rotated at random 3D
   orientations and placed at random positions without overlap (voxel-wise
   occupancy test); optional vesicle membranes (two leaflets, 4 nm bilayer)
   and gold fiducials (10 nm, 8× protein density) as distractors.
2. **Tilt series**: single-axis tilt about y (default −60°…+60° in 3°
   steps): each xz-slice is projected with the Radon transform
   (:func:`skimage.transform.radon`).
3. **CTF** of every tilt image: CTF(k) = −[√(1−A²)·sin χ + A·cos χ],
   χ = π λ Δf k² − ½ π Cs λ³ k⁴, with Δf > 0 for underfocus, amplitude
   contrast A = 0.07, 300 kV (λ = 0.01969 Å), Cs = 2.7 mm, and a B-factor
   envelope exp(−B k²/4); particles come out dark, as in real tomograms.
4. **Noise**: white Gaussian noise per tilt image at the requested SNR
   (variance of the CTF-filtered projection / noise variance).
5. **Reconstruction** by weighted (ramp-filtered) back-projection,
   :func:`skimage.transform.iradon`, slice by slice; the unsampled tilt
   range leaves the missing wedge of a real tomogram.

Units: voxel size in Å, angles in degrees, defocus in µm (negative =
underfocus, the sign convention of the issue and of SHREC), Cs in mm,
B-factor in Å², voltage in kV.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from ..errors import BioidInputError
from ..io.volumes import read_volume
from ..progress import ProgressCallback, check_cancel, report

#: source voxel size of the bundled structure files (the file names say 10 Å;
#: SHREC 2019 masks are at 1 nm per voxel)
STRUCTURE_VOXEL_SIZE = 10.0


@dataclass
class Structure:
    """A particle template.

    Attributes
    ----------
    name : str
    density : float32 (n, n, n)
        Non-negative density at the target voxel size, centre of mass at the
        central voxel, mean 1 inside its own mask.
    mask_threshold : float
        Density above which a voxel belongs to the particle.
    """

    name: str
    density: np.ndarray
    mask_threshold: float

    @property
    def mask(self) -> np.ndarray:
        return self.density > self.mask_threshold

    @property
    def diameter(self) -> float:
        """Equivalent-sphere diameter in voxels."""
        return 2.0 * (3.0 * self.mask.sum() / (4.0 * np.pi)) ** (1.0 / 3.0)


def _source_voxel_size(path: Path, header: Optional[float]) -> float:
    m = re.search(r"_(\d+(?:\.\d+)?)A$", path.stem)
    if m:
        return float(m.group(1))
    if header and header > 1.0:  # many maps carry a placeholder of 1 Å
        return float(header)
    return STRUCTURE_VOXEL_SIZE


def make_structure(name: str, density: np.ndarray, source_voxel_size: float, voxel_size: float, binary: bool = False) -> Structure:
    """Resample a density map to ``voxel_size`` and centre it on its centre of mass.

    ``binary`` masks become uniform densities. Densities are scaled to mean 1
    over the particle (voxels above 20 % of the maximum, or the mask).
    """
    d = np.clip(np.asarray(density, dtype=np.float32), 0, None)
    zoom = source_voxel_size / voxel_size
    if abs(zoom - 1) > 1e-3:
        d = np.clip(ndi.zoom(d, zoom, order=1), 0, None)
    thr = 0.5 if binary else 0.2 * float(d.max())
    inside = d > thr
    if not inside.any():
        raise BioidInputError(f"structure {name}: empty after resampling to {voxel_size} Å")
    com = np.array(ndi.center_of_mass(d * inside))
    idx = np.argwhere(inside)
    half = int(np.ceil(np.max(np.linalg.norm(idx - com, axis=1)))) + 2
    n = 2 * half + 1
    # cut an n³ cube centred on the centre of mass (sub-voxel shift by interpolation)
    grid = np.indices((n, n, n), dtype=np.float32).reshape(3, -1) + (com - half)[:, None]
    d = ndi.map_coordinates(d, grid, order=1, mode="constant").reshape(n, n, n)
    scale = float(d[d > thr].mean()) if (d > thr).any() else 1.0
    return Structure(name, (d / scale).astype(np.float32), thr / scale)


def load_structures(folder, voxel_size: float = 10.0, include_shapes: bool = True, names: Optional[Sequence[str]] = None) -> List[Structure]:
    """Load particle templates from a folder of MRC maps (and ``shrec19_masks/``).

    Parameters
    ----------
    folder : path
        ``*.mrc`` density maps (source voxel size from a ``_10A`` name suffix,
        else the header, else 10 Å) and optionally a ``shrec19_masks/``
        subfolder of binary shape masks at 10 Å.
    voxel_size : float
        Target Å per voxel.
    include_shapes : bool
        Also load the SHREC 2019 shape masks.
    names : sequence of str, optional
        Keep only these structures (names as the file stems without ``_10A``).

    Raises
    ------
    BioidInputError
        No structures found.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.mrc"))
    if include_shapes:
        files += sorted((folder / "shrec19_masks").glob("*.mrc"))
    out = []
    for p in files:
        name = re.sub(r"_\d+(?:\.\d+)?A$", "", p.stem)
        if names is not None and name not in names:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = read_volume(p)
        data = np.asarray(v.data, dtype=np.float32)
        binary = np.unique(data).size <= 2
        out.append(make_structure(name, data, _source_voxel_size(p, v.voxel_size), voxel_size, binary))
    if not out:
        raise BioidInputError(f"{folder}: no structure maps found")
    return out


#: SHREC 2021 model volume (x, y, z voxels at 10 Å) that its particle layout file fills
SHREC21_SHAPE_XYZ = (512, 512, 180)


def shrec21_crowding(layout_file) -> float:
    """Particles per million voxels in a SHREC 2021 particle layout (vesicles and fiducials excluded).

    The bundled layout (``shrec21_model_particle_locations.txt``: name, x, y,
    z, angles) holds 1451 particles in a 512 × 512 × 180 volume: ≈ 30 per
    million voxels, i.e. ~49 particles in a 64 × 160 × 160 tomogram.
    """
    n = 0
    with open(layout_file) as fh:
        for line in fh:
            parts = line.split()
            if parts and parts[0].lower() not in ("vesicle", "fiducial"):
                n += 1
    return n / (np.prod(SHREC21_SHAPE_XYZ) / 1e6)


@dataclass
class SimulationParams:
    """Parameters of :func:`simulate_tomogram` (units in the names)."""

    shape_zyx: Tuple[int, int, int] = (64, 160, 160)
    voxel_size_A: float = 10.0
    n_particles: int = 40
    tilt_min_deg: float = -60.0
    tilt_max_deg: float = 60.0
    tilt_step_deg: float = 3.0
    snr: Optional[float] = 0.1
    defocus_um: float = -3.0
    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    bfactor_A2: float = 100.0
    ctf: bool = True
    n_vesicles: int = 0
    n_fiducials: int = 0
    seed: int = 0

    @property
    def tilt_angles(self) -> np.ndarray:
        return np.arange(self.tilt_min_deg, self.tilt_max_deg + 1e-6, self.tilt_step_deg)


@dataclass
class Simulation:
    """A simulated tomogram and its truth.

    Attributes
    ----------
    tomogram : float32 (Z, Y, X)
        The reconstruction (z-scored).
    truth : DataFrame
        ``x, y, z`` (voxels), ``class_id``, ``class_name``, ``phi, theta, psi``
        (intrinsic ZYZ Euler angles of the particle rotation, degrees).
    class_map : uint8 (Z, Y, X)
        Class id of every voxel inside a particle, 0 elsewhere.
    density : float32 (Z, Y, X)
        The noise-free sample density that was imaged.
    params : SimulationParams
    class_names : list of str
        ``class_names[i]`` is class id i + 1.
    """

    tomogram: np.ndarray
    truth: pd.DataFrame
    class_map: np.ndarray
    density: np.ndarray
    params: SimulationParams
    class_names: List[str] = field(default_factory=list)


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2643 / np.sqrt(v * (1 + 0.97848e-6 * v))


def ctf_2d(shape: Tuple[int, int], voxel_size: float, defocus_um: float, voltage_kv: float = 300.0, cs_mm: float = 2.7,
           amplitude_contrast: float = 0.07, bfactor: float = 0.0) -> np.ndarray:
    """Contrast transfer function on the FFT grid of an image of ``shape``.

    ``defocus_um`` < 0 is underfocus. Returns float64 of ``shape`` in
    :func:`numpy.fft.fft2` order, including the B-factor envelope.
    """
    lam = electron_wavelength(voltage_kv)
    dz = -defocus_um * 1e4  # Å, positive = underfocus
    cs = cs_mm * 1e7
    ky = np.fft.fftfreq(shape[0], d=voxel_size)
    kx = np.fft.fftfreq(shape[1], d=voxel_size)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    chi = np.pi * lam * dz * k2 - 0.5 * np.pi * cs * lam**3 * k2**2
    a = amplitude_contrast
    return -(np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * np.exp(-bfactor * k2 / 4.0)


def project(volume: np.ndarray, angles_deg: Sequence[float]) -> np.ndarray:
    """Single-axis tilt series of a [z, y, x] volume, tilt axis y.

    Returns float32 (n_angles, Y, D): line integrals along the beam, which
    is z at 0°; D = ceil(√2·max(Z, X)) detector pixels, centred on the volume.
    """
    from skimage.transform import radon

    z, y, x = volume.shape
    size = max(z, x)
    pz, px = (size - z) // 2, (size - x) // 2
    out = None
    for j in range(y):
        sl = np.zeros((size, size), np.float64)
        sl[pz : pz + z, px : px + x] = volume[:, j, :]
        sino = radon(sl, theta=np.asarray(angles_deg, float), circle=False)  # (D, n_angles)
        if out is None:
            out = np.zeros((len(angles_deg), y, sino.shape[0]), np.float32)
        out[:, j, :] = sino.T
    return out


def reconstruct(tilt_series: np.ndarray, angles_deg: Sequence[float], shape_zyx: Tuple[int, int, int], filter_name: str = "ramp") -> np.ndarray:
    """Weighted back-projection of a tilt series from :func:`project` into ``shape_zyx``."""
    from skimage.transform import iradon

    z, y, x = shape_zyx
    size = max(z, x)
    pz, px = (size - z) // 2, (size - x) // 2
    out = np.zeros(shape_zyx, np.float32)
    for j in range(y):
        rec = iradon(tilt_series[:, j, :].T.astype(np.float64), theta=np.asarray(angles_deg, float), filter_name=filter_name, circle=False, output_size=size)
        out[:, j, :] = rec[pz : pz + z, px : px + x]
    return out


def _paste(target: np.ndarray, block: np.ndarray, corner: np.ndarray, op=np.add) -> None:
    lo = np.maximum(corner, 0)
    hi = np.minimum(corner + block.shape, target.shape)
    if np.any(hi <= lo):
        return
    t = tuple(slice(a, b) for a, b in zip(lo, hi))
    s = tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, corner))
    target[t] = op(target[t], block[s])


def _rotate(density: np.ndarray, rot: Rotation) -> np.ndarray:
    """Rotate a cubic [z, y, x] template about its centre by ``rot`` (defined on x, y, z)."""
    m_xyz = rot.as_matrix()
    rev = np.eye(3)[::-1]
    m_zyx = rev @ m_xyz @ rev
    c = (np.asarray(density.shape) - 1) / 2.0
    inv = m_zyx.T  # output → input coordinates
    return ndi.affine_transform(density, inv, c - inv @ c, order=1, mode="constant")


def _vesicle(radius: float, thickness: float = 4.0) -> np.ndarray:
    """A membrane shell: two Gaussian leaflets 'thickness' voxels apart (at 10 Å ~ a 4 nm bilayer)."""
    n = int(np.ceil(radius + 2 * thickness)) * 2 + 1
    g = np.indices((n, n, n), dtype=np.float32) - (n - 1) / 2
    r = np.sqrt((g**2).sum(0))
    sd = thickness / 4
    return (np.exp(-((r - radius + thickness / 2) ** 2) / (2 * sd * sd)) + np.exp(-((r - radius - thickness / 2) ** 2) / (2 * sd * sd))).astype(np.float32)


def simulate_tomogram(
    structures: Sequence[Structure],
    params: Optional[SimulationParams] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[Any] = None,
    **overrides,
) -> Simulation:
    """Simulate a tomogram with particles of ``structures`` and its truth.

    Parameters
    ----------
    structures : sequence of Structure
        Particle templates at ``params.voxel_size_A`` (from :func:`load_structures`);
        class id i + 1 is ``structures[i]``.
    params : SimulationParams, optional
        Keyword ``overrides`` replace its fields (``snr=None`` is noise-free,
        ``ctf=False`` skips the CTF).
    progress, cancel
        See :mod:`napari_bioid.engine.progress`.

    Returns
    -------
    Simulation
        Every particle lies wholly inside the tomogram; particles that did
        not fit without overlap after 200 tries each are left out (the truth lists what was placed). Reproducible from
        ``params.seed``.
    """
    params = params or SimulationParams()
    for k, v in overrides.items():
        if not hasattr(params, k):
            raise TypeError(f"unknown simulation parameter {k!r}")
        setattr(params, k, v)
    if not structures:
        raise BioidInputError("no structures to place")
    shape = tuple(int(s) for s in params.shape_zyx)
    if len(shape) != 3 or min(shape) < 8:
        raise BioidInputError(f"shape must be three sizes ≥ 8, got {params.shape_zyx}")
    rng = np.random.default_rng(params.seed)
    density = np.zeros(shape, np.float32)
    occupied = np.zeros(shape, bool)
    class_map = np.zeros(shape, np.uint8)
    vs = params.voxel_size_A
    steps = 4
    report(progress, 0, steps, "placing particles")

    # distractors first: vesicles (whole interior reserved) and gold fiducials near the surfaces
    for _ in range(params.n_vesicles):
        radius = rng.uniform(150, 300) / vs
        shell = _vesicle(radius, 40.0 / vs)
        corner = np.array([rng.integers(0, s) for s in shape]) - shell.shape[0] // 2
        _paste(density, 0.6 * shell, corner)
        g = np.indices(shell.shape) - shell.shape[0] // 2
        _paste(occupied, (g**2).sum(0) <= (radius + 40.0 / vs) ** 2, corner, np.logical_or)
    for _ in range(params.n_fiducials):
        r = 50.0 / vs
        n = int(np.ceil(r)) * 2 + 3
        g = np.indices((n, n, n)) - n // 2
        bead = ((g**2).sum(0) <= r * r).astype(np.float32) * 8.0
        z = rng.choice([rng.uniform(0, 0.15), rng.uniform(0.85, 1.0)]) * shape[0]
        centre = np.array([z, rng.uniform(0, shape[1]), rng.uniform(0, shape[2])]).astype(int)
        _paste(density, bead, centre - n // 2)
        _paste(occupied, bead > 0, centre - n // 2, np.logical_or)

    rows = []
    for i in range(params.n_particles):
        check_cancel(cancel)
        cls = int(rng.integers(len(structures)))
        st = structures[cls]
        for _ in range(200):
            rot = Rotation.random(random_state=rng)
            dens = _rotate(st.density, rot)
            mask = dens > st.mask_threshold
            half = dens.shape[0] // 2
            # the whole particle lies inside the tomogram, as in a lamella or a thick section
            idx = np.argwhere(mask)
            first, last = idx.min(0) - half, idx.max(0) - half
            lo_c, hi_c = -first, np.asarray(shape) - 1 - last
            if np.any(hi_c < lo_c):
                continue
            centre = np.array([rng.integers(a, b + 1) for a, b in zip(lo_c, hi_c)])
            corner = centre - half
            lo = np.maximum(corner, 0)
            hi = np.minimum(corner + dens.shape, shape)
            t = tuple(slice(a, b) for a, b in zip(lo, hi))
            s = tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, corner))
            if (occupied[t] & mask[s]).any():
                continue
            density[t] += dens[s]
            occupied[t] |= mask[s]
            class_map[t][mask[s]] = cls + 1
            phi, theta, psi = rot.as_euler("ZYZ", degrees=True)
            rows.append({"x": float(centre[2]), "y": float(centre[1]), "z": float(centre[0]), "class_id": cls + 1,
                         "class_name": st.name, "phi": phi, "theta": theta, "psi": psi})
            break
    truth = pd.DataFrame(rows, columns=["x", "y", "z", "class_id", "class_name", "phi", "theta", "psi"])

    check_cancel(cancel)
    report(progress, 1, steps, "projecting tilt series")
    angles = params.tilt_angles
    tilts = project(density, angles)
    check_cancel(cancel)
    report(progress, 2, steps, "CTF and noise")
    if params.ctf:
        ctf = ctf_2d(tilts.shape[1:], vs, params.defocus_um, params.voltage_kV, params.cs_mm, params.amplitude_contrast, params.bfactor_A2)
        tilts = np.real(np.fft.ifft2(np.fft.fft2(tilts, axes=(1, 2)) * ctf, axes=(1, 2))).astype(np.float32)
    if params.snr is not None:
        if params.snr <= 0:
            raise BioidInputError(f"snr must be positive (or None for noise-free), got {params.snr}")
        for a in range(len(angles)):
            sig = float(tilts[a].var())
            tilts[a] += rng.normal(0, np.sqrt(sig / params.snr) if sig > 0 else 1.0, tilts[a].shape).astype(np.float32)
    check_cancel(cancel)
    report(progress, 3, steps, "weighted back-projection")
    rec = reconstruct(tilts, angles, shape)
    rec = (rec - rec.mean()) / (rec.std() or 1.0)
    report(progress, 4, steps, "done")
    return Simulation(rec.astype(np.float32), truth, class_map, density, params, [s.name for s in structures])


def params_dict(params: SimulationParams) -> dict:
    """JSON-ready parameters (for a sidecar file)."""
    d = asdict(params)
    d["shape_zyx"] = list(params.shape_zyx)
    return d
