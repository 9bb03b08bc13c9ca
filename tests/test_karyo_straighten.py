"""Straightening bent chromosomes (engine/karyo/straighten.py): geometry on drawn shapes, the gate, bad input."""

import numpy as np
import pytest

from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.karyo.straighten import bend, straighten, straighten_if_bent

GATE = {"min_bend": 0.09, "min_elongation": 3.0, "min_length_ratio": 1.0}


def arc_chromosome(radius=60.0, half_width=6.0, span_deg=140.0, dark_top=0.2, size=160):
    """A C-shaped chromosome on white: an arc bulging right, its top fifth dark (50), the rest mid-grey (110-130).

    Returns ``(image, arc_length)``; the top end (smaller y) is the dark one.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    cy, cx = size / 2, size / 2 - radius / 2
    r = np.hypot(yy - cy, xx - cx)
    phi = np.degrees(np.arctan2(yy - cy, xx - cx))  # −span/2 at the top end, +span/2 at the bottom end
    inside = (np.abs(r - radius) < half_width) & (np.abs(phi) < span_deg / 2)
    frac = (phi + span_deg / 2) / span_deg
    img = np.full((size, size), 255, np.uint8)
    img[inside & (frac < dark_top)] = 50
    rest = inside & (frac >= dark_top)
    img[rest] = np.rint(110 + 20 * frac[rest]).astype(np.uint8)  # a slow gradient, as bands are never flat
    return img, np.radians(span_deg) * radius


def test_straighten_turns_an_arc_into_a_vertical_bar_of_its_length_keeping_the_top_end_up():
    img, length = arc_chromosome()
    assert bend(img) > 0.15
    out, info = straighten(img)
    dark = out < 200
    rows = np.flatnonzero(dark.any(axis=1))
    assert abs(info["length"] - length) / length < 0.1
    assert abs((rows[-1] - rows[0] + 1) - length) / length < 0.12
    # straight: every row's chromosome pixels sit in one narrow column band, about 2 half-widths wide
    widths = dark[rows[3]:rows[-3]].sum(axis=1)
    assert np.median(widths) == pytest.approx(12, abs=3)
    centres = [np.flatnonzero(r).mean() for r in dark[rows[3]:rows[-3]]]
    assert np.ptp(centres) < 4
    assert bend(out) < 0.03
    # the dark fifth that was at the top of the arc is at the top of the straightened crop
    profile = np.array([out[r][dark[r]].mean() for r in rows])
    n = len(profile)
    assert profile[: int(0.15 * n)].mean() < 75 and profile[int(0.3 * n):].mean() > 100


def test_straighten_on_the_arc_turned_180_puts_the_other_end_up():
    img, _ = arc_chromosome()
    out, _ = straighten(img[::-1, ::-1])
    dark = out < 200
    rows = np.flatnonzero(dark.any(axis=1))
    profile = np.array([out[r][dark[r]].mean() for r in rows])
    n = len(profile)
    assert profile[-int(0.15 * n):].mean() < 75 and profile[: int(0.7 * n)].mean() > 100


def test_gate_straightens_the_long_bent_arc_but_not_a_straight_bar_nor_a_short_blob():
    arc, _ = arc_chromosome()
    out, done = straighten_if_bent(arc, GATE)
    assert done and out.shape != arc.shape
    bar = np.full((120, 40), 255, np.uint8)
    bar[10:110, 14:26] = np.linspace(60, 130, 100).astype(np.uint8)[:, None]
    assert bend(bar) < 0.01
    out, done = straighten_if_bent(bar, GATE)
    assert not done and np.array_equal(out, bar)
    short, _ = arc_chromosome(radius=10.0, half_width=7.0, span_deg=180.0, size=70)  # bent but stubby: elongation < 3
    assert bend(short) > GATE["min_bend"]
    assert not straighten_if_bent(short, GATE)[1]
    assert not straighten_if_bent(arc, None)[1]


def test_gate_without_its_keys_is_refused():
    arc, _ = arc_chromosome()
    with pytest.raises(BioidInputError, match="min_elongation"):
        straighten_if_bent(arc, {"min_bend": 0.1, "min_length_ratio": 1.0})


def test_an_empty_crop_comes_back_unchanged():
    blank = np.full((30, 30), 255, np.uint8)
    out, info = straighten(blank)
    assert np.array_equal(out, blank) and info["length"] == 0.0
