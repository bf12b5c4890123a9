"""FitConfig declares fit's options once: the parsers, fit, pretrain, the estimator and make_strategy agree with it."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from headstart.cli import build_parser
from headstart.config import (
    DEFAULTS,
    FIELDS,
    PRETRAIN_ARCH,
    PRETRAIN_DEFAULTS,
    PRETRAIN_OPTIONS,
    STRATEGY_NAMES,
    STRATEGY_OPTIONS,
    FitConfig,
    check_strategy_options,
)

SRC = Path(__file__).resolve().parents[1] / "src"
CLI_FIELDS = tuple(f.name for f in fields(FitConfig) if f.metadata["cli"] is not None)
PYTHON_ONLY = {"save", "resume", "report"}
CLI_ONLY = {"help", "data", "json"}  # fit's own (plus --resume RUN, a command of its own: `headstart resume`)


def _subparser(name: str) -> argparse.ArgumentParser:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[name]


def _dests(parser: argparse.ArgumentParser) -> list[str]:
    return [a.dest for a in parser._actions]


def test_fit_parser_has_exactly_the_command_line_fields_with_fit_defaults():
    assert set(FIELDS) - set(CLI_FIELDS) == PYTHON_ONLY
    dests = _dests(_subparser("fit"))
    assert sorted(d for d in dests if d not in CLI_ONLY | {"resume"}) == sorted(CLI_FIELDS)
    args = build_parser().parse_args(["fit", "data"])
    assert args.backbone is None  # main() picks minilm or efficientnet_lite0 by what DATA holds
    assert replace(FitConfig.from_cli(vars(args)), backbone=DEFAULTS.backbone) == DEFAULTS


def test_fit_signature_is_fitconfig():
    from headstart.api import fit

    params = {name: p for name, p in inspect.signature(fit).parameters.items() if name not in ("data", "callbacks")}
    assert tuple(params) == FIELDS
    assert {name: p.default for name, p in params.items()} == {name: getattr(DEFAULTS, name) for name in FIELDS}
    for name in FIELDS:  # the docstring explains every option with the --help text
        assert f"    {name} : " in fit.__doc__


def test_pretrain_estimator_and_make_strategy_take_fitconfig_options_and_defaults():
    from headstart.estimator import TransferClassifier
    from headstart.pretraining import pretrain
    from headstart.strategies import make_strategy

    params = inspect.signature(pretrain).parameters
    assert params["arch"].default == PRETRAIN_ARCH
    own = {name: p.default for name, p in params.items() if name not in ("data", "arch", "callbacks")}
    assert tuple(own) == PRETRAIN_OPTIONS
    assert own == {name: getattr(PRETRAIN_DEFAULTS, name) for name in PRETRAIN_OPTIONS}
    overridden = {f.name for f in fields(FitConfig) if getattr(PRETRAIN_DEFAULTS, f.name) != getattr(DEFAULTS, f.name)}
    assert overridden == {"strategy", "epochs", "lr", "patience"}  # pretrain's declared exceptions

    own = {name: p.default for name, p in inspect.signature(TransferClassifier).parameters.items() if name not in ("val_fraction", "class_weight")}  # its own two
    assert own == {name: getattr(DEFAULTS, name) for name in own}

    own = {name: p.default for name, p in inspect.signature(make_strategy).parameters.items() if name != "name"}
    assert tuple(own) == STRATEGY_OPTIONS and own == {name: getattr(DEFAULTS, name) for name in own}


def test_pretrain_parser_is_its_subset_of_fit_with_its_defaults():
    dests = _dests(_subparser("pretrain"))
    assert sorted(d for d in dests if d not in CLI_ONLY | {"arch"}) == sorted(set(PRETRAIN_OPTIONS) & set(CLI_FIELDS))
    args = build_parser().parse_args(["pretrain", "data"])
    assert args.arch == PRETRAIN_ARCH
    config = FitConfig.from_cli(vars(args))
    assert {name: getattr(config, name) for name in PRETRAIN_OPTIONS} == {name: getattr(PRETRAIN_DEFAULTS, name) for name in PRETRAIN_OPTIONS}


def test_strategy_registry_is_config_strategy_names():
    from headstart.strategies import STRATEGIES

    assert tuple(STRATEGIES) == STRATEGY_NAMES


def test_help_and_option_errors_import_no_model_library():
    code = """
import sys
from headstart.cli import main
for argv in (["--help"], ["fit", "--help"], ["pretrain", "--help"], ["predict", "--help"], ["fit", "x", "--strategy", "nope"], ["fit", "x", "--stratgy", "auto"]):
    try:
        main(argv)
    except SystemExit:
        pass
