"""napari dock widgets (Qt). Thin layers over :mod:`napari_bioid.engine`."""
