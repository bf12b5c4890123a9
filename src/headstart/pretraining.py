"""Develop a source model: train an architecture from scratch on a source dataset, keep it as a backbone.

When no pretrained network is close to a target domain (scans, spectrograms, a private sensor),
the *develop-model* route trains one on a larger related labelled set first and transfers from
that. :func:`pretrain` is :func:`headstart.fit` with the ``scratch`` strategy and defaults for a
source model (longer training, more patience); it writes an ordinary run directory, and a run
directory is a backbone: ``fit``, ``profile``, ``rank`` and ``advise`` take its path as
``--backbone``, and its classifier serves as the source head that LEEP and NCE read.

>>> source = headstart.pretrain("data/source", arch="resnet18", image_size=64, out="runs/source")  # doctest: +SKIP
>>> headstart.fit("data/target", backbone="runs/source", strategy="fine-tune")  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import timm

from headstart.api import Run, fit_config
from headstart.backbones import list_backbones
from headstart.config import PRETRAIN_ARCH, PRETRAIN_DEFAULTS, FitConfig
from headstart.data import Dataset
from headstart.rundir import CONFIG_NAME, default_run_dir
from headstart.training.callbacks import Callback


def source_architecture(arch: str) -> str:
    """The backbone name :func:`pretrain` builds for ``arch``.

    A bare timm architecture (``resnet18``) becomes ``timm:resnet18``; ``timm:ARCH``,
    ``hf:CONFIG_DIR`` (a folder with a Hugging Face ``config.json``, plus a tokenizer for text),
    embedded names and run directories are taken as they are: only their architecture is used.
    """
    embedded = [spec.name for spec in list_backbones()]
    if arch in embedded or arch.startswith(("timm:", "hf:")) or (Path(arch) / CONFIG_NAME).is_file():  # a run directory, or a Hugging Face config folder (same file name)
        return arch
    if timm.is_model(arch):
        return f"timm:{arch}"
    close = difflib.get_close_matches(arch, timm.list_models(), n=3)
    raise ValueError(
        f"Unknown architecture {arch!r}" + (f"; did you mean {close}?" if close else "")
        + " Pass a timm name (resnet18, resnet10t, test_efficientnet ...), hf:CONFIG_DIR, an embedded backbone or a run directory"
    )  # fmt: skip


def pretrain(
    data: str | Path | Dataset,
    *,
    arch: str = PRETRAIN_ARCH,
    out: str | Path | None = PRETRAIN_DEFAULTS.out,
    epochs: int = PRETRAIN_DEFAULTS.epochs,
    lr: float = PRETRAIN_DEFAULTS.lr,
    patience: int | None = PRETRAIN_DEFAULTS.patience,
    image_size: int | None = PRETRAIN_DEFAULTS.image_size,
    augment: str | None = PRETRAIN_DEFAULTS.augment,
    batch_size: int = PRETRAIN_DEFAULTS.batch_size,
    seed: int = PRETRAIN_DEFAULTS.seed,
    overwrite: bool = PRETRAIN_DEFAULTS.overwrite,
    save: bool = PRETRAIN_DEFAULTS.save,
    quiet: bool = PRETRAIN_DEFAULTS.quiet,
    cache_dir: str | Path | None = PRETRAIN_DEFAULTS.cache_dir,
    text_column: str | None = PRETRAIN_DEFAULTS.text_column,
    label_column: str | None = PRETRAIN_DEFAULTS.label_column,
    task: str = PRETRAIN_DEFAULTS.task,
    label_delimiter: str = PRETRAIN_DEFAULTS.label_delimiter,
    loss: str | None = PRETRAIN_DEFAULTS.loss,
    callbacks: Sequence[Callback] = (),
) -> Run:
    """Train ``arch`` from random weights on ``data`` and save it as a source backbone.

    Parameters
    ----------
    data : path or Dataset
        The source dataset: an image or audio folder (or listing), or a CSV/TSV/JSONL text table, as
        for :func:`fit`. An image architecture given audio reads log-mel spectrograms; their settings
        are saved with the source and reused by every later ``fit`` on it. Its labels may be classes, numbers
        (``task="regression"``, or detected) or label sets (``task="multilabel"``): the body learned on any of
        them transfers, since ``fit`` replaces the head.
    arch : str, default="resnet18"
        See :func:`source_architecture`. Small timm models (``test_resnet``, ``resnet10t``) train in
        minutes on a CPU at a small ``image_size``.
    out : path, optional
        Run directory; default ``runs/<data>-pretrain-<arch>-<time>``. Pass it to later commands
        as ``backbone=out``.
    epochs, lr, patience :
        Every block trains at ``lr`` (AdamW, warm-up + cosine), early stopping on validation loss
        after ``patience`` epochs without improvement.
    image_size : int, optional
        Input resolution; default the architecture's own (224 for most timm models). Saved with the
        run, so every later use of the backbone resizes to it.
    augment : {"none", "light", "strong"}, optional
        Image augmentation; default ``light`` (crops and horizontal flips: pass ``none`` where a
        flip changes the class, as for digits or text in images).
    save : bool, default=True
        Write the run directory; ``False`` only returns the trained :class:`~headstart.api.Run`.

    Other parameters are those of :func:`headstart.fit`.

    Returns
    -------
    Run
        ``run.directory`` is the new backbone; ``run.metrics`` its held-out accuracy on the source task.
    """
    return pretrain_config(data, arch, FitConfig.from_arguments(locals()), callbacks=callbacks)


def pretrain_config(data: str | Path | Dataset, arch: str, config: FitConfig, *, callbacks: Sequence[Callback] = ()) -> Run:
    """:func:`pretrain` with its options in a :class:`FitConfig` (what ``headstart pretrain`` calls): ``fit`` of ``arch`` from scratch."""
    out = config.out
    backbone = source_architecture(arch)
    if config.save and out is None:
        out = default_run_dir(data, f"pretrain-{Path(arch).name.removeprefix('timm:').removeprefix('hf:').replace('/', '_')}")
    return fit_config(data, replace(config, backbone=backbone, strategy="scratch", out=out), callbacks=callbacks)