print([m for m in ("torch", "timm", "transformers", "sklearn", "matplotlib", "torchvision") if m in sys.modules])
"""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_full_command_line_gives_the_same_fit_arguments_as_before():
    argv = ["fit", "d", "--backbone", "minilm", "--strategy", "full", "--epochs", "3", "--lr", "0.01", "--patience", "2", "--no-head-warmup",
            "--block-lrs", "1e-5:1e-3", "--cut", "3", "--grad-clip", "0", "--torch-compile", "--l2sp", "--bss", "0.5", "--quiet"]  # fmt: skip
    config = FitConfig.from_cli(vars(build_parser().parse_args(argv)))
    assert (config.backbone, config.strategy, config.epochs, config.lr, config.patience) == ("minilm", "full", 3, 0.01, 2)
    assert config.head_warmup is False and config.block_lrs == (1e-5, 1e-3) and config.cut == 3 and config.grad_clip is None
    assert config.torch_compile is True and config.l2sp == 0.01 and config.bss == 0.5 and config.quiet is True
    unset = FitConfig.from_cli(vars(build_parser().parse_args(["fit", "d", "--cut", "stage3", "--block-lrs", "layer5=1e-4, layer4=5e-5", "--grad-clip", "2"])))
    assert (unset.patience, unset.head_warmup, unset.torch_compile, unset.l2sp) == ("default", None, None, None)
    assert unset.cut == "stage3" and unset.block_lrs == {"layer5": 1e-4, "layer4": 5e-5} and unset.grad_clip == 2.0
    assert FitConfig.from_cli(vars(build_parser().parse_args(["fit", "d", "--cut", "-2"]))).cut == -2
    with pytest.raises(ValueError, match="--block-lrs '1e-3': write LOW:HIGH"):
        FitConfig.from_cli(vars(build_parser().parse_args(["fit", "d", "--block-lrs", "1e-3"])))


def test_checkpoint_arguments_keep_their_keys_and_old_runs_still_resume():
    saved = FitConfig(out=Path("runs/x"), cache_dir=Path("c"), block_lrs=(1e-5, 1e-3)).saved_arguments()
    old_keys = ["backbone", "weights", "strategy", "budget", "out", "epochs", "lr", "body_lr", "patience", "monitor", "trainable_blocks", "freeze", "batchnorm",
                "head_warmup", "layer_decay", "block_lrs", "l2sp", "bss", "unfreeze_blocks", "lora_rank", "label_templates", "accumulate", "grad_clip",
                "precision", "torch_compile", "cut", "hidden", "dropout", "augment", "image_size", "tta", "batch_size", "seed", "save", "cache_dir",
                "text_column", "label_column", "log_to", "log_uri"]  # fmt: skip
    added = ["max_length", "long_text", "task", "label_delimiter", "loss"]  # issues 25, 27; an older record without them resumes with their defaults (below)
    assert [k for k in saved if k not in added] == old_keys and set(added) <= set(saved) and saved["out"] == "runs/x" and saved["cache_dir"] == "c"
    reread = json.loads(json.dumps({"data": "/d", **saved}))  # what write_fit_args / read_fit_args round-trip
    assert FitConfig.from_arguments(reread) == FitConfig(out="runs/x", cache_dir="c", block_lrs=[1e-5, 1e-3])
    assert FitConfig.from_arguments({"data": "/d", "strategy": "full", "epochs": 2}) == replace(DEFAULTS, strategy="full", epochs=2)  # an older, shorter record


def test_validation_messages():
    with pytest.raises(ValueError, match="batch_size=0 must be a positive integer"):
        FitConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match="--strategy scratch trains none"):
        FitConfig(l2sp=0.01).validate("scratch")
    FitConfig(l2sp=0.01).validate()  # the strategy (auto, or an object) is not known yet
    options = {name: getattr(DEFAULTS, name) for name in STRATEGY_OPTIONS}
    for name, value, message in (("trainable_blocks", 2, "--trainable-blocks/--freeze only apply"), ("lora_rank", 4, "--lora-rank only applies"),
                                 ("batchnorm", "train", "--batchnorm applies"), ("head_warmup", False, "--no-head-warmup applies"),
                                 ("layer_decay", 0.8, "trains no backbone block")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            check_strategy_options("feature-extraction", {**options, name: value})
    with pytest.raises(ValueError, match="Unknown strategy 'nope'"):
        check_strategy_options("nope", options)
    with pytest.raises(ValueError, match="--budget applies to --strategy auto"):
        FitConfig(budget="10m").validate()
    FitConfig(strategy="auto", budget="10m").validate()


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45), (30, 30), (" 2M ", 120), (None, None)])
def test_budget_parsing(text, seconds):
    from headstart.config import parse_budget

    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "0s", "-5m", "m", "inf"])
def test_budget_parsing_refuses(text):
    from headstart.config import parse_budget

    with pytest.raises(ValueError, match="--budget"):
        parse_budget(text)


def test_web_form_fields_are_fit_options_with_fit_defaults():
    pytest.importorskip("fastapi")
    from headstart.config import ADVICE_KEYS
    from headstart.ui.app import TrainRequest

    names = {f.name for f in fields(FitConfig)}
    form = {k: v.default for k, v in TrainRequest.model_fields.items() if k not in ("path", "settings") and not v.is_required()}
    assert {"backbone", "strategy", "epochs", "patience"} <= set(TrainRequest.model_fields)
    assert set(TrainRequest.model_fields) - {"path", "settings"} <= names and set(ADVICE_KEYS) <= names
    for name, default in form.items():  # the form's None for patience is fit's "default" (the strategy's own)
        assert default == getattr(DEFAULTS, name) or (default is None and getattr(DEFAULTS, name) == "default"), name
