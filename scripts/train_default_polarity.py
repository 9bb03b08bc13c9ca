"""Train the shipped chromosome polarity classifier (``bioid karyo train`` with the default's settings).

Data: ../shared/data/chromosomes/karyogram_crops (one folder per case). Split by case, never by crop:
30 % of the cases are the test set (the reference's 7:3, seed 0); 10 % of the remaining cases choose the
epoch. Training crops go through the whole chain (random angle → rotate upright) at 2 angles each,
validation and test crops at one; every second training angle (and a second validation copy) first gets another
lab's imaging (engine/karyo/shift.random_shift: scale, blur, gamma, contrast, background, noise, JPEG; issue 15).
Mirror averaging and the temperature (calibration) are chosen on the validation cases. Writes the model into the
package and its metrics beside it (.json):
test accuracy, TP/FP/TN/FN (positive = p-arm up), accuracy per chromosome class, the weakest classes.

    python scripts/train_default_polarity.py                     # the shipped default: ResNet-18, width 16, 224 px (~85 CPU min)
    python scripts/train_default_polarity.py --depth 50 --out /tmp/r50.pt --epochs 8   # any `bioid karyo train` option
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_bioid.cli import main  # noqa: E402

DEFAULTS = ["--data", str(ROOT.parent / "shared" / "data" / "chromosomes" / "karyogram_crops"),
            "--out", str(ROOT / "src" / "napari_bioid" / "models" / "karyo_polarity_default.pt"),
            "--depth", "18", "--width", "16", "--size", "224", "--epochs", "24", "--variants", "4", "--augment-shift",
            "--workers", "2", "--cache", "/tmp/bioid_karyo_cache", "--overwrite"]

if __name__ == "__main__":
    raise SystemExit(main(["karyo", "train", *DEFAULTS, *sys.argv[1:]]))
