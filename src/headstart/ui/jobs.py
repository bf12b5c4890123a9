"""The one background job (advice, training or resume) and the training callback that feeds the page its curves."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from headstart.errors import error_line, is_user_error
from headstart.training.callbacks import Callback
from headstart.training.state import TrainState

log = logging.getLogger("headstart.ui")

class Busy(RuntimeError):
    """A job is running; the server does one at a time."""


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities (an empty validation split) become ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JobRunner:
    """Runs one job (advice, training, resume) at a time on a background thread; :meth:`snapshot` is what the page polls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: TrainState = {"status": "idle", "id": 0}

    def start(self, kind: str, title: str, work: Callable[[JobRunner], dict[str, Any]], **info: Any) -> dict[str, Any]:
        with self._lock:
            if self._state["status"] == "running":
                started = datetime.fromtimestamp(self._state["started"]).strftime("%H:%M:%S")
                raise Busy(f"{self._state['title']} is still running (started {started}); one job at a time: wait for it to finish or cancel it")
            self._cancel.clear()
            self._state = {"id": self._state["id"] + 1, "kind": kind, "title": title, "status": "running", "started": time.time(), "ended": None,
                           "phase": None, "phase_epochs": None, "epochs": [], "message": "", "result": None, "cancel_requested": False, **info}  # fmt: skip
            self._thread = threading.Thread(target=self._run, args=(work,), name=f"headstart-ui-{kind}", daemon=True)
            self._thread.start()
        return self.snapshot()

    def _run(self, work: Callable[[JobRunner], dict[str, Any]]) -> None:
        try:
            self.update(status="done", result=work(self))
        except KeyboardInterrupt:
            epochs = self.snapshot()["epochs"]
            kept = f"after epoch {epochs[-1]['epoch']}" if epochs else "before the first epoch ended"
            self.update(status="cancelled", message=f"Stopped {kept}. The run is kept: resume it from Past runs (or `headstart resume`).")
        except Exception as error:  # noqa: BLE001 - the page gets one line, the terminal the traceback of a bug
            if is_user_error(error):
                self.update(status="failed", message=error_line(error))
                return
            log.exception("job %s failed", self._state.get("title"))
            self.update(status="failed", message=f"unexpected error ({type(error).__name__}: {error_line(error)}); the terminal running `headstart ui` shows the details")
        finally:
            self.update(ended=time.time())

    def update(self, **values: Any) -> None:
        with self._lock:
            self._state.update(values)

    def add_epoch(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._state["epochs"].append(record)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = {**self._state, "epochs": list(self._state.get("epochs", []))}
        if state.get("started"):
            state["elapsed"] = (state["ended"] or time.time()) - state["started"]
        return _finite(state)

    def cancel(self) -> dict[str, Any]:
        with self._lock:
            if self._state["status"] != "running":
                raise ValueError("nothing is running, so there is nothing to cancel")
            self._cancel.set()
            self._state["cancel_requested"] = True
        return self.snapshot()

    def check_cancel(self) -> None:
        """Raise ``KeyboardInterrupt`` when the page asked to cancel (called at safe points only)."""
        if self._cancel.is_set():
            raise KeyboardInterrupt("cancelled from the page")

    def running(self) -> bool:
        with self._lock:
            return self._state["status"] == "running"

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


EPOCH_KEYS = ("epoch", "phase", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")


class LiveProgress(Callback):
    """Copies each epoch's record into the job (the page's curves) and cancels at epoch ends.

    Registered after :func:`fit`'s own :class:`~headstart.training.checkpoint.Checkpoint`, so by the time
    :meth:`on_epoch_end` raises, the epoch is saved: the run stops as on Ctrl-C, resumable.
    """

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    def on_fit_start(self, state: TrainState) -> None:
        self.runner.check_cancel()
        done = [{k: r.get(k) for k in EPOCH_KEYS} for r in state.history.epochs]  # a resumed run's earlier epochs
        self.runner.update(phase=state.phase, phase_epochs=state.settings.epochs, phase_first=len(done), epochs=done)

    def on_epoch_end(self, state: TrainState) -> None:
        self.runner.add_epoch({k: state.record.get(k) for k in EPOCH_KEYS})
        self.runner.check_cancel()
