"""The Python API: ``fit``, ``evaluate``, ``predict`` and ``from_pretrained``; the CLI calls these.

>>> import headstart
>>> run = headstart.fit("data/pets", backbone="efficientnet_lite0", strategy="feature-extraction")
>>> run.metrics["test"]["accuracy"]
>>> headstart.predict(run.directory, ["cat.jpg"])

Why this module is long: ``fit`` spells out every option of :class:`headstart.config.FitConfig` as a
keyword (one line each, held to the config by ``tests/test_config.py``) so that editors and
``help(headstart.fit)`` show them; the rest is the recipe of one fit as named steps.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from headstart import __version__
from headstart.backbones import match_data
from headstart.caches.embeddings import EmbeddingCache
from headstart.caches.images import image_cache
from headstart.config import ADVICE_KEYS, FitConfig, parameters_doc
from headstart.data import Dataset, load_dataset
from headstart.data.preprocessing import TextPreprocessing, text_length_note
from headstart.freezing import freeze_report
from headstart.inference import prediction_records, score_split
from headstart.metrics import describe, headline
from headstart.model import TransferModel
from headstart.progress import Progress
from headstart.report.interpret import interpret_held_out
from headstart.report.tracking import Tracker, make_tracker
from headstart.rundir import check_new_run_dir, default_run_dir, write_run_files
from headstart.strategies import FitContext, Strategy, make_strategy
from headstart.tasks import get_task
from headstart.training import distributed
from headstart.training.callbacks import Callback
from headstart.training.checkpoint import Checkpoint, checkpoint_dir, read_fit_args, settle_failed_fit, write_fit_args
from headstart.training.loop import default_precision, seed_everything
from headstart.training.regularizers import L2SP, make_penalties
from headstart.training.state import History


@dataclass
class Run:
    """The result of :func:`fit`: the trained model, its curves and held-out metrics, and where it was saved."""

    model: TransferModel
    history: History
    metrics: dict[str, Any]
    directory: Path | None
    dataset: dict[str, Any]
    seconds: float
    predictions: dict[str, Any] = field(default_factory=dict)
    advice: dict[str, Any] | None = None
    interpretation: dict[str, Any] | None = None  # top losses and feature projection of the held-out split (interpretation.json)


def fit(
    data: str | Path | Dataset,
    *,
    backbone: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    strategy: str | Strategy = "feature-extraction",
    budget: str | float | None = None,
    out: str | Path | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    body_lr: float | None = None,
    patience: int | None | str = "default",
    monitor: str | None = None,
    trainable_blocks: int | None = None,
    freeze: float | None = None,
    batchnorm: str | None = None,
    head_warmup: bool | None = None,
    layer_decay: float | None = None,
    block_lrs: tuple[float, float] | dict[str, float] | None = None,
    l2sp: float | None = None,
    bss: float | None = None,
    unfreeze_blocks: int | None = None,
    lora_rank: int | None = None,
    label_templates: int | None = None,
    accumulate: int | None = None,
    grad_clip: float | None | str = "default",
    precision: str | None = None,
    torch_compile: bool | None = None,
    cut: str | int | None = None,
    hidden: int | None = None,
    dropout: float = 0.0,
    augment: str | None = None,
    augment_on: str = "auto",
    image_size: int | None = None,
    max_length: int | None = None,
    long_text: str | None = None,
    tta: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    overwrite: bool = False,
    save: bool = True,
    quiet: bool = False,
    cache_dir: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    task: str = "auto",
    label_delimiter: str = "|",
    loss: str | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    report: bool = True,
    log_to: str | None = None,
    log_uri: str | None = None,
) -> Run:
    """Train a classifier on ``data`` by transfer from ``backbone`` and (by default) save the run.

    ``strategy="auto"`` asks :func:`headstart.analysis.advisor.advise` (size and layer-wise profile of
    ``data``) and uses its strategy and settings, except those passed explicitly. The options are
    the fields of :class:`headstart.config.FitConfig` (listed below with the texts of ``headstart fit --help``);
    :func:`fit_config` takes them as one object.

    Parameters
    ----------
    data : path or Dataset
        An image folder (class sub-folders, optional train/val/test) or a CSV/TSV/JSONL file.
    callbacks : sequence of Callback, default=()
        Called by every training phase (see :class:`headstart.training.callbacks.Callback`).
    """
    return fit_config(data, FitConfig.from_arguments(locals()), callbacks=callbacks)


fit.__doc__ = (fit.__doc__ or "").rstrip() + "\n" + parameters_doc()


def fit_config(data: str | Path | Dataset, config: FitConfig, *, callbacks: Sequence[Callback] = ()) -> Run:
    """:func:`fit` with its options in one :class:`FitConfig`: what ``headstart fit`` and :func:`resume` call.

    The recipe: check the run directory, read the data, measure it when ``strategy="auto"``, build
    the strategy and the model, train, score the held-out splits, save the run and its report.
    """
    config.validate()
    arguments = {"data": str(data) if isinstance(data, Path) else data, **config.saved_arguments()}  # saved in the checkpoint so that `resume` can repeat the call
    started = time.perf_counter()
    distributed.setup()  # under torchrun: join the group; only rank 0 writes files and prints
    main = distributed.is_main()
    quiet = config.quiet or not main
    directory = _run_directory(data, config, main)
    with _settled_on_failure(directory if main else None, resuming=config.resume):
        return _fit(data, config, arguments, directory, started=started, main=main, quiet=quiet, callbacks=callbacks)


def _fit(data: str | Path | Dataset, config: FitConfig, arguments: dict[str, Any], directory: Path | None, *,
         started: float, main: bool, quiet: bool, callbacks: Sequence[Callback]) -> Run:  # fmt: skip
    """The body of :func:`fit_config` once the run directory is checked."""
    checkpoint = Checkpoint(directory, resume=config.resume, write=main) if directory is not None else None
    dataset = data if isinstance(data, Dataset) else load_dataset(data, text_column=config.text_column, label_column=config.label_column, seed=config.seed,
                                                                                       task=config.task, label_delimiter=config.label_delimiter)  # fmt: skip
    if config.loss is not None and dataset.task != "regression":
        raise ValueError(f"--loss {config.loss} applies to a regression target; {dataset.source} is read as {dataset.task} (pass --task regression if its labels are numbers)")
    task = get_task(dataset.task, loss=config.loss)
    target = task.fit_encoding(dataset.labels("train"))  # regression: the training targets' mean and std, saved with the run
    config, advice = _with_advice(dataset, config, quiet)
    strategy = config.strategy if isinstance(config.strategy, Strategy) else make_strategy(config.strategy, **config.strategy_options())
    config.validate(strategy.name)
    precision_line = None
    if config.precision is None and isinstance(config.strategy, str):  # a Strategy object's settings are the caller's own
        precision, precision_line = default_precision(distributed.device())
        strategy.settings = replace(strategy.settings, precision=precision)

    def build() -> TransferModel:
        seed_everything(config.seed)
        model = TransferModel.from_backbone(config.backbone, dataset.classes, cut=config.cut, hidden=config.hidden, dropout=config.dropout, pretrained=strategy.pretrained,
                                            weights=config.weights, task=task, target=target)  # fmt: skip
        match_data(model.backbone, dataset, image_size=config.image_size, tta=config.tta, max_length=config.max_length, long_text=config.long_text)
        return model.to(distributed.device()).fast_layout()

    model = build()
    if directory is not None and not config.resume and main:  # only now: a start that fails to build leaves nothing to "resume"
        write_fit_args(directory, {**arguments, **advice.settings, "data": str(Path(dataset.source).resolve()) if not isinstance(data, Dataset) else None,
                                   "strategy": strategy.name if isinstance(config.strategy, str) else None})  # fmt: skip
    tracker = None if not main else make_tracker(config.log_to, uri=config.log_uri, directory=directory,
                                                 experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"headstart-{Path(dataset.source).stem}")  # fmt: skip
    if tracker is not None:
        tracker.start(directory.name if directory is not None else "headstart", arguments)
    with _abort_tracker_on_error(tracker):
        with Progress(quiet=quiet) as progress:
            summary = dataset.summary()
            _log_data(progress, dataset, summary, advice.lines)
            text_lengths = _log_text_lengths(progress, model, dataset)
            ctx = FitContext(progress=progress, cache=EmbeddingCache(config.cache_dir), images=image_cache(config.cache_dir), batch_size=config.batch_size, seed=config.seed,
                             augment=config.augment, augment_on=config.augment_on, callbacks=[*([checkpoint] if checkpoint else []), *([tracker] if tracker else []), *callbacks],
                             penalties=make_penalties(model, l2sp=config.l2sp, bss=config.bss))  # fmt: skip
            if precision_line is not None:
                progress.log(precision_line)
            if config.resume:
                progress.log(f"resuming {directory} from its checkpoint")
            history, model = _run_strategy(strategy, model, build, dataset, ctx, checkpoint, directory)
            overfit = history.overfitting()
            if overfit["detected"]:
                progress.log(f"warning: {overfit['message']}")
            metrics, predictions, scored = _held_out(model, dataset, ctx)
            if text_lengths is not None:
                metrics["text_lengths"] = text_lengths
            explain = main and (directory is not None or tracker is not None) and task.name == "classification"  # heat maps and projection read class probabilities
            interpretation = interpret_held_out(model, dataset, scored, ctx.progress, cache=ctx.cache, batch_size=ctx.batch_size) if explain else None
            seconds = time.perf_counter() - started
            kept = history.kept()
            if kept is not None:
                progress.log(f"kept: {kept['sentence']}")
            if "test" in metrics:
                extra = f"; balanced accuracy {describe(metrics['test'], 'balanced_accuracy')}" if task.name == "classification" else ""
                progress.log(f"{headline(metrics['test'])}{extra}; {seconds:.0f}s")
        model.train()  # the modes training used: frozen blocks' BatchNorm in eval (as `headstart summary` shows)
        blocks = freeze_report(model).to_rows()
        run = Run(model.eval(), history, metrics, directory, summary, seconds, predictions, advice.record, interpretation.data if interpretation else None)
        if directory is not None and main:
            _save_run(run, strategy, backbone=config.backbone, seed=config.seed, batch_size=ctx.batch_size, log_lines=list(progress.lines), blocks=blocks, report=config.report)
        if tracker is not None:
            if interpretation is not None:
                tracker.held_out(interpretation)
            tracker.finish(metrics, directory)
    distributed.barrier()  # the other ranks return once rank 0 has saved the run
    return run


def _run_directory(data: str | Path | Dataset, config: FitConfig, main: bool) -> Path | None:
    """Where the run is written (``None`` with ``save=False``), checked on rank 0 before anything starts."""
    directory = None
    if config.save:
        strategy_name = config.strategy if isinstance(config.strategy, str) else config.strategy.name
        directory = Path(config.out) if config.out is not None else default_run_dir(data, strategy_name)
        if distributed.active():  # one name for all ranks (the default name has a timestamp)
            directory = Path(distributed.from_main(str(directory)))
    if directory is not None and not config.resume and main:
        check_new_run_dir(directory, config.overwrite)
    if config.resume and directory is None:
        raise ValueError("resume=True needs the run directory: pass out=RUN (or call headstart.resume(RUN))")
    distributed.barrier()  # rank 0 has checked (and cleared, with overwrite) the run directory
    return directory


@dataclass
class _Advice:
    """What ``strategy="auto"`` decided: the settings it chose, its rationale, the record saved with the run."""

    settings: dict[str, Any] = field(default_factory=dict)  # saved so that `resume` repeats them
    lines: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None


def _with_advice(dataset: Dataset, config: FitConfig, quiet: bool) -> tuple[FitConfig, _Advice]:
    """For ``strategy="auto"``: measure the data, then take the advisor's settings where the caller set none.

    With a ``budget``, the leading candidates are tried on train/val first (:mod:`headstart.analysis.trials`)
    and the winner's settings are used instead, with the epochs the rest of the budget affords.
    """
    if config.strategy != "auto":
        return config, _Advice()
    if dataset.task != "classification":
        raise ValueError(f"--strategy auto prices its candidates for class targets only, not a {dataset.task} one yet; run `headstart advise {dataset.source}` "
                         "(it measures this target) and pass the strategy it names")  # fmt: skip
    from headstart.analysis.advisor import advise

    started = time.perf_counter()
    advice = advise(dataset, backbone=config.backbone, seed=config.seed, cache_dir=config.cache_dir, quiet=quiet)
    strategy, kwargs, trials = advice.strategy, dict(advice.fit_kwargs), None
    if config.budget is not None:
        from headstart.analysis.trials import budgeted_pick

        strategy, kwargs, trials = budgeted_pick(dataset, config, advice, started, fit_config)
    settings = {k: getattr(config, k) if getattr(config, k) is not None else kwargs.get(k) for k in ADVICE_KEYS}
    record = {**advice.to_dict(), "profile": advice.profile.to_dict() if advice.profile is not None else None, "trials": trials}
    lines = str(advice).splitlines() + ([f"budget: {line}" for line in trials["lines"]] if trials else [])
    saved = {**settings, "budget": None} if trials else settings  # a resumed run repeats the winner, not the trials
    return replace(config, strategy=strategy, budget=None, **settings), _Advice(saved, lines, record)


def _log_data(progress: Progress, dataset: Dataset, summary: dict[str, Any], advice_lines: list[str]) -> None:
    """The run log's opening: the data read, what was assumed or skipped, and the advice."""
    what = {"regression": "regression target", "multilabel": "labels (multilabel)"}.get(dataset.task, "classes")
    progress.log(f"data: {dataset.source}: {', '.join(f'{s} {len(dataset.items(s))}' for s in summary['counts'])}; {what} {dataset.classes}")
    for note in dataset.notes:
        progress.log(f"data: {note}")
    for line in advice_lines:
        progress.log(f"auto: {line}")
    if dataset.skipped:
        reasons = ", ".join(f"{n} {r}" for r, n in summary["skipped_reasons"].items())
        progress.log(f"data: skipped {len(dataset.skipped)} ({reasons}): " + "; ".join(f"{f} ({r})" for f, r in dataset.skipped[:5]) + (" ..." if len(dataset.skipped) > 5 else ""))
    for warning in dataset.warnings:
        progress.log(f"warning: {warning}")


