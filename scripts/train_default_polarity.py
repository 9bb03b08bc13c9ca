"""Train the shipped chromosome polarity classifier (``bioid karyo train`` with the default's settings).

Data: ../shared/data/chromosomes/karyogram_crops (one folder per case). Split by case, never by crop:
30 % of the cases are the test set (the reference's 7:3, seed 0); 10 % of the remaining cases choose the
epoch. Training crops go through the whole chain (random angle → rotate upright) at several angles each,
validation and test crops at one. Mirror averaging and the temperature (calibration) are chosen on the
validation cases. Five stages (issue 15), all `bioid karyo train|ensemble` runs on the same split:

1. base: ResNet-18, width 16, 224 px, 24 epochs from random weights, 4 angles per training crop, every second
   one first changed by another lab's imaging (``--augment-shift``: engine/karyo/shift.random_shift; ~85 CPU min);
2. fine-tune: from the base model (``--init``), 10 epochs at lr 0.003, 8 angles per crop, every fourth one a whole
   other lab at once (``--augment-lab``: shift.RANDOM_LAB, always 25–70 % of the size; ~33 CPU min);
3. straighten: from the fine-tuned model, the same 10 epochs again with long, thin, bent chromosomes
   straightened along their axis first (``--straighten 0.09,3,1.0``: engine/karyo/straighten.py, the loosest
   gate); the gate the model keeps is then chosen on the validation cases (training.choose_straighten_gate;
   ~30 CPU min);
4. member: a second network of the same architecture in one run from random weights, 56 epochs, 16 angles per
   crop, ``--augment-lab --straighten 0.09,3,1.0`` (7 minutes on one H100 with 16 CPU cores preparing the crops,
   ``--device cuda --workers 16``; several CPU hours on 2 cores);
5. ensemble: stages 3 and 4 averaged (``bioid karyo ensemble``; engine/karyo/polarity.PolarityEnsemble): the gate
   and the temperature are chosen again on the validation cases; mirror averaging stays off, so the two networks
   cost what one network with mirror averaging cost; crops less sure than the review threshold 0.9 get the mean of
   four symmetric views (``--views-below 0.9``, the default of ``train`` and ``ensemble``; polarity.py).

Writes the model into the package and its metrics beside it (.json): test accuracy, TP/FP/TN/FN (positive =
p-arm up), accuracy per chromosome class, calibration, and each member's recipe and test accuracy.

    python scripts/train_default_polarity.py                        # all stages: the shipped default
    python scripts/train_default_polarity.py --stage ensemble --init STAGE3.pt --member MEMBER.pt
    python scripts/train_default_polarity.py --stage member --out /tmp/member.pt --device cuda --workers 16
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
STRAIGHTEN = [*FINE_TUNE, "--straighten", "0.09,3,1.0"]
MEMBER = ["--depth", "18", "--width", "16", "--size", "224", "--epochs", "56", "--variants", "16", "--augment-lab",
          "--straighten", "0.09,3,1.0"]


def _provenance(out: Path, minutes: float) -> None:
    """Add where the shipped model comes from to its metrics (model file and .json)."""
    from napari_bioid.engine.io.atomic import atomic_write
    from napari_bioid.engine.karyo import load_polarity_model, save_polarity_model

    model = load_polarity_model(out)
    model.metrics.update({
        "data": "../shared/data/chromosomes/karyogram_crops",
        "script": "scripts/train_default_polarity.py (ensemble of two ResNet-18s, width 16, 224 px. Member 1: base 24 "
                  "epochs --variants 4 --augment-shift; fine-tune: --init base --epochs 10 --lr 0.003 --variants 8 "
                  "--augment-lab; straighten: --init fine-tune, the same with --straighten 0.09,3,1.0. Member 2: 56 "
                  "epochs from random weights, --variants 16 --augment-lab --straighten 0.09,3,1.0. Then bioid karyo "
                  "ensemble: gate and temperature chosen on validation, mirror off, four symmetric views below confidence 0.9)",
        "train_minutes": round(minutes, 1),
    })
    save_polarity_model(model, out, overwrite=True)
    with atomic_write(out.with_suffix(".json"), overwrite=True, backup=False) as tmp:
        tmp.write_text(json.dumps(model.metrics, indent=1))


def run(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("all", "base", "fine-tune", "straighten", "member", "ensemble"), default="all")
    ap.add_argument("--init", type=Path, default=None,
                    help="model to start stages fine-tune or straighten from; for --stage ensemble: the stage-3 model")
    ap.add_argument("--member", type=Path, default=None, help="--stage ensemble: the stage-4 model")
    ap.add_argument("--out", type=Path, default=SHIPPED)
    args, extra = ap.parse_known_args(argv)
    t0 = time.perf_counter()
    tmp = Path(tempfile.gettempdir())
    if args.stage in ("fine-tune", "straighten", "ensemble") and args.init is None:
        ap.error(f"--stage {args.stage} needs --init MODEL.pt (the previous stage's model)")
    if args.stage == "ensemble" and args.member is None:
        ap.error("--stage ensemble needs --member MODEL.pt (the stage-4 model)")
    chain = [("base", BASE), ("fine-tune", FINE_TUNE), ("straighten", STRAIGHTEN)]
    if args.stage in ("base", "fine-tune", "straighten"):
        chain = [s for s in chain if s[0] == args.stage]
    elif args.stage in ("member", "ensemble"):
        chain = []
    init = args.init
    for i, (name, options) in enumerate(chain):
        last = args.stage != "all" and i == len(chain) - 1
        out = args.out if last else tmp / f"karyo_polarity_{name}.pt"
        rc = main(["karyo", "train", *COMMON, *options, *([] if init is None else ["--init", str(init)]),
                   "--out", str(out), *(extra if last else [])])
        if rc:
            return rc
        init = out
    member = args.member
    if args.stage in ("all", "member"):
        member = args.out if args.stage == "member" else tmp / "karyo_polarity_member.pt"
        rc = main(["karyo", "train", *COMMON, *MEMBER, "--out", str(member), *extra])
        if rc:
            return rc
    if args.stage in ("all", "ensemble"):
        rc = main(["karyo", "ensemble", str(init), str(member), *COMMON, "--out", str(args.out)])
        if rc:
            return rc
        if args.out == SHIPPED:
            _provenance(args.out, (time.perf_counter() - t0) / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
