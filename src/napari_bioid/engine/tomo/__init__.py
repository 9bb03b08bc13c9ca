"""Particle picking in cryo-electron tomograms (METHODS.md §1, after DeepETPicker).

Typical use::

    from napari_bioid.engine.io import read_volume, read_coordinates
    from napari_bioid.engine.tomo import PickerConfig, train_picker, pick

    vol = read_volume("tomo.mrc")
    model = train_picker([vol], [read_coordinates("clicks.csv")], PickerConfig(voxel_size=vol.voxel_size))
    picks = pick(vol.data, model).picks
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

# Names are loaded on first use (PEP 562) so that importing a light submodule (a widget's
# helpers, file formats) does not import torch.
_WHERE = {
    "PickerConfig": "config",
    "PickerModel": "config",
    "ParticleClass": "config",
    "load_picker": "config",
    "evaluate_picks": "evaluate",
    "match_points": "evaluate",
    "Segmentation": "inference",
    "segment": "inference",
    "label_kernel": "labels",
    "make_weak_labels": "labels",
    "avgpool_peaks": "nms",
    "find_candidates": "nms",
    "prune_picks": "nms",
    "DEFAULT_MIN_SCORE": "picking",
    "DEFAULT_THRESHOLD": "picking",
    "PickResult": "picking",
    "pick": "picking",
    "pick_chunked": "picking",
    "Augmenter": "sampler",
    "SubtomogramSampler": "sampler",
    "train_picker": "training",
    "validation_f1": "training",
}


__getattr__ = lazy_getattr(__name__, _WHERE, globals())


if TYPE_CHECKING:  # pragma: no cover
    from .config import PickerConfig, PickerModel, ParticleClass, load_picker
    from .evaluate import evaluate_picks, match_points
    from .inference import Segmentation, segment
    from .labels import label_kernel, make_weak_labels
    from .nms import avgpool_peaks, find_candidates, prune_picks
    from .picking import DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, PickResult, pick, pick_chunked
    from .sampler import Augmenter, SubtomogramSampler
    from .training import train_picker, validation_f1

__all__ = [
    "Augmenter", "DEFAULT_MIN_SCORE", "DEFAULT_THRESHOLD", "ParticleClass", "PickResult", "PickerConfig", "PickerModel",
    "Segmentation", "SubtomogramSampler", "avgpool_peaks", "evaluate_picks", "find_candidates", "label_kernel",
    "load_picker", "make_weak_labels", "match_points", "pick", "pick_chunked", "prune_picks", "segment", "train_picker", "validation_f1",
]
