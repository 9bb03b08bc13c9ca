"""Running engine calls off the GUI thread, with progress and cancel."""

from __future__ import annotations

import threading
from typing import Callable, Optional

from qtpy.QtCore import QObject, Signal


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

    def job():
        return func(progress=lambda d, t, m="": relay.progress.emit(int(d), int(t), str(m)), cancel=cancel)

    worker = create_worker(job, _start_thread=False)
    worker.returned.connect(on_done)
    worker.errored.connect(on_error)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    worker.start()
    return worker
