"""The shared form helpers: a path row fills its field from the dialog and shows a bad choice as an error."""


def test_path_row_fills_the_field_calls_back_and_reports_a_bad_choice(qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog, QWidget

    from napari_bioid.widgets import _form, _worker

    host = QWidget()
    qtbot.addWidget(host)
    errors, chosen = [], []
    monkeypatch.setattr(_worker, "notify_error", lambda e: errors.append(e))
    model = tmp_path / "m.pt"
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a: (str(model), "Models (*.pt)")))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a: str(tmp_path)))

    edit, row = _form.path_row("model", "a model", "Models (*.pt)", then=chosen.append, parent=host)
    edit.browse()
    assert edit.text() == str(model) and chosen == [str(model)] and not errors

    def refuse(path):
        raise ValueError(f"{path}: not a model")

    folder, _ = _form.path_row("folder", "a folder", folder=True, then=refuse, parent=host)
    folder.browse()  # the error is shown, not raised into Qt's event loop
    assert folder.text() == str(tmp_path) and len(errors) == 1 and "not a model" in str(errors[0])

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a: ("", "")))  # dialog cancelled
    edit.browse()
    assert edit.text() == str(model) and chosen == [str(model)]
