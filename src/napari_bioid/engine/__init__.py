"""Headless inference and training engine of napari-bioid.

Nothing under this package imports Qt or napari (``tests/test_headless.py``
enforces it), so everything here runs from the ``bioid`` CLI, from Python
scripts and from the dock widgets' worker threads alike.

Subpackages: ``io`` (volumes, coordinate tables), ``nn`` (network building
blocks), ``train`` (optimisers, checkpoints), ``tomo`` (particle picking).
"""

from .errors import BioidInputError, Cancelled
from .progress import ProgressCallback, check_cancel, report

__all__ = ["BioidInputError", "Cancelled", "ProgressCallback", "check_cancel", "report"]
