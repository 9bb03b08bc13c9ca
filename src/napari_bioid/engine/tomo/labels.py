"""Weak labels: a small mask of its class id around every annotated centre.

Reference: DeepETPicker (Liu et al., Nat. Commun. 2024), METHODS.md §1.
"""

from __future__ import annotations

from typing import Dict, Sequence, Union

import numpy as np
import pandas as pd

from ..errors import BioidInputError
from .config import LABEL_SHAPES


def label_kernel(radius: int, shape: str = "sphere") -> np.ndarray:
    """Boolean (2r+1)³ mask of one weak label.

    * ``sphere``: voxels within distance r of the centre;
    * ``gaussian``: voxels within √2·r (where a Gaussian of σ = r exceeds
      e^-1), truncated to the (2r+1)³ cube: a rounded cube;
    * ``cube``: the whole (2r+1)³ cube.
    """
    if shape not in LABEL_SHAPES:
        raise BioidInputError(f"label shape must be one of {LABEL_SHAPES}, got {shape!r}")
    r = int(radius)
    if r < 0:
        raise BioidInputError(f"label radius must be ≥ 0, got {radius}")
    g = np.arange(-r, r + 1)
    d2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    if shape == "sphere":
        return d2 <= r * r
    if shape == "gaussian":
        return d2 <= 2 * r * r
    return np.ones((2 * r + 1,) * 3, dtype=bool)


def make_weak_labels(
    shape: Sequence[int],
    table: pd.DataFrame,
    radius: Union[int, Dict[int, int]],
    label_shape: str = "sphere",
) -> np.ndarray:
    """Paint every particle of ``table`` into a label volume.

    Parameters
    ----------
    shape : (Z, Y, X)
        Shape of the tomogram.
    table : DataFrame
        Coordinate table (``x, y, z`` voxels, ``class_id``), see ``engine.io.coords``.
    radius : int or {class_id: int}
        Label radius r in voxels, one for all or one per class.
    label_shape : ``sphere`` | ``gaussian`` | ``cube``

    Returns
    -------
    numpy.ndarray, uint8, shape (Z, Y, X)
        0 = background, else the class id. Where labels overlap, a voxel goes
        to the particle whose centre is nearest (ties: the earlier one), so no
        particle ever erases another one's centre.
    """
    labels = np.zeros(tuple(shape), dtype=np.uint8)
    nearest = np.full(tuple(shape), np.inf, dtype=np.float32)  # squared distance to the owning centre
    if (table["class_id"] > 255).any():
        raise BioidInputError("class ids above 255 are not supported")
    kernels: Dict[int, np.ndarray] = {}
    for x, y, z, cls in zip(table["x"], table["y"], table["z"], table["class_id"]):
        cls = int(cls)
        r = int(radius[cls] if isinstance(radius, dict) else radius)
        if cls not in kernels:
            kernels[cls] = label_kernel(r, label_shape)
        k = kernels[cls]
        r = k.shape[0] // 2
        g = np.arange(-r, r + 1)
        d2 = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2).astype(np.float32)
        c = np.rint([z, y, x]).astype(int)
        lo = c - r
        hi = c + r + 1
        a = np.maximum(lo, 0)
        b = np.minimum(hi, labels.shape)
        if np.any(b <= a):
            continue
        win = (slice(a[0], b[0]), slice(a[1], b[1]), slice(a[2], b[2]))
        kwin = (slice(a[0] - lo[0], b[0] - lo[0]), slice(a[1] - lo[1], b[1] - lo[1]), slice(a[2] - lo[2], b[2] - lo[2]))
        take = k[kwin] & (d2[kwin] < nearest[win])
        labels[win][take] = cls
        nearest[win][take] = d2[kwin][take]
    return labels
