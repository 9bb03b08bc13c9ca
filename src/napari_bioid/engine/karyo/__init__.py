"""Chromosome rotation and polarity (METHODS.md §2).

The chain: :func:`~.rotate.upright_angle` (minimum horizontal projection
width) → polarity ResNet (:mod:`.polarity`) → 180° if the short arm is down
(:mod:`.orient`). Training and evaluation on chain outputs: :mod:`.training`.
"""

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
