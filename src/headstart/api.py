"""The Python API: ``fit``, ``evaluate``, ``predict`` and ``from_pretrained``; the CLI calls these.

>>> import headstart
>>> run = headstart.fit("data/pets", backbone="efficientnet_lite0", strategy="feature-extraction")
>>> run.metrics["test"]["accuracy"]
>>> headstart.predict(run.directory, ["cat.jpg"])
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart import __version__
from headstart.training import distributed
from headstart.backbones import match_data
from headstart.training.checkpoint import ARGS_NAME, Checkpoint, checkpoint_dir, read_fit_args, write_fit_args
from headstart.data import Dataset, as_items, check_items, load_dataset, make_loader
from headstart.caches.embeddings import EmbeddingCache
from headstart.freezing import freeze_report
from headstart.caches.images import image_cache
from headstart.io import atomic_write_text
from headstart.analysis.lr_finder import LRFinderResult, lr_find
from headstart.metrics import classification_metrics
from headstart.model import TransferModel
from headstart.data.preprocessing import ImagePreprocessing
from headstart.progress import Progress
from headstart.training.regularizers import L2SP, make_penalties
from headstart.strategies import FitContext, Strategy, make_strategy
from headstart.report.tracking import make_tracker
from headstart.training.callbacks import Callback
from headstart.training.evaluation import evaluate_loader
from headstart.training.loop import seed_everything
from headstart.training.state import History

METRICS_NAME = "metrics.json"
HISTORY_NAME = "history.json"
LOG_NAME = "log.txt"
DATASET_NAME = "dataset.json"
PREDICTIONS_NAME = "predictions.json"


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


@dataclass
class Prediction:
    item: str
    label: str
    probability: float
    probabilities: dict[str, float]


def _default_run_dir(data: str | Path | Dataset, strategy: str) -> Path:
    name = Path(data.source if isinstance(data, Dataset) else data).stem or "data"
    return Path("runs") / f"{name}-{strategy}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _check_run_dir(directory: Path, overwrite: bool) -> None:
    if (checkpoint_dir(directory) / ARGS_NAME).is_file() and not overwrite:
        raise FileExistsError(f"{directory}: holds an interrupted run; continue it with `headstart resume {directory}`, or pass --overwrite")
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"{directory}: already exists and is not empty; choose another --out or pass --overwrite")


def fit(
    data: str | Path | Dataset,
    *,
    backbone: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    strategy: str | Strategy = "feature-extraction",
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
    image_size: int | None = None,
    tta: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    overwrite: bool = False,
    save: bool = True,
    quiet: bool = False,
    cache_dir: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    report: bool = True,
    log_to: str | None = None,
    log_uri: str | None = None,
) -> Run:
    """Train a classifier on ``data`` by transfer from ``backbone`` and (by default) save the run.

    Parameters
    ----------
    data : path or Dataset
        An image folder (class sub-folders, optional train/val/test) or a CSV/TSV/JSONL file.
    backbone : str, default="efficientnet_lite0"
        See :func:`headstart.backbones.create_backbone`.
    weights : path, optional
        Local weights file for a ``timm:`` backbone.
    strategy : {"feature-extraction", "fine-tune", "full", "scratch", "auto"} or Strategy
        ``"auto"`` asks :func:`headstart.analysis.advisor.advise` (size and layer-wise profile of ``data``)
        and uses its strategy and settings, except those passed explicitly.
    out : path, optional
        Run directory; default ``runs/<data>-<strategy>-<time>``. Never overwritten unless ``overwrite``.
        While training, ``out/checkpoint/`` holds what :func:`resume` needs after an interruption.
    monitor : {"val_loss", "val_accuracy"}, optional
        What early stopping and the kept weights follow; each strategy has its own default.
    trainable_blocks, freeze :
        For ``fine-tune``: how many top blocks train, or which fraction of blocks stays frozen.
    head_warmup : bool, optional
        ``False`` skips fitting the head on cached features first (plain fine-tuning instead of
        LP-FT) for ``fine-tune``, ``full``, ``gradual`` and ``lora``.
    layer_decay, block_lrs :
        Per-block learning rates, see :class:`headstart.training.loop.TrainSettings`.
    l2sp, bss : float, optional
        Weights of the L2-SP and BSS penalties toward the pretrained network (TLlib: 0.01 and
        0.001), see :mod:`headstart.training.regularizers`.
    unfreeze_blocks : int, optional
        For ``gradual``: how many backbone blocks are trainable by the last stage (default all).
        Stages last ``epochs`` epochs each, or end earlier after ``patience`` epochs without improvement.
    lora_rank : int, optional
        For ``lora``: the adapters' rank (default 8).
    label_templates : int, optional
        For ``contrastive`` (few-shot text): add this many "This sentence is {class}" examples per
        class to the pairs and to the head's training set (SetFit's templated dataset; default 0).
    accumulate, grad_clip, precision, torch_compile :
        Gradient accumulation steps, gradient-norm clipping (``None`` for none), ``"bf16"``
        autocast on a GPU, and ``torch.compile`` of the training steps; see
        :class:`headstart.training.loop.TrainSettings`.
    cut : block name or index, optional
        Use the pooled output of this block instead of the last one.
    image_size : int, optional
        Input resolution instead of the weights' own, for images or spectrogram images (saved with the run, so ``predict`` reuses it).
    tta : {"none", "flip", "dihedral"}, optional
        Test-time augmentation of image models: ``predict`` and the held-out metrics average the
        class probabilities over these views (saved with the run). Validation during training
        does not use it.
    batch_size : int, default=32
        Examples per step, for training and for embedding: it bounds peak memory (embedding 224-pixel
        images with efficientnet_lite0 peaks near 1.0 GB at 32 and 1.5 GB at 64, see BENCHMARKS.md,
        P4). Halved and the run restarted when the GPU runs out of memory (down to 1).
    seed : int, default=0
        Same data, seed and settings give identical results on CPU.
    callbacks : sequence of Callback, default=()
        Called by every training phase (see :class:`headstart.training.loop.Callback`).
    resume : bool, default=False
        Continue the interrupted run in ``out`` from its checkpoint; use :func:`resume`, which
        repeats the run's own arguments.
    report : bool, default=True
        Write ``report.html`` into the run directory (see :func:`headstart.report.write_report`).
    log_to : {"tensorboard", "mlflow"}, optional
        Also send per-epoch curves, held-out metrics and the report there (see :mod:`headstart.report.tracking`).
    log_uri : str, optional
        TensorBoard log directory (default ``out/tensorboard``) or MLflow tracking URI (default: MLflow's own).
    """
    given = dict(locals())  # this call's arguments: saved in the checkpoint so that `resume` can repeat the call
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in given.items() if k not in ("callbacks", "resume", "quiet", "overwrite", "report")}
    started = time.perf_counter()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    distributed.setup()  # under torchrun: join the group; only rank 0 writes files and prints
    main = distributed.is_main()
    quiet = quiet or not main
    directory = None
    if save:
        directory = Path(out) if out is not None else _default_run_dir(data, strategy if isinstance(strategy, str) else strategy.name)
        if distributed.active():  # one name for all ranks (the default name has a timestamp)
            directory = Path(distributed.from_main(str(directory)))
    if directory is not None and not resume and main:
        _check_run_dir(directory, overwrite)
    if resume and directory is None:
        raise ValueError("resume=True needs the run directory: pass out=RUN (or call headstart.resume(RUN))")
    distributed.barrier()  # rank 0 has checked (and cleared, with overwrite) the run directory
    checkpoint = Checkpoint(directory, resume=resume, write=main) if directory is not None else None
    dataset = data if isinstance(data, Dataset) else load_dataset(data, text_column=text_column, label_column=label_column, seed=seed)
    advice_lines: list[str] = []
    advice_record: dict[str, Any] | None = None
    chosen_settings: dict[str, Any] = {}  # the advisor's settings, saved so that `resume` repeats them
    if strategy == "auto":  # measure, then fit with the advisor's settings where the caller set none
        from headstart.analysis.advisor import advise

        advice = advise(dataset, backbone=backbone, seed=seed, cache_dir=cache_dir, quiet=quiet)
        strategy, advice_lines = advice.strategy, str(advice).splitlines()
        advice_record = {**advice.to_dict(), "profile": advice.profile.to_dict() if advice.profile is not None else None}
        given = {"cut": cut, "trainable_blocks": trainable_blocks, "lr": lr, "body_lr": body_lr, "epochs": epochs, "batchnorm": batchnorm}
        chosen_settings = {k: v if v is not None else advice.fit_kwargs.get(k) for k, v in given.items()}
        cut, trainable_blocks, lr, body_lr, epochs, batchnorm = (chosen_settings[k] for k in given)
    chosen = strategy if isinstance(strategy, Strategy) else make_strategy(
        strategy, epochs=epochs, lr=lr, body_lr=body_lr, patience=patience, monitor=monitor, trainable_blocks=trainable_blocks, freeze=freeze, batchnorm=batchnorm,
        head_warmup=head_warmup, layer_decay=layer_decay, block_lrs=block_lrs, accumulate=accumulate, grad_clip=grad_clip, precision=precision,
        torch_compile=torch_compile, unfreeze_blocks=unfreeze_blocks, lora_rank=lora_rank, label_templates=label_templates,
    )  # fmt: skip
    if (l2sp or bss) and chosen.name in ("feature-extraction", "scratch"):
        raise ValueError(f"--l2sp/--bss regularise a pretrained backbone while it trains; --strategy {chosen.name} trains none")
    if directory is not None and not resume and main:
        write_fit_args(directory, {**arguments, **chosen_settings, "data": str(Path(dataset.source).resolve()) if not isinstance(data, Dataset) else None,
                                   "strategy": chosen.name if isinstance(strategy, str) else None})  # fmt: skip

    def build() -> TransferModel:
        seed_everything(seed)
        model = TransferModel.from_backbone(backbone, dataset.classes, cut=cut, hidden=hidden, dropout=dropout, pretrained=chosen.pretrained, weights=weights)
        match_data(model.backbone, dataset, image_size=image_size, tta=tta)
        return model.to(distributed.device()).fast_layout()

    model = build()
    tracker = None if not main else make_tracker(log_to, uri=log_uri, directory=directory, experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"headstart-{Path(dataset.source).stem}")
    if tracker is not None:
        tracker.start(directory.name if directory is not None else "headstart", arguments)
    try:
        with Progress(quiet=quiet) as progress:
            summary = dataset.summary()
            progress.log(f"data: {dataset.source}: {', '.join(f'{s} {sum(c.values())}' for s, c in summary['counts'].items())}; classes {dataset.classes}")
            for note in dataset.notes:
                progress.log(f"data: {note}")
            for line in advice_lines:
                progress.log(f"auto: {line}")
            if dataset.skipped:
                reasons = ", ".join(f"{n} {r}" for r, n in summary["skipped_reasons"].items())
                progress.log(f"data: skipped {len(dataset.skipped)} ({reasons}): " + "; ".join(f"{f} ({r})" for f, r in dataset.skipped[:5]) + (" ..." if len(dataset.skipped) > 5 else ""))
            for warning in dataset.warnings:
                progress.log(f"warning: {warning}")
            ctx = FitContext(progress=progress, cache=EmbeddingCache(cache_dir), images=image_cache(cache_dir), batch_size=batch_size, seed=seed, augment=augment,
                             callbacks=[*([checkpoint] if checkpoint else []), *([tracker] if tracker else []), *callbacks],
                             penalties=make_penalties(model, l2sp=l2sp, bss=bss))  # fmt: skip
            if resume:
                progress.log(f"resuming {directory} from its checkpoint")
            history, model = _run_strategy(chosen, model, build, dataset, ctx, checkpoint, directory)
            overfit = history.overfitting()
            if overfit["detected"]:
                progress.log(f"warning: {overfit['message']}")
            metrics, predictions = {}, {}
            for split in ("val", "test"):
                if dataset.items(split):
                    metrics[split], labels, probs = _scored(model, dataset, split, batch_size=ctx.batch_size, cache=ctx.cache)
                    predictions = prediction_records(dataset.items(split), labels, probs, model.classes, split=split, modality=dataset.modality)  # test wins
            seconds = time.perf_counter() - started
            if "test" in metrics:
                progress.log(f"test: accuracy {metrics['test']['accuracy']:.4f}, balanced {metrics['test']['balanced_accuracy']:.4f}, macro F1 {metrics['test']['macro_f1']:.4f} (n={metrics['test']['n']}) in {seconds:.0f}s")
            log_lines = list(progress.lines)
        model.train()  # the modes training used: frozen blocks' BatchNorm in eval (as `headstart summary` shows)
        blocks = freeze_report(model).to_rows()
        run = Run(model.eval(), history, metrics, directory, summary, seconds, predictions, advice_record)
        if directory is not None and main:
            _save_run(run, chosen, backbone=backbone, seed=seed, batch_size=ctx.batch_size, log_lines=log_lines, blocks=blocks)
            if report:
                from headstart.report import write_report

                try:
                    write_report(directory)
                except Exception as error:  # noqa: BLE001 - the trained run is saved; a page must not make it look failed
                    warnings.warn(f"{directory}: report.html not written ({type(error).__name__}: {error}); the run is saved, retry with `headstart report {directory}`", stacklevel=2)
            shutil.rmtree(checkpoint_dir(directory), ignore_errors=True)  # finished: nothing left to resume
        if tracker is not None:
            tracker.finish(metrics, directory)
    except BaseException as error:  # a crash or Ctrl-C: the tracker marks its run failed or killed instead of leaving it running
        if tracker is not None:
            tracker.abort(error)
        raise
    distributed.barrier()  # the other ranks return once rank 0 has saved the run
    return run


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
            raise KeyboardInterrupt(f"interrupted; continue with `headstart resume {directory}` (nothing after the last finished epoch is lost)") from None


def _save_run(run: Run, strategy: Strategy, *, backbone: str, seed: int, batch_size: int, log_lines: list[str], blocks: list[dict[str, Any]]) -> None:
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
    atomic_write_text(run.directory / METRICS_NAME, json.dumps({**run.metrics, "seconds": run.seconds}, indent=2))
    atomic_write_text(run.directory / HISTORY_NAME, json.dumps(run.history.to_dict(), indent=2))
    atomic_write_text(run.directory / DATASET_NAME, json.dumps(run.dataset, indent=2))
    atomic_write_text(run.directory / PREDICTIONS_NAME, json.dumps(run.predictions))
    atomic_write_text(run.directory / LOG_NAME, "\n".join(log_lines + [f"skipped: {f} ({r})" for f, r in ((d["file"], d["reason"]) for d in run.dataset["skipped_files"])]) + "\n")


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
    for name, given in (("data", data), ("strategy", strategy)):
        if given is not None:
            arguments[name] = given
        elif arguments[name] is None:
            raise ValueError(f"{directory}: the run was started with an in-memory {name}; pass it again: resume(RUN, {name}=...)")
    return fit(**{**arguments, "out": directory}, quiet=quiet, callbacks=callbacks, resume=True)


def from_pretrained(directory: str | Path) -> TransferModel:
    """Reload a saved run's model with its preprocessing (inverse of ``TransferModel.save_pretrained``)."""
    return TransferModel.from_pretrained(directory)


def _as_model(model: TransferModel | str | Path) -> TransferModel:
    return model if isinstance(model, TransferModel) else TransferModel.from_pretrained(model)


def predict_proba(model: TransferModel | str | Path, items: list[Any], *, batch_size: int = 64, cache: EmbeddingCache | None = None) -> np.ndarray:
    """Class probabilities ``(len(items), n_classes)`` for image paths, PIL images or texts.

    With a ``cache`` and a fully frozen backbone, embeddings come from (and go to) the cache and
    only the head runs: feature extraction never pays for the body twice.
    """
    model = _as_model(model)
    views = model.preprocessing.views() if isinstance(model.preprocessing, ImagePreprocessing) else None
    if cache is not None and not any(p.requires_grad for p in model.backbone.parameters()) and not (views and len(views) > 1):
        features, _ = cache.embed(model.backbone, items, batch_size=batch_size)
        model.eval()
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(features).to(model.backbone.device))
        return logits.float().softmax(-1).cpu().numpy()
    loader = make_loader(items, None, model.preprocessing, batch_size=batch_size)
    _, probs, _ = evaluate_loader(model, loader, views=views)
    return probs


