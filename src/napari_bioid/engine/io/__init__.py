"""File I/O: tomograms and image stacks, coordinate tables, atomic writes."""

from .atomic import atomic_write, prepare_output
from .coords import (
    COORD_COLUMNS,
    read_coordinates,
    validate_coordinates,
    write_coordinates,
)
from .volumes import Volume, read_volume, write_mrc

__all__ = [
    "COORD_COLUMNS",
    "Volume",
    "atomic_write",
    "prepare_output",
    "read_coordinates",
    "read_volume",
    "validate_coordinates",
    "write_coordinates",
    "write_mrc",
]