def _log_text_lengths(progress: Progress, model: TransferModel, dataset: Dataset) -> dict[str, Any] | None:
    """For texts: how many are longer than the encoder's window and how many tokens truncation drops (saved in metrics.json)."""
    if not isinstance(model.backbone.preprocessing, TextPreprocessing):
        return None
    counts = model.backbone.preprocessing.length_report([t for split in ("train", "val", "test") for t in dataset.items(split)])
    if note := text_length_note(counts):
        progress.log(note)
    return counts


def _held_out(model: TransferModel, dataset: Dataset, ctx: FitContext) -> tuple[dict[str, Any], dict[str, Any], tuple[str, Any, Any] | None]:
    """Metrics on val and test, the per-example predictions of the last of them (test when there is one) and its (split, labels, probabilities).

    Images come from the decoded-image cache the training filled (val is there already), not from the files again.
    """
    metrics: dict[str, Any] = {"task": model.task.name}
    predictions, scored = {}, None
    for split in ("val", "test"):
        if dataset.items(split):  # validation first: a multi-label model takes its thresholds there (choose), test is scored with them
            metrics[split], labels, probs = score_split(model, dataset, split, batch_size=ctx.batch_size, cache=ctx.cache, images=ctx.images, choose=split == "val")
            predictions = prediction_records(dataset.items(split), labels, probs, model.classes, split=split, modality=dataset.modality, task=model.task.name,
                                             thresholds=model.thresholds)  # fmt: skip
            scored = (split, labels, probs)
    if model.target is not None:
        metrics["target"] = {"name": model.classes[0], **model.target}
    if dataset.modality == "text" and model.task.name == "classification":  # what the pretrained encoder bought over surface words (seconds)
        from headstart.analysis.baseline import compare_with_bag_of_words

        compare_with_bag_of_words(dataset, metrics, ctx.progress)
    return metrics, predictions, scored


