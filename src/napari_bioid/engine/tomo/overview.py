"""Overview image of picks: a slab's projection with the picks circled.

Uses matplotlib's Agg canvas directly (no pyplot, no GUI backend), so it runs
headless and from worker threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd

from ..io.atomic import PathLike, atomic_write


def slab_projection(volume: np.ndarray, z_center: int, thickness: int) -> np.ndarray:
    """Mean of ``thickness`` z-slices around ``z_center`` (float32, (Y, X))."""
    z0 = max(0, int(z_center) - thickness // 2)
    z1 = min(volume.shape[0], z0 + thickness)
    return np.asarray(volume[z0:z1], dtype=np.float32).mean(axis=0)


def save_overview(
    path: PathLike,
    volume: np.ndarray,
    picks: pd.DataFrame,
    truth: Optional[pd.DataFrame] = None,
    radius: float = 6.0,
    thickness: Optional[int] = None,
    z_center: Optional[int] = None,
    class_names: Optional[Dict[int, str]] = None,
    overwrite: bool = False,
    title: str = "",
) -> Path:
    """Write a PNG: the projection of a z-slab with the picks in it circled.

    Parameters
    ----------
    volume : array (Z, Y, X)
    picks : DataFrame (``x, y, z`` voxels, ``class_id``)
    truth : DataFrame, optional
        True centres in the slab, drawn as small crosses.
    radius : float
        Circle radius in voxels.
    thickness : int, optional
        Slab thickness in voxels (default 2 × radius + 1); picks within half
        of it from the slab's centre are drawn.
    z_center : int, optional
        Default: the middle of the tomogram.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    thickness = int(thickness or 2 * radius + 1)
    zc = volume.shape[0] // 2 if z_center is None else int(z_center)
    img = slab_projection(volume, zc, thickness)
    lo, hi = np.percentile(img, [1, 99])
    h, w = img.shape
    fig = Figure(figsize=(8, 8 * h / w + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, h / (h + 60 * w / 800)])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_axis_off()
    near = picks[np.abs(picks["z"] - zc) <= thickness / 2]
    colours = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55", "#a2845e"]
    for row in near.itertuples():
        ax.add_patch(Circle((row.x, row.y), radius, fill=False, lw=1.5, color=colours[(int(row.class_id) - 1) % len(colours)]))
    if truth is not None:
        t = truth[np.abs(truth["z"] - zc) <= thickness / 2]
        ax.plot(t["x"], t["y"], "+", color="#00ffff", ms=6, mew=1)
    label = title or f"z {zc - thickness // 2}–{zc - thickness // 2 + thickness - 1}: {len(near)} picks circled"
    if truth is not None:
        label += ", truth +"
    fig.text(0.01, 0.99, label, va="top", fontsize=11)
    with atomic_write(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
