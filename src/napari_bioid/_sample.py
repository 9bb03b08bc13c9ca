"""npe2 sample data: the bundled simulated tomogram with its truth picks."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"  # inside the package: ships in the wheel


def sample_tomogram():
    """Image layer of the bundled ``sample_data/sample_tomogram.mrc`` and a points layer of its truth."""
    from ._reader import read_coordinates_layer, read_tomogram_layer

    image = read_tomogram_layer(SAMPLE_DIR / "sample_tomogram.mrc")
    image[0][1]["metadata"]["sample"] = True  # annotations of the sample autosave to the user's folder, not the install
    truth = read_coordinates_layer(SAMPLE_DIR / "sample_truth.csv")
    truth[0][1]["name"] = "sample truth"
    return image + truth
