"""Particle picking in cryo-electron tomograms (METHODS.md §1, after DeepETPicker).

Typical use::

    from napari_bioid.engine.io import read_volume, read_coordinates
    from napari_bioid.engine.tomo import PickerConfig, train_picker, pick

    vol = read_volume("tomo.mrc")
    model = train_picker([vol], [read_coordinates("clicks.csv")], PickerConfig(voxel_size=vol.voxel_size))
    picks = pick(vol.data, model).picks
"""

from .config import PickerConfig, PickerModel, ParticleClass, load_picker
from .evaluate import evaluate_picks, match_points
from .inference import Segmentation, segment
from .labels import label_kernel, make_weak_labels
from .nms import avgpool_peaks, find_candidates, prune_picks
from .pick import DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, PickResult, pick
from .sampler import Augmenter, SubtomogramSampler
from .training import train_picker, validation_f1

__all__ = [
    "Augmenter", "DEFAULT_MIN_SCORE", "DEFAULT_THRESHOLD", "ParticleClass", "PickResult", "PickerConfig", "PickerModel",
    "Segmentation", "SubtomogramSampler", "avgpool_peaks", "evaluate_picks", "find_candidates", "label_kernel",
    "load_picker", "make_weak_labels", "match_points", "pick", "prune_picks", "segment", "train_picker", "validation_f1",
]
