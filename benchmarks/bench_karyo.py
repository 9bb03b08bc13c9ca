"""Speed of the chromosome chain on real crops: upright rotation, polarity classification, whole chain.

    python benchmarks/bench_karyo.py [--n 500] [--model M] [--shift lab,3]

Prints milliseconds per crop for the projection-width search alone, for the search plus the
rotation, and crops per second for the classifier (batch 64) and for the whole chain
(`orient_images`: read → rotate upright → classify), on `--n` crops of the held-out cases.
`--shift KIND,LEVEL` first makes them another lab's crops (engine/karyo/shift.shift_crop), e.g. `lab,3`:
small crops, most of which the small-crop expert classifies too.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from napari_bioid.engine.karyo import list_crops, load_polarity_model, make_upright, orient_images, read_crop, split_by_case, upright_angle

ROOT = Path(__file__).resolve().parents[1]
ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=500)
ap.add_argument("--model", type=Path, default=None)
ap.add_argument("--shift", default=None, help="KIND,LEVEL of shift_crop, e.g. lab,3")
args = ap.parse_args()

crops = split_by_case(list_crops(ROOT.parent / "shared" / "data" / "chromosomes" / "karyogram_crops"), 0.3, seed=0)[1][: args.n]
t = time.perf_counter()
images = [read_crop(c.path) for c in crops]
t_read = (time.perf_counter() - t) / len(crops)
if args.shift:
    from napari_bioid.engine.karyo.shift import shift_crop

    kind, level = args.shift.split(",")
    rng = np.random.default_rng(0)
    images = [shift_crop(im, kind, float(level), rng) for im in images]
print(f"{len(crops)} crops, median shape {np.median([im.shape for im in images], axis=0).astype(int).tolist()}, torch threads {torch.get_num_threads()}")
print(f"read:                      {1e3 * t_read:7.2f} ms/crop")
t = time.perf_counter()
for im in images:
    upright_angle(im)
print(f"upright angle (180 angles): {1e3 * (time.perf_counter() - t) / len(images):7.2f} ms/crop")
t = time.perf_counter()
uprights = [make_upright(im)[0] for im in images]
print(f"angle + rotation:          {1e3 * (time.perf_counter() - t) / len(images):7.2f} ms/crop")
model = load_polarity_model(args.model)
print(f"model: {'' if model.members == 1 else f'ensemble of {model.members} × '}ResNet-{model.depth} width {model.width}, "
      f"{model.size}² input, {sum(p.numel() for p in model.net.parameters()) / 1e6:.2f} M parameters, "
      f"mirror averaging {'on' if model.mirror else 'off'}")
if model.small_expert is not None:
    e = model.small_expert
    print(f"small-crop expert: {e.members} × ResNet-{e.depth} width {e.width}, {e.size}² canvas, for chromosomes ≤ "
          f"{model.small_max_side} px long: {sum(model.small_input(u) is not None for u in uprights)} of these {len(uprights)}")
t = time.perf_counter()
model.p_up(uprights, batch_size=64)
print(f"classifier:                {len(uprights) / (time.perf_counter() - t):7.1f} crops/s")
t = time.perf_counter()
orient_images(images, model=model)
print(f"whole chain:               {len(images) / (time.perf_counter() - t):7.1f} crops/s (excluding reading)")
