"""The chromosome review widget: orient a folder, review (flip, confirm), export; labels input."""

import csv

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_bioid.engine.karyo import list_crops, read_crop, rotate_image, split_by_case

from conftest import SHARED

CROPS = SHARED / "data" / "chromosomes" / "karyogram_crops"


@pytest.fixture(scope="module")
def held_out_case():
    if not CROPS.is_dir():
        pytest.skip(f"chromosome crops not found at {CROPS}")
    test = split_by_case(list_crops(CROPS), 0.3, seed=0)[1]
    case = sorted({c.case for c in test})[0]
    return [c for c in test if c.case == case]


@pytest.fixture
def widget(make_napari_viewer, monkeypatch, tmp_path):
    from napari_bioid.widgets import karyo

    monkeypatch.setattr(karyo, "AUTOSAVE_DIR", tmp_path / "autosave")
    viewer = make_napari_viewer()
    w = karyo.KaryogramWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w


def _rotated_folder(crops, folder, n=12, seed=3):
    """``n`` crops of one case at random angles, in <class>/<name> folders as a lab would keep them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in crops[:n]:
        (folder / c.chromosome).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rotate_image(read_crop(c.path), float(rng.uniform(0, 360)))).save(folder / c.chromosome / f"{c.path.stem}.png")
    return folder


def test_orient_review_export(widget, held_out_case, qtbot, tmp_path):
    viewer, w = widget
    src = _rotated_folder(held_out_case, tmp_path / "crops")
    w.folder.setText(str(src))
    w.orient()
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert len(w.decisions) == len(w.tiles) == 12
    assert "karyogram" in viewer.layers and viewer.layers["karyogram"].data.ndim == 2
    # karyogram order: classes ascend through the gallery
    classes = [w.classes[i] for i in w.order()]
    from napari_bioid.engine.karyo.karyogram import ORDER

    assert [ORDER.index(c) for c in classes] == sorted(ORDER.index(c) for c in classes)

    # the least confident crop is outlined for review once the threshold is above its confidence
    least = min(range(12), key=lambda i: w.decisions[i].confidence)
    w.threshold.setValue(min(1.0, w.decisions[least].confidence + 0.005))
    assert w.tiles[least].state == "low"
    w.sort.setCurrentIndex(1)
    assert w.order()[0] == least

    # click the least confident one: it flips (override), and the sheet follows
    before_sheet = viewer.layers["karyogram"].data.copy()
    before = w.decisions[least]
    qtbot.mouseClick(w.tiles[least].image, Qt.LeftButton)
    after = w.decisions[least]
    assert after.overridden and after.polarity != before.polarity
    assert after.total_rotation_deg == pytest.approx((before.total_rotation_deg + 180) % 360)
    assert w.tiles[least].state == "overridden"
    assert not np.array_equal(viewer.layers["karyogram"].data, before_sheet)
    # confirm another one
    other = (least + 1) % 12
    qtbot.mouseClick(w.tiles[other].ok_btn, Qt.LeftButton)
    assert w.confirmed[other] and w.tiles[other].state == "confirmed"
    assert w.autosave_path().is_file()  # the review is never lost

    out = tmp_path / "export"
    w.export(out)
    with open(out / "decisions.csv", newline="") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    assert len(rows) == 12
    flipped = rows[after.file]
    assert flipped["overridden"] == "True" and flipped["polarity"] == after.polarity
    assert sum(r["overridden"] == "True" for r in rows.values()) == 1
    from PIL import Image

    exported = np.asarray(Image.open(out / after.file))
    original = read_crop(src / before.file)
    assert np.array_equal(exported, rotate_image(original, after.total_rotation_deg))

    # a second session on the same folder gets the review back
    w2 = type(w)(viewer)
    w2.folder.setText(str(src))
    w2.orient()
    qtbot.waitUntil(lambda: not w2.busy, timeout=120_000)
    i2 = [d.file for d in w2.decisions].index(after.file)
    assert w2.decisions[i2].overridden and w2.decisions[i2].polarity == after.polarity
    assert w2.confirmed[[d.file for d in w2.decisions].index(w.decisions[other].file)]


def test_image_and_labels_layers(widget, held_out_case, qtbot):
    viewer, w = widget
    canvas = np.full((140, 420), 255, np.uint8)
    labels = np.zeros(canvas.shape, np.int32)
    for i, c in enumerate(held_out_case[:5]):
        img = rotate_image(read_crop(c.path), 40.0 * i)
        h, w_ = img.shape
        y0, x0 = 5, 5 + 82 * i
        mask = img[: 130, : 80] < 230
        canvas[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = img[: 130, : 80][mask]
        labels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = i + 1
    viewer.add_image(canvas, name="metaphase")
    viewer.add_labels(labels, name="chromosomes")
    w.mode.setCurrentIndex(1)
    w.image_combo.setCurrentText("metaphase")
    w.labels_combo.setCurrentText("chromosomes")
    w.orient()
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert [d.file for d in w.decisions] == [f"label_{i:04d}.png" for i in range(1, 6)]
    assert len(w.tiles) == 5
    marks = viewer.layers["polarity"]
    assert len(marks.data) == 5 and len(marks.features["label"]) == 5
    qtbot.mouseClick(w.tiles[2].image, Qt.LeftButton)
    assert "✎" in marks.features["label"][2] and "✎" not in marks.features["label"][1]


def test_review_guards_and_honest_numbers(widget, held_out_case, qtbot, tmp_path):
    """Issue 16.8: no export over the input crops, the status count follows the threshold, a flipped
    tile shows the probability of the reviewer's polarity."""
    from napari_bioid.engine.errors import BioidInputError
    from napari_bioid.widgets.karyo import decision_confidence

    viewer, w = widget
    src = _rotated_folder(held_out_case, tmp_path / "crops", n=8)
    before = {p: p.read_bytes() for p in src.rglob("*.png")}
    w.folder.setText(str(src))
    w.orient()
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    with pytest.raises(BioidInputError, match="input folder"):
        w.export(src)
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == before and not list(src.rglob("*.bak"))

    confidences = sorted(d.confidence for d in w.decisions)
    for t in (0.5, confidences[3] + 1e-3, 1.0):
        w.threshold.setValue(t)
        expected = sum(c < w.threshold.value() for c in confidences)
        assert f"{expected} to review" in w.status.text()

    i = 0
    p_call = w.decisions[i].confidence
    qtbot.mouseClick(w.tiles[i].image, Qt.LeftButton)
    assert decision_confidence(w.decisions[i]) == pytest.approx(1 - p_call)
    assert f"{1 - p_call:.0%}" in w.tiles[i].caption.text() and f"{p_call:.0%}" not in w.tiles[i].caption.text().split("\n")[1]


