"""Small form helpers shared by the dock widgets."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

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


def run_controls(host, root, *actions):
    """The row of action buttons + *Cancel*, the progress bar and the status line of a WorkerHost widget.

    Sets ``host.cancel_btn``, ``host.progress`` and ``host.status`` (what WorkerHost expects) and adds them
    under ``root`` (a QVBoxLayout), the actions first."""
    from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton

    row = QHBoxLayout()
    host.cancel_btn = QPushButton("Cancel")
    host.cancel_btn.setEnabled(False)
    host.cancel_btn.setToolTip("stop at the next check point (nothing is written)")
    host.cancel_btn.clicked.connect(host.cancel)
    for b in (*actions[:1], host.cancel_btn, *actions[1:]):
        row.addWidget(b)
    root.addLayout(row)
    host.progress = QProgressBar()
    root.addWidget(host.progress)
    host.status = QLabel("")
    host.status.setWordWrap(True)
    root.addWidget(host.status)


def choose_path(parent, title: str, then, folder: bool = True, filt: str = "") -> None:
    """Ask for a folder (or, with ``folder=False``, a file matching ``filt``); call ``then(path)``, showing any error
    as a notification instead of raising it into Qt's event loop."""
    from pathlib import Path

    from qtpy.QtWidgets import QFileDialog

    from ._worker import notify_error

    start = str(Path.home())
    if folder:
        path = QFileDialog.getExistingDirectory(parent, title, start)
    else:
        path, _ = QFileDialog.getOpenFileName(parent, title, start, filt)
    if path:
        try:
            then(path)
        except Exception as exc:
            notify_error(exc)


def choose_folder(parent, title: str, then) -> None:
    """Ask for a folder; call ``then(path)``, showing any error as a notification."""
    choose_path(parent, title, then)


def path_row(placeholder: str, tip: str, filt: str = "", title: Optional[str] = None, folder: bool = False,
             then: Optional[Callable[[str], None]] = None, parent=None):
    """A path field with a "…" browse button: ``(QLineEdit, QHBoxLayout)``.

    ``filt``: the file dialog's filter (e.g. ``"Models (*.pt)"``); ``folder``:
    choose a folder instead of a file; ``title``: the dialog's title
    (default: ``placeholder``); ``then(path)`` runs after a choice is written
    into the field (an error it raises is shown to the user). Add more buttons to the returned row as needed.
    """
    from qtpy.QtWidgets import QHBoxLayout, QLineEdit, QPushButton

    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    edit.setToolTip(tip)
    btn = QPushButton("…")
    btn.setMaximumWidth(30)
    btn.setToolTip(f"choose {'a folder' if folder else 'a file'}")
    row = QHBoxLayout()
    row.addWidget(edit)
    row.addWidget(btn)

    def accept(path: str) -> None:
        edit.setText(path)
        if then is not None:
            then(path)

    def browse():
        choose_path(parent, title or placeholder, accept, folder, filt)

    btn.clicked.connect(browse)
    edit.browse = browse  # for tests and keyboard users' shortcuts
    return edit, row
