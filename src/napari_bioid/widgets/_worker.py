"""Running engine calls off the GUI thread, with progress and cancel."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Callable, Optional, Sequence

from qtpy.QtCore import QObject, Signal


def notify_error(exc) -> None:
    """Show an error (exception or text) as a napari notification; cancellation as "cancelled"."""
    from napari.utils.notifications import show_error

    from ..engine.errors import Cancelled

    show_error(str(exc) if not isinstance(exc, Cancelled) else "cancelled")


def warm_up_imports(modules: Sequence[str] = ("torch",)) -> threading.Thread:
    """Import heavy modules (torch: ~2 s) in a background thread, so no click waits for them on the GUI thread."""

    def run():
        import importlib

        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the action that needs it reports the error
                pass

    thread = threading.Thread(target=run, name="bioid-warm-up", daemon=True)
    thread.start()
    return thread


class _Failure:
    """An exception raised by a job, returned (not raised) so napari does not also report it with a traceback."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def notify(msg: str) -> None:
    from napari.utils.notifications import show_info

    show_info(msg)


class Relay(QObject):
    """Carries progress from a worker thread to the GUI thread (queued signal)."""

    progress = Signal(int, int, str)
    epoch = Signal(dict)


def run_in_worker(func: Callable, on_done: Callable, on_error: Callable, relay: Relay, cancel: threading.Event, on_finish: Optional[Callable] = None):
    """Start ``func(progress=..., cancel=...)`` in a napari worker thread.

    ``progress(done, total, message)`` calls from the engine are forwarded to
    ``relay.progress``; ``on_done(result)`` / ``on_error(exc)`` run in the
    GUI thread. Returns the started worker.
    """
    from napari.qt.threading import create_worker

    from ..engine.errors import Cancelled

    def job():
        try:
            return func(progress=lambda d, t, m="": relay.progress.emit(int(d), int(t), str(m)), cancel=cancel)
        except Cancelled as exc:  # a normal end, not an error
            return _Failure(exc)
        except Exception as exc:  # reported once, as one notification; the traceback goes to the log
            logging.getLogger("napari_bioid").error("worker failed", exc_info=sys.exc_info())
            return _Failure(exc)

    def returned(result):
        (on_error(result.exc) if isinstance(result, _Failure) else on_done(result))

    worker = create_worker(job, _start_thread=False)
    worker.returned.connect(returned)
    worker.errored.connect(on_error)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    worker.start()
    return worker


class WorkerHost:
    """Mixin for dock widgets that run one engine call at a time in a worker thread.

    The widget provides ``self.progress`` (QProgressBar), ``self.status``
    (QLabel), ``self.cancel_btn`` and ``_action_buttons()`` (disabled while
    busy); it calls :meth:`_init_worker` in ``__init__`` and :meth:`start` to
    run ``job(progress, cancel)``.
    """

    def _init_worker(self):
        self._cancel = threading.Event()
        self._worker = None
        self._relay = Relay()
        self._relay.progress.connect(self._on_progress)

    def _action_buttons(self):
        return []

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def _busy(self, busy: bool, what: str = ""):
        for w in self._action_buttons():
            w.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
        self.status.setText(what)
        if busy:
            self._cancel.clear()
            self.progress.setValue(0)

    def _on_progress(self, done: int, total: int, message: str):
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)
        if message:
            self.status.setText(message)

    def cancel(self):
        """Ask the running engine call to stop at its next check point."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def _failed(self, exc):
        from ..engine.errors import Cancelled

        if isinstance(exc, Cancelled):
            notify("cancelled")
            self.status.setText("cancelled")
        else:
            notify_error(exc)
            self.status.setText(f"failed: {exc}")

    def _finished(self):
        self._worker = None
        self._busy(False, self.status.text())

    def start(self, job: Callable, on_done: Callable, what: str):
        """Run ``job(progress, cancel)`` in a worker; ``on_done(result)`` in the GUI thread. Returns the worker."""
        self._busy(True, what)
        self._worker = run_in_worker(job, on_done, self._failed, self._relay, self._cancel, self._finished)
        return self._worker
