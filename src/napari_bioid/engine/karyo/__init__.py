"""Chromosome rotation and polarity (METHODS.md §2). Work in progress: upright rotation and the
data pipeline are here; the polarity classifier's training, CLI and widget come next."""

from .data import Crop, list_crops, read_crop, split_by_case, to_classifier_input
from .rotate import foreground_mask, make_upright, projection_widths, rotate_image, upright_angle

__all__ = [
    "Crop", "foreground_mask", "list_crops", "make_upright", "projection_widths", "read_crop", "rotate_image",
    "split_by_case", "to_classifier_input", "upright_angle",
]
