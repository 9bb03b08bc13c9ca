"""napari-bioid: bio-image identification for napari.

The headless engine lives in :mod:`napari_bioid.engine` (no Qt, no napari);
dock widgets live in :mod:`napari_bioid.widgets`.
"""

__version__ = "0.1.0"
