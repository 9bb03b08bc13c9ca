"""Cell statistics (issue 12): counts, proportions, sizes and the density score on hand-computable cases."""

import numpy as np
import pandas as pd
import pytest

from napari_bioid.engine.cells.stats import cell_statistics, density_scores, write_statistics
from napari_bioid.engine.errors import BioidInputError


def _box(cx, cy, side, cls, image="a.png"):
    return {"image": image, "x_min": cx - side / 2, "y_min": cy - side / 2, "x_max": cx + side / 2, "y_max": cy + side / 2, "class": cls}


def test_density_score_by_hand():
    # two tumour cells of radius 5 (10 px boxes): r̄ = 5, so k = 2, 4, 6, 8 reach 10, 20, 30, 40 px
    rows = [_box(100, 100, 10, "tumour"), _box(300, 100, 10, "tumour"),
            _box(110, 100, 8, "normal"),   # 10 px from the first: inside k = 2 (inclusive)
            _box(100, 125, 8, "normal"),   # 25 px: k = 6, 8
            _box(100, 61, 8, "normal"),    # 39 px: k = 8
            _box(300, 141, 8, "normal"),   # 41 px from the second: outside every k
            _box(200, 100, 8, "other")]    # not named normal: ignored when normal = ["normal"]
    df = pd.DataFrame(rows)
    d = density_scores(df, ["tumour"], ["normal"])
    assert d[["k2", "k4", "k6", "k8"]].to_numpy().tolist() == [[1, 1, 2, 3], [0, 0, 0, 0]]
    assert d.attrs["mean_positive_radius_px"] == 5.0
    # normal = every non-positive class: the "other" cell 100 px from both is still beyond k = 8 (40 px)
    assert density_scores(df, ["tumour"])[["k8"]].to_numpy().ravel().tolist() == [3, 0]


def test_counts_proportions_sizes_and_groups():
    rows = [_box(50, 50, 10, "tumour", "t1.png"), _box(80, 50, 20, "normal", "t1.png"), _box(20, 20, 20, "normal", "t1.png"),
            _box(50, 50, 10, "normal", "c1.png"), _box(90, 90, 10, "normal", "c1.png")]
    st = cell_statistics(pd.DataFrame(rows), image_sizes={"t1.png": (100, 200), "c1.png": (100, 100), "empty.png": (100, 100)},
                         groups={"t1.png": "treated", "c1.png": "control", "empty.png": "control"}, positive=["tumour"], um_per_px=0.5)
    pi = st["per_image"].set_index("image")
    assert pi.loc["t1.png", "count_tumour"] == 1 and pi.loc["t1.png", "proportion_normal"] == pytest.approx(2 / 3)
    assert pi.loc["empty.png", "n_cells"] == 0  # an image without cells still counts
    pg = st["per_group"].set_index("group")
    assert pg.loc["control", "n_images"] == 2 and pg.loc["control", "proportion_normal"] == 1.0 and pg.loc["treated", "n_cells"] == 3
    cells = st["cells"]
    t = cells[(cells["image"] == "t1.png") & (cells["class"] == "tumour")].iloc[0]
    assert t["area_px"] == 100 and t["area_um2"] == 25 and t["area_rel_image"] == pytest.approx(100 / 20000)
    assert t["area_rel_normal"] == pytest.approx(100 / 400)  # the image's normal cells average 400 px²
    # r̄ = 5: the normal cell 30 px away counts from k = 6 on, the one 42.4 px away never
    assert st["density"][["k2", "k4", "k6", "k8"]].to_numpy().tolist() == [[0, 0, 1, 1]]
    with pytest.raises(BioidInputError, match="missing column"):
        cell_statistics(pd.DataFrame(rows).drop(columns=["class"]))


def test_statistics_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = [_box(*rng.uniform(20, 480, 2), rng.uniform(8, 16), rng.choice(["tumour", "normal"], p=[0.3, 0.7]), f"{g}{i}.png")
            for g in ("t", "c") for i in range(3) for _ in range(40)]
    st = cell_statistics(pd.DataFrame(rows), groups={f"{g}{i}.png": g for g in "tc" for i in range(3)}, positive=["tumour"])
    files = write_statistics(st, tmp_path / "stats")
    assert {"per_image.csv", "per_group.csv", "cells.csv", "density.csv", "proportions.png", "sizes.svg", "density.png", "proportions_box.png"} <= set(files)
    assert len(pd.read_csv(files["per_image.csv"])) == 6 and len(pd.read_csv(files["cells.csv"])) == 240
    assert (tmp_path / "stats" / "density.png").stat().st_size > 5000
    with pytest.raises(FileExistsError):
        write_statistics(st, tmp_path / "stats")


def test_cli_stats_groups_from_subfolders(tmp_path):
    import json
    import subprocess
    import sys

    from PIL import Image

    for g in ("treated", "control"):
        (tmp_path / "imgs" / g).mkdir(parents=True)
        Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(tmp_path / "imgs" / g / "a.png")
    rows = [_box(50, 50, 10, "tumour", "treated/a.png"), _box(70, 50, 10, "normal", "treated/a.png"), _box(50, 50, 10, "normal", "control/a.png")]
    pd.DataFrame(rows).assign(score=0.9).to_csv(tmp_path / "boxes.csv", index=False)
    run = lambda *a: subprocess.run([sys.executable, "-m", "napari_bioid.cli", "cells", "stats", *map(str, a)], capture_output=True, text=True)
    res = run(tmp_path / "boxes.csv", "--images", tmp_path / "imgs", "--positive", "tumour", "--out", tmp_path / "st")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["groups"] == ["control", "treated"]
    pi = pd.read_csv(tmp_path / "st" / "per_image.csv").set_index("image")
    assert pi.loc["treated/a.png", "proportion_tumour"] == 0.5 and pi.loc["control/a.png", "n_cells"] == 1
    cells = pd.read_csv(tmp_path / "st" / "cells.csv")
    assert np.isclose(cells["area_rel_image"].iloc[0], 100 / 20000)
    d = pd.read_csv(tmp_path / "st" / "density.csv")
    assert d[["k2", "k4"]].to_numpy().tolist() == [[0, 1]]  # the normal cell 20 px away: k = 4 × r̄ (5 px)
    bad = run(tmp_path / "boxes.csv", "--positive", "tumor", "--out", tmp_path / "st2")
    assert bad.returncode == 2 and "do not occur" in bad.stderr and not (tmp_path / "st2").exists()