def predict(model: TransferModel | str | Path, items: list[Any], *, batch_size: int = 64) -> list[Prediction]:
    """Label and probability for each item (paths are read with the run's own preprocessing)."""
    model = _as_model(model)
    items = as_items(items, model.modality)
    check_items(items, model.modality)
    probs = predict_proba(model, items, batch_size=batch_size)
    out = []
    for item, row in zip(items, probs):
        k = int(row.argmax())
        out.append(Prediction(str(item)[:200], model.classes[k], float(row[k]), {c: float(p) for c, p in zip(model.classes, row)}))
    return out


def evaluate(
    model: TransferModel | str | Path,
    data: str | Path | Dataset,
    *,
    split: str = "test",
    batch_size: int = 64,
    text_column: str | None = None,
    label_column: str | None = None,
    cache: EmbeddingCache | None = None,
) -> dict[str, Any]:
    """Held-out metrics of a model (or run directory) on a split of ``data``.

    A run directory's own seed is used to split ``data``, so the run's training examples never
    land in its test split. Class names are matched by name, in any order.
    """
    seed = 0
    if not isinstance(model, TransferModel):
        config_file = Path(model) / "config.json"
        if config_file.is_file():
            seed = int(json.loads(config_file.read_text()).get("training", {}).get("seed", 0))
    model = _as_model(model)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, seed=seed, text_column=text_column, label_column=label_column)
    if not dataset.items(split):
        split = next(s for s in ("test", "val", "train") if dataset.items(s))
    return _scored(model, dataset, split, batch_size=batch_size, cache=cache)[0]


