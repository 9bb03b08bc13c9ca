"""Zarr and OME-Zarr (OME-NGFF) volumes: lazy reading at any multiscale level, atomic writing.

The CryoET Data Portal and copick store tomograms as OME-Zarr: a Zarr group
whose ``multiscales`` attribute (OME-NGFF 0.4, https://ngff.openmicroscopy.org/0.4/)
lists the resolution levels, each with a ``scale`` coordinate transformation
in the axes' units (the portal: Å). A plain Zarr array is read as it is.
Reading is lazy: the returned ``data`` is a :class:`zarr.Array`, sliced chunk
by chunk by the picking pipeline, never loaded whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..errors import BioidInputError
from .atomic import PathLike, prepare_output

#: length units of OME-NGFF axes, in Å
UNIT_TO_ANGSTROM = {"angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4, "millimeter": 1e7, "meter": 1e10, "picometer": 0.01}


def is_zarr(path: PathLike) -> bool:
    """True for a Zarr array or group folder (``.zarray``/``.zgroup``/``zarr.json`` inside, or a ``.zarr`` name)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / f).is_file() for f in (".zarray", ".zgroup", "zarr.json"))


def _open(source):
    """A zarr node from a folder path or a store mapping (e.g. copick's ``tomogram.zarr()``)."""
    import zarr

    if isinstance(source, (str, os.PathLike)):
        if not Path(source).exists():
            raise BioidInputError(f"{source}: no such Zarr store")
        source = str(source)
    try:
        return zarr.open(source, mode="r")
    except Exception as exc:  # zarr raises several kinds on a folder that is not a store
        raise BioidInputError(f"{source}: not a readable Zarr store ({exc})") from exc