@contextlib.contextmanager
def _settled_on_failure(directory: Path | None, *, resuming: bool) -> Iterator[None]:
    """A fit that fails leaves its directory resumable or absent, and says which (:func:`settle_failed_fit`)."""
    try:
        yield
    except BaseException as error:
        if directory is None:
            raise
        settled = settle_failed_fit(directory, error, resuming=resuming)
        if settled is error:
            raise
        raise settled from None


@contextlib.contextmanager
def _abort_tracker_on_error(tracker: Tracker | None) -> Iterator[None]:
    """A crash or Ctrl-C marks the tracker's run failed or killed instead of leaving it running."""
    try:
        yield
    except BaseException as error:
        if tracker is not None:
            tracker.abort(error)
        raise


def _run_strategy(
    strategy: Strategy, model: TransferModel, build: Callable[[], TransferModel], dataset: Dataset, ctx: FitContext, checkpoint: Checkpoint | None, directory: Path | None
) -> tuple[History, TransferModel]:
    """Run ``strategy``; on a GPU out-of-memory error restart it with half the batch; on Ctrl-C say how to resume."""
    while True:
        try:
            return strategy.run(model, dataset, ctx), model
        except torch.OutOfMemoryError:
            if ctx.batch_size == 1:
                raise MemoryError("out of GPU memory even with batch size 1; use a smaller --image-size or backbone, or a --cut block") from None
            ctx.progress.log(f"warning: out of GPU memory with batch size {ctx.batch_size}; restarting with batch size {ctx.batch_size // 2}")
            ctx.batch_size //= 2
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if checkpoint is not None and directory is not None:
                checkpoint.reset()
                write_fit_args(directory, {**read_fit_args(directory), "batch_size": ctx.batch_size})
            model = build()
            ctx.penalties = [type(p)(model, p.alpha) if isinstance(p, L2SP) else p for p in ctx.penalties]  # the new model's source weights
        except KeyboardInterrupt:
            if directory is None:
                raise
            if checkpoint is not None:
                checkpoint.flush()
            raise KeyboardInterrupt(f"interrupted; continue with `headstart resume {directory}` (nothing after the last finished epoch is lost)") from None
        except BaseException:
            if checkpoint is not None:
                with contextlib.suppress(OSError):  # the error that stopped the fit is the one to report
                    checkpoint.flush()
            raise


