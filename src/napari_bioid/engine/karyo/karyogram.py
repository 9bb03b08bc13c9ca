"""Karyogram layout: upright chromosomes arranged by class on one white sheet.

The conventional human karyogram (ISCN) places the pairs in rows by group:
1–5 (groups A, B), 6–12 + X (C), 13–18 (D, E), 19–22 + Y (F, G). Crops of an
unknown class follow in extra rows, in input order.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BioidInputError
from .rotate import to_grey

ROWS = [["1", "2", "3", "4", "5"], ["6", "7", "8", "9", "10", "11", "12", "X"], ["13", "14", "15", "16", "17", "18"],
        ["19", "20", "21", "22", "Y"]]
ORDER = [c for row in ROWS for c in row]


def chromosome_name(folder: str) -> Optional[str]:
    """Class name from a folder name: "1".."22", "X", "Y" (also "23" = X, "24" = Y, "chr7" = 7); else None."""
    name = folder.strip().lower().removeprefix("chr").removeprefix("chromosome").strip("_- ")
    name = {"23": "x", "24": "y"}.get(name, name)
    return name.upper() if name.upper() in ORDER else None


def layout(images: Sequence[np.ndarray], classes: Optional[Sequence[Optional[str]]] = None, gap: int = 6,
           group_gap: int = 18, max_width: Optional[int] = None) -> Tuple[np.ndarray, List[Tuple[int, int, int, int]]]:
    """One white uint8 sheet with every crop placed, and each crop's box (y0, x0, y1, x1) on it.

    ``images``: grey or RGB crops (upright); ``classes``: the chromosome class
    of each ("1".."22", "X", "Y") or None. Crops of one class stand side by
    side, classes follow the karyogram rows; unknown classes wrap at
    ``max_width`` pixels (default: the widest karyogram row, or 12 crops).

    Raises
    ------
    BioidInputError
        No images, or ``classes`` of another length.
    """
    if len(images) == 0:
        raise BioidInputError("no crops to lay out")
    classes = list(classes) if classes is not None else [None] * len(images)
    if len(classes) != len(images):
        raise BioidInputError(f"{len(classes)} classes for {len(images)} crops")
    greys = [to_grey(im) for im in images]
    by_class = {c: [i for i, k in enumerate(classes) if k == c] for c in ORDER}
    rows: List[List[List[int]]] = []  # rows of groups of crop indices
    for row in ROWS:
        groups = [by_class[c] for c in row if by_class[c]]
        if groups:
            rows.append(groups)

    def row_width(groups):
        return sum(sum(greys[i].shape[1] + gap for i in g) for g in groups) + group_gap * (len(groups) - 1)

    unknown = [i for i, k in enumerate(classes) if k not in by_class]
    if unknown:
        width = max_width or (max(row_width(r) for r in rows) if rows else 12 * (max(greys[i].shape[1] for i in unknown) + gap))
        current: List[int] = []
        for i in unknown:
            if current and row_width([current + [i]]) > width:
                rows.append([current])
                current = []
            current.append(i)
        rows.append([current])
    heights = [max(greys[i].shape[0] for g in r for i in g) for r in rows]
    sheet = np.full((sum(heights) + gap * (len(rows) + 1), max(row_width(r) for r in rows) + 2 * gap), 255, np.uint8)
    boxes: List[Tuple[int, int, int, int]] = [(0, 0, 0, 0)] * len(greys)
    y = gap
    for r, h in zip(rows, heights):
        x = gap
        for g in r:
            for i in g:
                ih, iw = greys[i].shape
                y0 = y + h - ih  # stand on a common baseline, as on a karyogram sheet
                sheet[y0 : y0 + ih, x : x + iw] = greys[i]
                boxes[i] = (y0, x, y0 + ih, x + iw)
                x += iw + gap
            x += group_gap
        y += h + gap
    return sheet, boxes
