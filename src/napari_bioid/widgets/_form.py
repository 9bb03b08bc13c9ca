"""Small form helpers shared by the dock widgets."""

from __future__ import annotations

from typing import Sequence

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QSpinBox


def spin(lo, hi, value, step=None, suffix="", special="", decimals=None):
    """A QSpinBox (int bounds) or QDoubleSpinBox (float bounds) set up in one call."""
    box = QDoubleSpinBox() if isinstance(lo, float) or isinstance(value, float) else QSpinBox()
    if decimals is not None:
        box.setDecimals(decimals)
    box.setRange(lo, hi)
    if step is not None:
        box.setSingleStep(step)
    box.setSuffix(suffix)
    box.setSpecialValueText(special)
    box.setValue(value)
    return box


def refill_combo(combo: QComboBox, names: Sequence[str]) -> None:
    """Replace a combo box's items, keeping the current choice where it is still offered (no change signals)."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(names))
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)