def _scored(model: TransferModel, dataset: Dataset, split: str, *, batch_size: int, cache: EmbeddingCache | None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics of ``model`` on one split, with the labels (in the model's class order) and probabilities behind them."""
    unknown = sorted(set(dataset.classes) - set(model.classes))
    if unknown:
        raise ValueError(f"{dataset.source}: classes {unknown[:5]} are unknown to the model (it knows {model.classes})")
    remap = np.array([model.classes.index(c) for c in dataset.classes])
    labels = remap[dataset.labels(split)]
    probs = predict_proba(model, dataset.items(split), batch_size=batch_size, cache=cache)
    result = classification_metrics(labels, probs.argmax(1), model.classes)
    result["split"] = split
    result["loss"] = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()) if len(labels) else float("nan")
    return result, labels, probs


def prediction_records(items: Sequence[Any], labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], *, split: str, modality: str) -> dict[str, Any]:
    """Per-example true and predicted class with confidence: what the report's gallery of mistakes reads.

    Image items are stored as absolute paths (the report makes thumbnails from them), texts as the
    first 1000 characters; in-memory images have no name and are stored as ``None``.
    """
    examples = []
    for item, y, row in zip(items, labels, probs):
        k = int(row.argmax())
        name = str(Path(item).resolve()) if isinstance(item, Path) else item[:1000] if isinstance(item, str) else None
        examples.append({"item": name, "true": classes[int(y)], "predicted": classes[k], "confidence": round(float(row[k]), 6), "p_true": round(float(row[int(y)]), 6)})
    return {"split": split, "modality": modality, "examples": examples}


