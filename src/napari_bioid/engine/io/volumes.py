"""Reading and writing 3D volumes (tomograms, label maps).

Array axes are always ``[z, y, x]`` (as in napari and mrcfile); the voxel size
is in Å and isotropic unless stated otherwise.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from ..errors import BioidInputError
from .atomic import PathLike, atomic_write

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")
TIFF_SUFFIXES = (".tif", ".tiff")

#: files above this size are memory-mapped instead of read into memory
MMAP_THRESHOLD_BYTES = 256 * 1024**2


@dataclass
class Volume:
    """A 3D volume and what is known about it.

    Attributes
    ----------
    data : numpy.ndarray, shape (Z, Y, X)
        The voxels; may be a read-only memory map for large files.
    voxel_size : float or None
        Voxel edge length in Å (the x value of the header), ``None`` if unknown.
    path : Path or None
        Where it was read from.
    metadata : dict
        Header fields kept for display (origin in Å, per-axis voxel size, ...).
    """

    data: np.ndarray
    voxel_size: Optional[float] = None
    path: Optional[Path] = None
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)


def _check_volume(data: np.ndarray, path, check_finite: bool = True) -> None:
    if data.ndim != 3:
        kind = "a 2D image" if data.ndim == 2 else f"a {data.ndim}D array"
        raise BioidInputError(
            f"{path}: expected a 3D volume [z, y, x], got {kind} of shape {tuple(data.shape)}"
        )
    if min(data.shape) < 1:
        raise BioidInputError(f"{path}: empty volume of shape {tuple(data.shape)}")
    if check_finite and np.issubdtype(data.dtype, np.floating):
        # chunk over z so a memory-mapped tomogram is never loaded whole
        step = max(1, int(64 * 1024**2 // max(1, data[0].nbytes)))
        for z0 in range(0, data.shape[0], step):
            if not np.isfinite(data[z0 : z0 + step]).all():
                raise BioidInputError(f"{path}: the volume contains NaN or infinite values (first in slices {z0}..{z0 + step - 1})")


def read_volume(path: PathLike, mmap: Optional[bool] = None, check_finite: bool = True, level: Optional[int] = None,
                target_voxel_size: Optional[float] = None) -> Volume:
    """Read a tomogram or 3D stack from MRC/REC/MAP (mrcfile), TIFF (tifffile) or Zarr / OME-Zarr (zarr).

    Parameters
    ----------
    path : str or Path
        ``.mrc .rec .map .mrcs .st .ali``, ``.tif .tiff``, or a Zarr array /
        OME-Zarr image folder (read lazily, :func:`.ngff.read_zarr_volume`).
    mmap : bool, optional
        Memory-map instead of reading (default: only files over 256 MiB).
    check_finite : bool
        Refuse volumes with NaN/inf voxels.
    level : int, optional
        OME-Zarr only: the multiscale level (0 = finest).
    target_voxel_size : float, optional
        OME-Zarr only, without ``level``: read the level nearest this voxel size (Å).

    Returns
    -------
    Volume
        ``data`` with axes [z, y, x]; ``voxel_size`` in Å from the MRC header
        (``None``, with a :class:`UserWarning`, when the header has none; TIFF
        stacks carry none).

    Raises
    ------
    BioidInputError
        Missing or unreadable file, unknown suffix, not 3D, NaNs.
    """
    path = Path(path)
    from .ngff import is_zarr, read_zarr_volume

    if is_zarr(path):
        return read_zarr_volume(path, level=level, voxel_size=target_voxel_size, check_finite=check_finite)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if mmap is None:
        mmap = path.stat().st_size > MMAP_THRESHOLD_BYTES
    voxel_size = None
    metadata: dict = {}
    if suffix in MRC_SUFFIXES:
        import mrcfile

        opener = mrcfile.mmap if mmap else mrcfile.open  # a memory map stays open while its data is referenced
        try:
            mrc = opener(path, mode="r", permissive=False)
        except Exception as exc:  # mrcfile raises ValueError / OSError on corrupt headers
            try:  # many programs write slightly non-standard headers (no MAP ID, odd machine stamp)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mrc = opener(path, mode="r", permissive=True)
            except Exception:
                mrc = None
            if mrc is None or mrc.data is None:
                raise BioidInputError(f"{path}: not a readable MRC file ({exc})") from exc
            warnings.warn(f"{path}: non-standard MRC header ({exc}); read it permissively", stacklevel=2)
        try:
            data = mrc.data if mmap else mrc.data.copy()
            vs = mrc.voxel_size
            vx, vy, vz = float(vs.x), float(vs.y), float(vs.z)
            metadata["voxel_size_xyz_A"] = (vx, vy, vz)
            metadata["origin_xyz_A"] = (float(mrc.header.origin.x), float(mrc.header.origin.y), float(mrc.header.origin.z))
        finally:
            if not mmap:
                mrc.close()
        if data is None:
            raise BioidInputError(f"{path}: the MRC file holds no data")
        if vx > 0:
            voxel_size = vx
            if not (np.isclose(vx, vy) and (data.ndim < 3 or np.isclose(vx, vz))):
                warnings.warn(f"{path}: anisotropic voxel size {vx, vy, vz} Å; using x = {vx} Å", stacklevel=2)
    elif suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            data = tifffile.memmap(path, mode="r") if mmap else tifffile.imread(path)
        except Exception as exc:
            try:  # compressed TIFFs cannot be memory-mapped
                data = tifffile.imread(path)
            except Exception:
                raise BioidInputError(f"{path}: not a readable TIFF file ({exc})") from exc
        data = np.squeeze(data)
    else:
        raise BioidInputError(f"{path}: unknown volume format {suffix!r} (expected MRC/REC/MAP, TIFF or a Zarr folder)")
    _check_volume(data, path, check_finite)
    if voxel_size is None:
        warnings.warn(f"{path}: no voxel size in the header; coordinates in Å cannot be computed", stacklevel=2)
    return Volume(data=data, voxel_size=voxel_size, path=path, metadata=metadata)


def write_mrc(path: PathLike, data: np.ndarray, voxel_size: Optional[float] = None, overwrite: bool = False) -> Path:
    """Write a [z, y, x] array to an MRC file atomically.

    ``voxel_size`` in Å goes into the header. float64 is stored as float32,
    int64/bool as int16/int8 (MRC has no 64-bit modes).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    import mrcfile

    data = np.asarray(data)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    elif data.dtype == bool:
        data = data.astype(np.int8)
    elif data.dtype in (np.int64, np.int32, np.uint32, np.uint64):
        data = data.astype(np.int16)
    with atomic_write(path, overwrite=overwrite) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            if voxel_size is not None:
                mrc.voxel_size = float(voxel_size)
    return Path(path)


