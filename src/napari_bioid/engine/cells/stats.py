"""Cell statistics and plots for images and groups of images (METHODS.md §4, "Statistics").

From a boxes table (``image, x_min, y_min, x_max, y_max, class``; px) and,
per image, its size and group:

* counts and proportions per class, per image and per group;
* cell size: box area in px and µm² (when the pixel size is known), relative
  to the image area, and relative to the mean area of the image's normal cells;
* the density score: for each positive cell, the number of normal cells whose
  centres lie within k × r̄ of its centre, r̄ the mean positive-cell radius of
  the image (a box's radius is (width + height) / 4), for k = 2, 4, 6, 8.

"Positive" is the class list the user names (the target cell type); "normal"
is every other class unless named. Plots (matplotlib, no pyplot state): class
proportions as stacked bars per group, box plots of per-image proportions per
group, violins of cell size per class, mean density score against k per group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write

KS = (2, 4, 6, 8)


def _centres_radii(df: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
    w, h = (df["x_max"] - df["x_min"]).to_numpy(float), (df["y_max"] - df["y_min"]).to_numpy(float)
    c = np.stack([(df["x_min"] + df["x_max"]).to_numpy(float) / 2, (df["y_min"] + df["y_max"]).to_numpy(float) / 2], 1)
    return c, (w + h) / 4


def density_scores(boxes: pd.DataFrame, positive: Sequence[str], normal: Optional[Sequence[str]] = None,
                   ks: Sequence[float] = KS) -> pd.DataFrame:
    """Density score of every positive cell of one image.

    Parameters
    ----------
    boxes : DataFrame with ``x_min, y_min, x_max, y_max`` (px) and ``class``, one image.
    positive, normal : class names; ``normal`` None = every class not in ``positive``.
    ks : multiples of the mean positive-cell radius.

    Returns
    -------
    DataFrame, one row per positive cell (its index in ``boxes`` as ``cell``),
    columns ``k2, k4, …``: the number of normal cells with centres within
    k × r̄ (inclusive). Empty when the image has no positive cell.
    """
    from scipy.spatial import cKDTree

    cls = boxes["class"].astype(str)
    pos = cls.isin([str(p) for p in positive]).to_numpy()
    nor = cls.isin([str(n) for n in normal]).to_numpy() if normal is not None else ~pos
    cols = [f"k{k:g}" for k in ks]
    if not pos.any():
        return pd.DataFrame(columns=["cell", *cols])
    c, r = _centres_radii(boxes)
    rbar = float(r[pos].mean())
    out = pd.DataFrame({"cell": boxes.index[pos]})
    tree = cKDTree(c[nor]) if nor.any() else None
    for k, col in zip(ks, cols):
        out[col] = [len(x) for x in tree.query_ball_point(c[pos], k * rbar + 1e-9)] if tree is not None else 0
    out.attrs["mean_positive_radius_px"] = rbar
    return out


def cell_statistics(boxes: pd.DataFrame, image_sizes: Optional[Mapping[str, Tuple[int, int]]] = None,
                    groups: Optional[Mapping[str, str]] = None, positive: Sequence[str] = (), normal: Optional[Sequence[str]] = None,
                    um_per_px: Optional[float] = None, ks: Sequence[float] = KS) -> Dict[str, pd.DataFrame]:
    """All the statistics of a boxes table.

    Parameters
    ----------
    boxes : DataFrame with ``image, x_min, y_min, x_max, y_max, class`` (px).
    image_sizes : image → (height, width) px; without it the area relative to the image is NaN.
    groups : image → group name (e.g. treated / control); default: one group "all".
    positive, normal : the density score's classes (see :func:`density_scores`); no
        positive class: no density table, and sizes relative to the mean area of all cells.
    um_per_px : optional pixel size for areas in µm².

    Returns
    -------
    dict of DataFrames: ``cells`` (one row per box: image, group, class, area_px,
    area_um2, area_rel_image, area_rel_normal), ``per_image`` and ``per_group``
    (n_cells, count_<class>, proportion_<class>, mean_area_px, mean density
    per k), ``density`` (one row per positive cell: image, group, k2..k8).

    Raises
    ------
    BioidInputError
        A missing column.
    """
    missing = [c for c in ("image", "x_min", "y_min", "x_max", "y_max", "class") if c not in boxes]
    if missing:
        raise BioidInputError(f"boxes table: missing column(s) {missing}")
    df = boxes.reset_index(drop=True).copy()
    df["image"] = df["image"].astype(str)
    df["class"] = df["class"].astype(str)
    groups = dict(groups or {})
    df["group"] = [groups.get(i, "all") for i in df["image"]]
    df["area_px"] = (df["x_max"] - df["x_min"]) * (df["y_max"] - df["y_min"])
    df["area_um2"] = df["area_px"] * um_per_px**2 if um_per_px else np.nan
    sizes = dict(image_sizes or {})
    df["area_rel_image"] = [a / (sizes[i][0] * sizes[i][1]) if i in sizes else np.nan for a, i in zip(df["area_px"], df["image"])]
    pos_set = {str(p) for p in positive}
    classes = sorted(df["class"].unique())
    images = list(dict.fromkeys(list(df["image"]) + list(sizes)))
    rel, dens, rows = np.full(len(df), np.nan), [], []
    kcols = [f"k{k:g}" for k in ks]
    for img in images:
        sub = df[df["image"] == img]
        if len(sub):
            nor_mask = (sub["class"].isin(list(normal)) if normal is not None else ~sub["class"].isin(pos_set)) if pos_set else np.ones(len(sub), bool)
            ref = sub["area_px"][nor_mask].mean() if np.any(nor_mask) else np.nan
            rel[sub.index] = sub["area_px"] / ref
        d = density_scores(sub, list(pos_set), normal, ks) if pos_set and len(sub) else pd.DataFrame(columns=["cell", *kcols])
        if len(d):
            dens.append(d.assign(image=img, group=groups.get(img, "all")))
        row = {"image": img, "group": groups.get(img, "all"), "n_cells": len(sub)}
        for c in classes:
            n = int((sub["class"] == c).sum())
            row[f"count_{c}"] = n
            row[f"proportion_{c}"] = n / len(sub) if len(sub) else np.nan
        row["mean_area_px"] = float(sub["area_px"].mean()) if len(sub) else np.nan
        for col in kcols:
            row[f"density_{col}"] = float(d[col].mean()) if len(d) else np.nan
        rows.append(row)
    df["area_rel_normal"] = rel
    per_image = pd.DataFrame(rows)
    agg = []
    for g, sub in per_image.groupby("group", sort=True):
        cells = df[df["group"] == g]
        row = {"group": g, "n_images": len(sub), "n_cells": int(sub["n_cells"].sum())}
        for c in classes:
            n = int((cells["class"] == c).sum())
            row[f"count_{c}"] = n
            row[f"proportion_{c}"] = n / len(cells) if len(cells) else np.nan
        row["mean_area_px"] = float(cells["area_px"].mean()) if len(cells) else np.nan
        gd = [d for d in dens if d["group"].iloc[0] == g]
        for col in kcols:
            row[f"density_{col}"] = float(pd.concat(gd)[col].mean()) if gd else np.nan
        agg.append(row)
    density = pd.concat(dens, ignore_index=True)[["image", "group", "cell", *kcols]] if dens else pd.DataFrame(columns=["image", "group", "cell", *kcols])
    cells = df[["image", "group", "class", "x_min", "y_min", "x_max", "y_max", "area_px", "area_um2", "area_rel_image", "area_rel_normal"]]
    return {"cells": cells, "per_image": per_image, "per_group": pd.DataFrame(agg), "density": density}


def statistics_figures(stats: Dict[str, pd.DataFrame]):
    """Four matplotlib Figures (no pyplot): ``proportions``, ``proportions_box``, ``sizes``, ``density``."""
    from matplotlib.figure import Figure

    per_group, per_image, cells, density = stats["per_group"], stats["per_image"], stats["cells"], stats["density"]
    classes = [c[len("proportion_"):] for c in per_group.columns if c.startswith("proportion_")]
    figs = {}
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(per_group))
    for c in classes:
        v = per_group[f"proportion_{c}"].fillna(0).to_numpy()
        ax.bar(per_group["group"].astype(str), v, bottom=bottom, label=c)
        bottom += v
    ax.set_ylabel("proportion of cells")
    ax.set_title("class proportions per group")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    figs["proportions"] = fig
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.add_subplot()
    groups = sorted(per_image["group"].unique())
    data, labels = [], []
    for c in classes:
        for g in groups:
            data.append(per_image.loc[per_image["group"] == g, f"proportion_{c}"].dropna().to_numpy())
            labels.append(f"{c}\n{g}" if len(groups) > 1 else c)
    if data:
        ax.boxplot(data, tick_labels=labels)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("proportion per image")
    ax.set_title("per-image proportions")
    figs["proportions_box"] = fig
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.add_subplot()
    col = "area_um2" if cells["area_um2"].notna().any() else "area_px"
    vals = [cells.loc[cells["class"] == c, col].to_numpy(float) for c in classes]
    keep = [i for i, v in enumerate(vals) if len(v) > 1]
    if keep:
        ax.violinplot([vals[i] for i in keep], showmedians=True)
        ax.set_xticks(range(1, len(keep) + 1), [classes[i] for i in keep], fontsize=7)
    ax.set_ylabel("box area (µm²)" if col == "area_um2" else "box area (px²)")
    ax.set_title("cell size per class")
    figs["sizes"] = fig
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.add_subplot()
    kcols = [c for c in density.columns if c.startswith("k")]
    ks = [float(c[1:]) for c in kcols]
    for g in sorted(density["group"].unique()) if len(density) else []:
        sub = density[density["group"] == g]
        ax.errorbar(ks, sub[kcols].mean().to_numpy(float), yerr=sub[kcols].std().fillna(0).to_numpy(float), marker="o", capsize=3, label=str(g))
    if len(density):
        ax.legend(fontsize=7)
    ax.set_xlabel("k (× mean positive-cell radius)")
    ax.set_ylabel("normal cells around a positive cell")
    ax.set_title("density score")
    figs["density"] = fig
    return figs


def write_statistics(stats: Dict[str, pd.DataFrame], out_dir: PathLike, formats: Sequence[str] = ("png", "svg"),
                     overwrite: bool = False) -> Dict[str, Path]:
    """Write the tables (``<name>.csv``) and the plots (``<plot>.<fmt>``) into ``out_dir``, each atomically.

    Raises ``FileExistsError`` (writing nothing) when a file exists and ``overwrite`` is false."""
    out_dir = Path(out_dir)
    figs = statistics_figures(stats)
    targets = {f"{k}.csv": k for k in stats} | {f"{k}.{fmt}": k for k in figs for fmt in formats}
    if not overwrite:
        clash = [n for n in targets if (out_dir / n).exists()]
        if clash:
            raise FileExistsError(f"{out_dir}: {clash[:3]} already exist; refusing to overwrite (pass overwrite)")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, key in targets.items():
        path = out_dir / name
        with atomic_write(path, overwrite=overwrite) as tmp:
            if name.endswith(".csv"):
                stats[key].to_csv(tmp, index=False, float_format="%.6g")
            else:
                figs[key].savefig(tmp, format=name.rsplit(".", 1)[1], dpi=120)
        written[name] = path
    return written