def test_labels_gallery_fits_the_dock(widget, held_out_case, qtbot):
    viewer, w = widget
    canvas = np.full((140, 820), 255, np.uint8)
    labels = np.zeros(canvas.shape, np.int32)
    for i, c in enumerate(held_out_case[:10]):
        img = read_crop(c.path)[:130, :80]
        mask = img < 230
        canvas[5 : 5 + mask.shape[0], 2 + 82 * i : 2 + 82 * i + mask.shape[1]][mask] = img[mask]
        labels[5 : 5 + mask.shape[0], 2 + 82 * i : 2 + 82 * i + mask.shape[1]][mask] = i + 1
    viewer.add_image(canvas, name="metaphase")
    viewer.add_labels(labels, name="chromosomes")
    w.mode.setCurrentIndex(1)
    w.image_combo.setCurrentText("metaphase")
    w.labels_combo.setCurrentText("chromosomes")
    w.orient()
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    qtbot.wait(100)
    assert len(w.tiles) == 10
    assert w.gallery.sizeHint().width() <= w.scroll.viewport().width(), (w.gallery.sizeHint().width(), w.scroll.viewport().width())


def test_second_look_follows_the_checkbox(widget, held_out_case, qtbot, tmp_path):
    """The "second look" checkbox runs the model's test-time turns (on) or one pass (off), as the engine does."""
    from napari_bioid.engine.karyo import load_polarity_model
    from napari_bioid.engine.karyo.orient import orient_images

    from PIL import Image

    from napari_bioid.engine.karyo.rotate import background_fill
    from napari_bioid.engine.karyo.shift import shift_crop

    viewer, w = widget
    rng = np.random.default_rng(5)
    folder = tmp_path / "crops"
    folder.mkdir()
    for c in held_out_case:  # another lab's crops (lab level 3), so that the first pass is unsure of a few
        image = shift_crop(read_crop(c.path), "lab", 3.0, rng)
        Image.fromarray(rotate_image(image, float(rng.uniform(0, 360)), fill=background_fill(image))).save(folder / f"{c.path.stem}.png")
    w.folder.setText(str(folder))
    model = load_polarity_model(None)
    one_pass = load_polarity_model(None)
    one_pass.turns_below = 0.0
    assert model.turns_below > 0 and model.turn_angles
    got = {}
    for checked in (False, True):
        w.turns.setChecked(checked)
        w.orient()
        qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
        got[checked] = np.array([d.p_up for d in w.decisions])
        expected = orient_images(w.images, model=model if checked else one_pass)
        np.testing.assert_allclose(got[checked], [d.p_up for d in expected], atol=1e-9)
    # the turns change only the crops the first pass was unsure of
    sure = np.maximum(got[False], 1 - got[False]) >= model.turns_below
    assert (~sure).any(), "no unsure crop: the test cannot tell the two settings apart"
    np.testing.assert_allclose(got[True][sure], got[False][sure], atol=1e-9)
    assert np.abs(got[True][~sure] - got[False][~sure]).max() > 1e-3
