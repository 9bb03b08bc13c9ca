"""Does a polarity network made for one other lab read that lab's crops better? (issue 15, a measurement, not a model)

    python benchmarks/karyo_lab_specialist.py [--shift lab:3] [--member 1] [--epochs 12] [--lr 0.01] [--out FILE]

Fine-tunes one member of the shipped ensemble on the training cases imaged by
:func:`napari_bioid.engine.karyo.shift.shift_crop` at one shift only (4 random angles per crop), then prints the
errors on the validation cases (never the test cases):

- on chain sets (4 angles per crop, one view): of that shift and of our own crops, for the shipped ensemble, the
  member and the specialist;
- through the deployed chain (``training.evaluate_orient``, test-time turns on, the shipped temperature) at the
  levels of ``compare_karyo_models.py``'s default list but in-domain.

Measured 2026-11-23 (lab level 3, member 1, 12 epochs, lr 0.01, 11 minutes on 2 CPU cores): lab-3 chain set 124
errors of 6,256 (member 1: 187, shipped four: 174); our own 395 (60, 45); deployed chain lab 3 37 / 30, scale 0.3
25, lab 2 22 (shipped: 37 / 33, 18, 19). A specialist reads its lab better and forgets ours.
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_karyo_models import DEFAULT_LEVELS, parse_levels, parse_shift  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shift", default="lab:3", help="kind:level of shift_crop the specialist learns")
    ap.add_argument("--member", type=int, default=1, help="which member of the shipped ensemble to start from")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=None, help="save the specialist's weights (torch state dict) here")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "chromosomes" / "karyogram_crops")
    args = ap.parse_args()
    try:
        shift = parse_shift(args.shift)
    except ValueError as exc:
        ap.error(str(exc))
    if shift is None:
        ap.error("--shift must be another lab's imaging (kind:level), not none")
    kind, level = shift[0], f"{shift[1]:g}"

    import torch

    from napari_bioid.engine.karyo import load_polarity_model
    from napari_bioid.engine.karyo.training import _split, build_chain_set, evaluate_orient, evaluate_polarity, train_polarity

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    ship = load_polarity_model(None)
    gate = ship.metrics["centred_fine_tuning"]["training_gate"]
    train, val, _test = _split(args.data, 0.3, 0.1, 0)  # the shipped training's split
    tr = build_chain_set(train, ship.size, 4, seed=71, workers=2, shift=shift, straighten=gate, small=None)
    sets = {f"{kind} {level}": build_chain_set(val, ship.size, 4, seed=72, workers=2, shift=shift, straighten=ship.straighten, small=None),
            "in-domain": build_chain_set(val, ship.size, 4, seed=73, workers=2, straighten=ship.straighten, small=None)}
    one_view = copy.copy(ship)
    one_view.views_below, one_view.turns_below, one_view.small_expert = 0.0, 0.0, None
    member = copy.copy(one_view)
    member.net, member.members = ship.net.members[args.member], 1
    spec = train_polarity(tr, sets[f"{kind} {level}"], epochs=args.epochs, lr=args.lr, init=member, seed=3,
                          on_epoch=lambda r: print(json.dumps(r), flush=True))
    spec.straighten = ship.straighten
    if args.out:
        torch.save({"state": spec.net.state_dict()}, args.out)
    for name, s in sets.items():
        for who, m in (("shipped four", one_view), (f"member {args.member}", member), ("specialist", spec)):
            r = evaluate_polarity(m, s)
            print(f"chain set {name}: {who}: {r['fp'] + r['fn']} errors of {r['n']}", flush=True)
    deployed = copy.copy(ship)
    deployed.net, deployed.members = spec.net, 1
    for lv, seed in parse_levels(DEFAULT_LEVELS):
        if lv is None:
            continue
        r = evaluate_orient(deployed, val, seed=seed, shift=lv)
        print(f"deployed chain {lv} seed {seed}: specialist {r['fp'] + r['fn']} errors of {r['n']}, ECE {r['ece']:.4f}", flush=True)
    print(f"{(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