@contextlib.contextmanager
def create_volume(path: PathLike, shape: Tuple[int, int, int], voxel_size: Optional[float] = None, overwrite: bool = False) -> Iterator:
    """Create a float32 [z, y, x] volume on disk to fill slab by slab; it appears at ``path`` only when the body succeeds.

    ``.zarr`` names give a one-level OME-Zarr image (:func:`.ngff.create_ome_zarr`),
    anything else a memory-mapped MRC; ``voxel_size`` in Å goes into the
    metadata. Yields the writable array; an existing ``path`` (only with
    ``overwrite``) is kept as ``<path>.bak``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    BioidInputError
        A suffix that is neither ``.zarr`` nor MRC.
    """
    from .ngff import create_ome_zarr, is_zarr

    path = Path(path)
    if is_zarr(path):
        with create_ome_zarr(path, shape, voxel_size, overwrite=overwrite) as arr:
            yield arr
        return
    if path.suffix.lower() not in MRC_SUFFIXES:
        raise BioidInputError(f"{path}: write volumes as MRC (.mrc) or OME-Zarr (.zarr), not {path.suffix!r}")
    import mrcfile

    with atomic_write(path, overwrite=overwrite) as tmp:
        with mrcfile.new_mmap(tmp, shape=tuple(int(s) for s in shape), mrc_mode=2, overwrite=True) as mrc:
            yield mrc.data
            if voxel_size:
                mrc.voxel_size = float(voxel_size)
