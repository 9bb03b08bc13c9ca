"""Chromosome rotation and polarity (METHODS.md §2). Work in progress: upright rotation and the
data pipeline are here; the polarity classifier's training, CLI and widget come next."""

from .rotate import foreground_mask, make_upright, projection_widths, rotate_image, upright_angle

__all__ = ["foreground_mask", "make_upright", "projection_widths", "rotate_image", "upright_angle"]
