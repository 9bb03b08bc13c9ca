#!/usr/bin/env bash
# The main job end to end with the bioid CLI: train a small picker on real tomograms,
# pick an unseen tomogram, write CSV + STAR, and score the picks against the truth.
# Data: the DeepFinder toy tomograms beside the checkout (../shared/data/cryoet/deepfinder_toy).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
toy=${BIOID_SHARED:-$here/../shared}/data/cryoet/deepfinder_toy
out=$here/out/quickstart
mkdir -p "$out"
args=()
for i in 1 2 3 4 5 6; do args+=(--tomogram "$toy/tomo$i.mrc" --coords "$toy/tomo${i}_particles.csv"); done
bioid tomo train "${args[@]}" --val-tomogram "$toy/tomo6.mrc" --val-coords "$toy/tomo6_particles.csv" \
  --out "$out/picker.pt" --overwrite --merge-classes --diameter 11 --label-radius 4 \
  --epochs 10 --block-size 40 --pad-size 6 --channels 8,16,32 --lr 2e-3 --val-every 2
bioid tomo pick "$toy/tomo7.mrc" --model "$out/picker.pt" --out "$out/tomo7_picks.csv" --star "$out/tomo7_picks.star" --overwrite
bioid tomo evaluate "$out/tomo7_picks.csv" "$toy/tomo7_particles.csv" --tolerance 4
