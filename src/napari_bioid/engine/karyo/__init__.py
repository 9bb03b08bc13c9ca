"""Chromosome rotation and polarity (METHODS.md §2).

The chain: :func:`~.rotate.upright_angle` (minimum horizontal projection
width) → polarity ResNet (:mod:`.polarity`) → 180° if the short arm is down
(:mod:`.orient`). Training and evaluation on chain outputs: :mod:`.training`.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

# Names are loaded on first use (PEP 562) so that importing a light submodule (a widget's
# helpers, file formats) does not import torch.
_WHERE = {
    "Crop": "data",
    "list_crops": "data",
    "read_crop": "data",
    "read_image": "data",
    "split_by_case": "data",
    "to_classifier_input": "data",
    "to_square": "data",
    "Decision": "orient",
    "crops_from_labels": "orient",
    "list_images": "orient",
    "orient_folder": "orient",
    "orient_images": "orient",
    "oriented_image": "orient",
    "read_decisions": "orient",
    "write_decisions": "orient",
    "write_oriented": "orient",
    "PolarityModel": "polarity",
    "load_polarity_model": "polarity",
    "save_polarity_model": "polarity",
    "foreground_mask": "rotate",
    "make_upright": "rotate",
    "projection_widths": "rotate",
    "rotate_image": "rotate",
    "upright_angle": "rotate",
}


__getattr__ = lazy_getattr(__name__, _WHERE, globals())


if TYPE_CHECKING:  # pragma: no cover
    from .data import Crop, list_crops, read_crop, read_image, split_by_case, to_classifier_input, to_square
    from .orient import Decision, crops_from_labels, list_images, orient_folder, orient_images, oriented_image, read_decisions, write_decisions, write_oriented
    from .polarity import PolarityModel, load_polarity_model, save_polarity_model
    from .rotate import foreground_mask, make_upright, projection_widths, rotate_image, upright_angle

__all__ = [
    "Crop", "Decision", "PolarityModel", "crops_from_labels", "foreground_mask", "list_crops", "list_images",
    "load_polarity_model", "make_upright", "orient_folder", "orient_images", "oriented_image", "projection_widths",
    "read_crop", "read_decisions", "read_image", "rotate_image", "save_polarity_model", "split_by_case",
    "to_classifier_input", "to_square", "upright_angle", "write_decisions", "write_oriented",
]
