"""Resumable runs: the training state is kept after every epoch, saved atomically, and read back by ``resume``.

Ctrl-C (or a crash, or a lost machine) during ``headstart fit`` leaves ``RUN/checkpoint/``: the
arguments of the fit (``fit.json``), and, once an epoch has finished, the weights being trained, the
AdamW and scheduler state, the best weights so far, the history and the random number generators.
``headstart resume RUN`` rebuilds the same data and model, skips the phases that had finished and
continues the interrupted one after its last finished epoch, with its frozen set (checked by the
freeze audit against the one recorded here), optimizer, scheduler and random state. On CPU the result is identical to a run
that was never interrupted (``tests/test_reliability.py`` checks it).

After every epoch the state is copied in memory (what trains, the optimizer, the random state: a
memory copy costs far less than a file); it is written to disk when ``every`` seconds (default
``WRITE_EVERY_SECONDS``) have passed since the last write, at the end of each phase, and by
:meth:`Checkpoint.flush` when the fit stops on Ctrl-C, a cancel or an error. So an interrupted run
still continues after its last finished epoch; only a killed process (SIGKILL, power loss) loses
up to ``every`` seconds of epochs, and short epochs no longer each pay for a file.

Each save writes a new tensor file, then ``state.json`` naming it (the commit point, written
atomically), then removes the older tensor file: an interruption at any moment leaves the previous
checkpoint or the new one, never a mix. Nothing is pickled: tensors go to safetensors, the rest to JSON.
"""

from __future__ import annotations

import contextlib
import errno
import json
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from headstart.errors import Unavailable
from headstart.freezing import check_frozen_set, frozen_parameter_names
from headstart.io import atomic_path, atomic_write_text
from headstart.rundir import ARGS_NAME, CHECKPOINT_DIR, STATE_NAME, remove_finished_files
from headstart.training.callbacks import Callback
from headstart.training.state import Best, TrainState

WRITE_EVERY_SECONDS = 30.0  # a killed process loses at most this much; Ctrl-C, cancel and errors lose nothing


def checkpoint_dir(run: str | Path) -> Path:
    return Path(run) / CHECKPOINT_DIR


def write_fit_args(run: str | Path, arguments: dict[str, Any]) -> None:
    """Record how a run was started (JSON values only), so that it can be resumed."""
    atomic_write_text(checkpoint_dir(run) / ARGS_NAME, json.dumps(arguments, indent=2))


def read_fit_args(run: str | Path) -> dict[str, Any]:
    path = checkpoint_dir(run) / ARGS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run}: nothing to resume (no {CHECKPOINT_DIR}/{ARGS_NAME}); the run finished or was not started by `headstart fit`")
    return json.loads(path.read_text(encoding="utf-8"))


def settle_failed_fit(run: Path, error: BaseException, *, resuming: bool) -> BaseException:
    """Leave ``run`` resumable or absent after ``error`` stopped a fit, never half-written; return the error to raise, saying which.

    Resumable: the checkpoint holds a finished epoch, or the run was being resumed, or Ctrl-C
    stopped it after it started (``fit.json`` is written once the model is built). Then any finished-run
    files (a final save cut short by a full disk) are removed: ``headstart resume`` writes them all.
    Otherwise the checkpoint goes, and ``run`` too if nothing else is in it: a start that failed
    leaves nothing that looks like an interrupted run.
    """
    folder = checkpoint_dir(run)
    started = (folder / ARGS_NAME).is_file()
    resumable = started and (resuming or (folder / STATE_NAME).is_file() or isinstance(error, KeyboardInterrupt))
    if resumable:
        remove_finished_files(run)
        outcome = f"the run is resumable: `headstart resume {run}` continues after its last finished epoch"
    else:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            run.rmdir()  # only when empty: a folder the user already had, or an overwritten run, stays
        outcome = f"nothing was saved in {run}"
    if isinstance(error, KeyboardInterrupt):
        return error if resumable and str(error) else KeyboardInterrupt(f"interrupted; {outcome}")
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {Path(error.filename).name}" if error.filename else ""
        reason = "no space left on the device" if error.errno == errno.ENOSPC else "disk quota exceeded"
        message = f"{run}: {reason}{where}; {outcome}" + (" once space is freed" if resumable else "; free space and run the command again")
        return Unavailable(message)
    return error


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(words), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached]}
    return meta, {"rng/torch": torch.get_rng_state()}