def find_lr(
    data: str | Path | Dataset,
    *,
    backbone: str = "efficientnet_lite0",
    run: str | Path | None = None,
    trainable_blocks: int = 0,
    steps: int = 100,
    start: float = 1e-7,
    end: float = 10.0,
    batch_size: int = 32,
    image_size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    quiet: bool = True,
) -> LRFinderResult:
    """Learning-rate range test on ``data``'s training split, before a fit or on a saved ``run``.

    ``trainable_blocks=0`` tests the head alone on cached features (the rate of feature extraction
    and of the head warm-up); ``k > 0`` tests the top ``k`` backbone blocks and the head end to end
    (the rate of ``fine-tune``). The model is not changed (see :mod:`headstart.analysis.lr_finder`); with
    ``run``, the curve is saved as ``RUN/lr_find.json`` for the run's report.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from headstart.freezing import freeze_bottom

    dataset = data if isinstance(data, Dataset) else load_dataset(data, text_column=text_column, label_column=label_column, seed=seed)
    seed_everything(seed)
    model = TransferModel.from_pretrained(run) if run is not None else TransferModel.from_backbone(backbone, dataset.classes)
    if model.classes != dataset.classes:
        raise ValueError(f"{run}: the run's classes {model.classes[:5]} differ from {dataset.source}'s {dataset.classes[:5]}")
    match_data(model.backbone, dataset, image_size=image_size)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").fast_layout()
    items, labels = dataset.items("train"), dataset.labels("train")
    generator = torch.Generator().manual_seed(seed)
    if trainable_blocks == 0:
        with Progress(quiet=quiet) as progress:
            features, _ = EmbeddingCache(cache_dir).embed(model.backbone, items, progress=progress)
        loader: Any = DataLoader(TensorDataset(torch.from_numpy(np.ascontiguousarray(features)), torch.from_numpy(labels)), batch_size=batch_size, shuffle=True, generator=generator)
        result = lr_find(model.head, loader, start=start, end=end, steps=steps)
    else:
        freeze_bottom(model, trainable_blocks + 1)
        loader = make_loader(items, labels, model.preprocessing, batch_size=batch_size, train=True, augment="none", seed=seed)
        result = lr_find(model, loader, start=start, end=end, steps=steps)
    if run is not None:  # the run's report.html shows the curve (headstart report RUN)
        from headstart.report import LR_FIND_NAME

        atomic_write_text(Path(run) / LR_FIND_NAME, json.dumps(result.to_dict()))
    return result