def zarr_levels(path) -> List[dict]:
    """The resolution levels of an OME-Zarr image (or the one level of a plain Zarr array).

    ``path``: a folder, or a zarr store mapping.

    Returns
    -------
    list of dict
        ``{"path": str, "shape": tuple, "voxel_size": float or None}`` per
        level, finest first; ``voxel_size`` in Å (the last spatial axis' scale
        converted from the axis unit; ``None`` without a ``scale``).

    Raises
    ------
    BioidInputError
        Not a Zarr store, or a group without ``multiscales`` metadata.
    """
    import zarr

    node = _open(path)
    if isinstance(node, zarr.Array):
        vs = node.attrs.get("voxel_size")
        return [{"path": "", "shape": tuple(node.shape), "voxel_size": float(vs) if vs else None}]
    ms = node.attrs.get("multiscales")
    if not ms:
        arrays = sorted(k for k in node.array_keys())
        raise BioidInputError(f"{path}: a Zarr group without OME-NGFF 'multiscales' metadata; open one of its arrays instead "
                              f"({', '.join(arrays) or 'none found'})")
    image = ms[0]
    axes = image.get("axes") or []
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    factor = UNIT_TO_ANGSTROM.get(units[-1], 1.0) if units and units[-1] else 1.0
    levels = []
    for ds in image["datasets"]:
        arr = node[ds["path"]]
        scale = next((t["scale"] for t in ds.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
        for t in image.get("coordinateTransformations", []) or []:  # a multiscale-wide scale multiplies each level's
            if t.get("type") == "scale" and scale is not None:
                scale = [a * b for a, b in zip(scale, t["scale"])]
        levels.append({"path": ds["path"], "shape": tuple(arr.shape), "voxel_size": float(scale[-1]) * factor if scale else None})
    return levels


def choose_level(levels: List[dict], voxel_size: Optional[float]) -> int:
    """Index of the level whose voxel size is nearest ``voxel_size`` (Å) on a log scale; 0 without one."""
    if not voxel_size:
        return 0
    sizes = [lv["voxel_size"] for lv in levels]
    if any(s is None for s in sizes):
        return 0
    return int(np.argmin([abs(np.log(s / voxel_size)) for s in sizes]))


class _Leading:
    """A lazy view of an array's last three axes when the leading ones (t, c) are singletons."""

    def __init__(self, arr):
        self._arr, self._lead = arr, (0,) * (arr.ndim - 3)
        self.shape, self.dtype, self.ndim = tuple(arr.shape[-3:]), arr.dtype, 3
        self.nbytes = int(np.prod(self.shape)) * arr.dtype.itemsize

    def __getitem__(self, key):
        return self._arr[self._lead + (key if isinstance(key, tuple) else (key,))]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype=dtype)


def read_zarr_volume(path, level: Optional[int] = None, voxel_size: Optional[float] = None, check_finite: bool = True):
    """Open a 3D Zarr / OME-Zarr volume lazily at one resolution level.

    Parameters
    ----------
    path : str, Path or store mapping
        An OME-Zarr image group (``.../Tomograms/VoxelSpacing10.000/wbp.zarr``)
        or a plain Zarr array.
    level : int, optional
        Multiscale level (0 = finest).
    voxel_size : float, optional
        Without ``level``: take the level nearest this voxel size in Å (e.g.
        the picking model's).
    check_finite : bool
        Refuse volumes with NaN/inf voxels (reads the level once, slab by slab).

    Returns
    -------
    Volume
        ``data`` a read-only :class:`zarr.Array` [z, y, x]; ``voxel_size`` in
        Å; ``metadata["levels"]`` all levels, ``metadata["level"]`` the one read.

    Raises
    ------
    BioidInputError
        Not a Zarr store, no such level, not 3D, NaNs.
    """
    from .volumes import Volume, _check_volume

    levels = zarr_levels(path)
    idx = choose_level(levels, voxel_size) if level is None else int(level)
    if not 0 <= idx < len(levels):
        raise BioidInputError(f"{path}: no level {idx} (it has {len(levels)}: 0..{len(levels) - 1})")
    node = _open(path)
    data = node if not levels[idx]["path"] else node[levels[idx]["path"]]
    if data.ndim > 3 and all(n == 1 for n in data.shape[:-3]):  # OME-Zarr may carry singleton t/c axes
        data = _Leading(data)
    if data.ndim != 3:
        raise BioidInputError(f"{path}: expected a 3D volume [z, y, x], got shape {tuple(data.shape)}")
    _check_volume(data, path, check_finite)
    return Volume(data=data, voxel_size=levels[idx]["voxel_size"], path=Path(path) if isinstance(path, (str, os.PathLike)) else None,
                  metadata={"levels": levels, "level": idx, "format": "zarr"})


@contextlib.contextmanager
def create_ome_zarr(path: PathLike, shape: Tuple[int, int, int], voxel_size: Optional[float], dtype=np.float32,
                    chunks: Tuple[int, int, int] = (64, 256, 256), overwrite: bool = False, name: str = "") -> Iterator:
    """Create a one-level OME-Zarr volume to fill slab by slab; it appears at ``path`` only when the body succeeds.

    Yields the level-0 :class:`zarr.Array` of ``shape`` [z, y, x]; the axes
    are z, y, x in Å (``voxel_size``; ``scale`` 1 when ``None``). Written in a
    temporary folder beside ``path`` and renamed into place; an existing
    ``path`` (only with ``overwrite``) is first moved to ``<path>.bak``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    path = prepare_output(path, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        group = zarr.open_group(str(tmp), mode="w")
        arr = group.create_dataset("0", shape=tuple(int(s) for s in shape), chunks=tuple(min(c, s) for c, s in zip(chunks, shape)),
                                   dtype=dtype, fill_value=0)
        yield arr
        vs = float(voxel_size) if voxel_size else 1.0
        write_multiscales_metadata(group, [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [vs, vs, vs]}]}],
                                   axes=[{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"], name=name or path.stem)
        if path.exists():
            bak = path.with_name(path.name + ".bak")
            if bak.is_dir():
                shutil.rmtree(bak)
            elif bak.exists():
                bak.unlink()
            os.replace(path, bak)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