def _save_run(run: Run, strategy: Strategy, *, backbone: str, seed: int, batch_size: int, log_lines: list[str], blocks: list[dict[str, Any]], report: bool) -> None:
    """Write the finished run (weights, config, metrics, curves, predictions, log) and its report; drop the checkpoint."""
    assert run.directory is not None
    training = {
        "backbone": backbone,
        "strategy": strategy.describe(),
        "advice": run.advice,
        "blocks": blocks,
        "seed": seed,
        "batch_size": batch_size,
        "seconds": run.seconds,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "headstart": __version__, "device": str(run.model.backbone.device)},
    }
    run.model.save_pretrained(run.directory, extra={"training": training, "dataset": {k: v for k, v in run.dataset.items() if k != "skipped_files"}})
    write_run_files(run.directory, metrics={**run.metrics, "kept": run.history.kept(), "seconds": run.seconds}, history=run.history.to_dict(), dataset=run.dataset,
                    predictions=run.predictions, log_lines=log_lines, interpretation=run.interpretation)  # fmt: skip
    if report:
        from headstart.report import write_report

        try:
            write_report(run.directory)
        except Exception as error:  # noqa: BLE001 - the trained run is saved; a page must not make it look failed
            warnings.warn(f"{run.directory}: report.html not written ({type(error).__name__}: {error}); the run is saved, retry with `headstart report {run.directory}`", stacklevel=3)
    shutil.rmtree(checkpoint_dir(run.directory), ignore_errors=True)  # finished: nothing left to resume


def resume(
    directory: str | Path,
    *,
    data: Dataset | None = None,
    strategy: Strategy | None = None,
    quiet: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Run:
    """Continue a run that Ctrl-C or a crash interrupted, with the arguments :func:`fit` was given.

    Finished phases are skipped and the interrupted one continues after its last finished epoch;
    on CPU the result equals that of an uninterrupted run. ``data`` and ``strategy`` are needed only
    when the run was started with an in-memory :class:`Dataset` or a :class:`Strategy` object.
    """
    directory = Path(directory)
    arguments = read_fit_args(directory)
    arguments.setdefault("task", "classification")  # recorded before issue 27: every label was a class
    for name, given in (("data", data), ("strategy", strategy)):
        if given is not None:
            arguments[name] = given
        elif arguments[name] is None:
            raise ValueError(f"{directory}: the run was started with an in-memory {name}; pass it again: resume(RUN, {name}=...)")
    config = replace(FitConfig.from_arguments(arguments), out=directory, quiet=quiet, resume=True)
    return fit_config(arguments["data"], config, callbacks=callbacks)


