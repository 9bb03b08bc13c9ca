"""Train the shipped chromosome polarity classifier (``bioid karyo train`` with the default's settings).

Data: ../shared/data/chromosomes/karyogram_crops (one folder per case). Split by case, never by crop:
30 % of the cases are the test set (the reference's 7:3, seed 0); 10 % of the remaining cases choose the
epoch. Training crops go through the whole chain (random angle → rotate upright) at several angles each,
validation and test crops at one. Mirror averaging and the temperature (calibration) are chosen on the
validation cases. Two stages (issue 15), both `bioid karyo train` runs on the same split:

1. base: ResNet-18, width 16, 224 px, 24 epochs from random weights, 4 angles per training crop, every second
   one first changed by another lab's imaging (``--augment-shift``: engine/karyo/shift.random_shift; ~85 CPU min);
2. fine-tune: from the base model (``--init``), 10 epochs at lr 0.003, 8 angles per crop, every fourth one a whole
   other lab at once (``--augment-lab``: shift.RANDOM_LAB, always 25–70 % of the size; ~33 CPU min).

Writes the model into the package and its metrics beside it (.json): test accuracy, TP/FP/TN/FN (positive =
p-arm up), accuracy per chromosome class, calibration, and the base run's recipe and test accuracy
(``fine_tuned_from``).

    python scripts/train_default_polarity.py                       # both stages: the shipped default (~2 CPU hours)
    python scripts/train_default_polarity.py --stage fine-tune     # stage 2 only, from the model now in the package
    python scripts/train_default_polarity.py --stage base --depth 50 --out /tmp/r50.pt --epochs 8   # any `bioid karyo train` option
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_bioid.cli import main  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "chromosomes" / "karyogram_crops"
SHIPPED = ROOT / "src" / "napari_bioid" / "models" / "karyo_polarity_default.pt"
COMMON = ["--data", str(DATA), "--workers", "2", "--cache", "/tmp/bioid_karyo_cache", "--overwrite"]
BASE = ["--depth", "18", "--width", "16", "--size", "224", "--epochs", "24", "--variants", "4", "--augment-shift"]
FINE_TUNE = ["--epochs", "10", "--lr", "0.003", "--variants", "8", "--augment-lab"]


def _provenance(out: Path, minutes: float) -> None:
    """Add where the shipped model comes from to its metrics (model file and .json)."""
    from napari_bioid.engine.io.atomic import atomic_write
    from napari_bioid.engine.karyo import load_polarity_model, save_polarity_model

    model = load_polarity_model(out)
    model.metrics.update({
        "data": "../shared/data/chromosomes/karyogram_crops",
        "script": "scripts/train_default_polarity.py (base: ResNet-18, width 16, 224 px, 24 epochs, --variants 4 "
                  "--augment-shift; fine-tune: --init base --epochs 10 --lr 0.003 --variants 8 --augment-lab)",
        "train_minutes": round(minutes, 1),
        "trained_on": "2 CPU cores",
    })
    save_polarity_model(model, out, overwrite=True)
    with atomic_write(out.with_suffix(".json"), overwrite=True, backup=False) as tmp:
        tmp.write_text(json.dumps(model.metrics, indent=1))


def run(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("both", "base", "fine-tune"), default="both")
    ap.add_argument("--out", type=Path, default=SHIPPED)
    args, extra = ap.parse_known_args(argv)
    t0 = time.perf_counter()
    if args.stage in ("both", "base"):
        base_out = Path(tempfile.gettempdir()) / "karyo_polarity_base.pt" if args.stage == "both" else args.out
        rc = main(["karyo", "train", *COMMON, *BASE, "--out", str(base_out), *(extra if args.stage == "base" else [])])
        if rc or args.stage == "base":
            return rc
        init = base_out
    else:
        init = args.out
    rc = main(["karyo", "train", *COMMON, *FINE_TUNE, "--init", str(init), "--out", str(args.out), *extra])
    if rc == 0 and args.out == SHIPPED:
        _provenance(args.out, (time.perf_counter() - t0) / 60)
    return rc


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