def _set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, words, gauss = meta["python"]
    random.setstate((version, tuple(words), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng/torch"])


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


class Checkpoint(Callback):
    """Keep the training state of ``run`` after every epoch (see the module docstring for when it is
    written); with ``resume=True``, first restore it.

    One instance follows one call of :func:`headstart.fit`: strategies call :func:`fit_model` once
    per phase (head warm-up, then fine-tuning), and the n-th ``on_fit_start`` is phase n.
    """

    def __init__(self, run: str | Path, *, resume: bool = False, write: bool = True, every: float | None = None) -> None:
        self.directory = checkpoint_dir(run)
        self.write = write  # False on torchrun ranks other than 0: they restore from the checkpoint but never write it
        self.every = WRITE_EVERY_SECONDS if every is None else every
        self.pending: tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None  # the last epoch's state, not yet written
        self.written_at = time.monotonic()
        self.phase_index = -1
        self.phase_ends: list[int] = []  # history length at the end of each finished phase
        self.saved: dict[str, Any] | None = None
        self.replaying = False
        self.frozen_file: tuple[int, str] | None = None  # (phase index, file) holding this phase's frozen parameters
        if resume:
            state_file = self.directory / STATE_NAME
            if state_file.is_file():
                self.saved = json.loads(state_file.read_text(encoding="utf-8"))
                self.saved["tensors"] = load_file(str(self.directory / self.saved["tensors_file"]))
                if self.saved.get("frozen_file"):  # written once per phase; older checkpoints hold every tensor in each file
                    self.saved["tensors"].update(load_file(str(self.directory / self.saved["frozen_file"])))
        elif write:
            for old in self.directory.glob("*"):  # an overwritten run starts afresh (its fit.json is written once the model is built)
                old.unlink() if old.is_file() else shutil.rmtree(old)

    def reset(self) -> None:
        """Forget saved progress (e.g. when the run restarts with a smaller batch)."""
        (self.directory / STATE_NAME).unlink(missing_ok=True)
        for old in [*self.directory.glob("tensors-*.safetensors"), *self.directory.glob("frozen-*.safetensors")]:
            old.unlink()
        self.phase_index, self.phase_ends, self.saved, self.replaying, self.frozen_file, self.pending = -1, [], None, False, None, None

    # -- hooks -------------------------------------------------------------------------------
    def on_fit_start(self, state: TrainState) -> None:
        self.phase_index += 1
        saved = self.saved
        self.replaying = saved is not None and (saved["phase_index"] > self.phase_index or saved["finished"])
        if saved is None or saved["phase_index"] < self.phase_index:
            return
        history = state.history
        self.phase_ends = saved["phase_ends"][: self.phase_index]
        if saved["phase_index"] > self.phase_index:  # finished before the interruption; a later phase holds the weights
            history.epochs[:] = saved["history"][: saved["phase_ends"][self.phase_index]]
            state.epochs_done, state.best = state.settings.epochs, Best()
            return
        tensors = saved["tensors"]
        history.epochs[:] = saved["history"]
        history.kept_epoch = saved["kept_epoch"]
        history.audits[:] = saved.get("audits", [])
        state.model.load_state_dict(_unprefixed("model", tensors))
        _set_rng_state(saved["rng"], tensors)
        self.saved = None  # restored: from here on this instance saves again
        if saved["finished"]:
            state.epochs_done, state.best = state.settings.epochs, Best()
            return
        check_frozen_set(state.model, saved["frozen"], phase=saved["phase"])  # before the optimizer state, whose groups follow it
        state.resumed = True
        optimizer_state = {"state": {}, "param_groups": saved["optimizer_groups"]}
        for key, value in _unprefixed("optimizer", tensors).items():
            index, name = key.split("/", 1)
            optimizer_state["state"].setdefault(int(index), {})[name] = value
        state.optimizer.load_state_dict(optimizer_state)
        state.scheduler.load_state_dict(saved["scheduler"])
        generator = getattr(state.train_loader, "generator", None)
        if generator is not None and "rng/loader" in tensors:
            generator.set_state(tensors["rng/loader"])
        best = saved["best"]
        best_state = _unprefixed("best", tensors) or None
        if best_state is not None:  # only what trains was saved; the frozen rest equals the model's own
            best_state = {**{k: v.clone() for k, v in state.model.state_dict().items()}, **best_state}
        done = len(saved["history"]) - (self.phase_ends[-1] if self.phase_ends else 0)
        patience = state.settings.patience
        if patience is not None and best["waited"] >= patience:
            done = state.settings.epochs  # early stopping had already decided
        state.epochs_done, state.best = done, Best(best["record"], best_state, best["epoch"], best["waited"])

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.write:
            return
        meta, tensors, frozen = self._snapshot(state, finished=False)
        if time.monotonic() - self.written_at >= self.every:
            self._write(meta, tensors, frozen)
        else:  # the live tensors change in place during the next epoch: keep copies
            self.pending = (meta, {k: v.clone() for k, v in tensors.items()}, frozen)

    def on_fit_end(self, state: TrainState) -> None:
        if self.replaying:
            self.replaying = False
            self.phase_ends.append(len(state.history.epochs))
            return
        self.phase_ends.append(len(state.history.epochs))
        if self.write:
            self._write(*self._snapshot(state, finished=True))

    def flush(self) -> None:
        """Write the last finished epoch's state if it is not on disk yet (the fit is stopping)."""
        if self.pending is not None:
            self._write(*self.pending)

    # -- storage -----------------------------------------------------------------------------
    def _snapshot(self, state: TrainState, *, finished: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """What a checkpoint holds now: JSON metadata (copied), the tensors to write, and the phase's frozen parameters."""
        rng_meta, tensors = _rng_state()
        frozen = frozen_parameter_names(state.model)
        weights = state.model.state_dict()
        tensors.update(_prefixed("model", {k: v for k, v in weights.items() if k not in frozen}))
        meta: dict[str, Any] = {
            "phase": state.phase,
            "phase_index": self.phase_index,
            "phase_ends": self.phase_ends,
            "finished": finished,
            "history": state.history.epochs,
            "kept_epoch": state.history.kept_epoch,
            "audits": state.history.audits,
            "frozen": sorted(frozen_parameter_names(state.model)),
            "rng": rng_meta,
        }
        if not finished:
            optimizer = state.optimizer.state_dict()
            for index, values in optimizer["state"].items():
                tensors.update(_prefixed(f"optimizer/{index}", {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}))
            meta["optimizer_groups"] = optimizer["param_groups"]
            meta["scheduler"] = state.scheduler.state_dict()
            best = state.best
            meta["best"] = {"record": best.record, "epoch": best.epoch, "waited": best.waited}
            if best.weights is not None:
                tensors.update(_prefixed("best", {k: v for k, v in best.weights.items() if k not in frozen}))
            generator = getattr(state.train_loader, "generator", None)
            if generator is not None:
                tensors["rng/loader"] = generator.get_state()
        return json.loads(json.dumps(meta)), tensors, {k: v for k, v in weights.items() if k in frozen}  # frozen: unchanged within the phase

    def _write(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor], frozen: dict[str, torch.Tensor]) -> None:
        meta["frozen_file"] = self._frozen_file(frozen)
        name = f"tensors-{uuid.uuid4().hex[:12]}.safetensors"
        meta["tensors_file"] = name
        with atomic_path(self.directory / name) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_text(self.directory / STATE_NAME, json.dumps(meta))
        for old in [*self.directory.glob("tensors-*.safetensors"), *self.directory.glob("frozen-*.safetensors")]:
            if old.name not in (name, meta["frozen_file"]):
                old.unlink(missing_ok=True)
        self.pending, self.written_at = None, time.monotonic()

    def _frozen_file(self, frozen: dict[str, torch.Tensor]) -> str | None:
        """The file of this phase's frozen parameters, written at the phase's first save.

        They do not change within a phase (the freeze audit checks it), so writing them with every
        epoch (a MiniLM body is ~90 MB, once for the weights and once for the best weights) was
        paying for nothing. They are kept, not only fingerprinted: a custom strategy may freeze a
        block that an earlier phase trained.
        """
        if not frozen:
            return None
        if self.frozen_file is None or self.frozen_file[0] != self.phase_index:
            name = f"frozen-{uuid.uuid4().hex[:12]}.safetensors"
            with atomic_path(self.directory / name) as tmp:
                save_file(_prefixed("model", frozen), str(tmp))
            self.frozen_file = (self.phase_index, name)
        return self.frozen_file[1]
