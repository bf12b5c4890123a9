"""``headstart``'s argument parser. The options of ``fit`` and ``pretrain`` are generated from FitConfig.

Torch-free: ``headstart --help`` and option errors never load a model library.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields

from headstart.cli.commands import (
    cmd_advise,
    cmd_demo,
    cmd_evaluate,
    cmd_export,
    cmd_fit,
    cmd_list,
    cmd_lr_find,
    cmd_predict,
    cmd_pretrain,
    cmd_profile,
    cmd_rank,
    cmd_report,
    cmd_resume,
    cmd_stylize,
    cmd_summary,
    cmd_ui,
)
from headstart.config import (
    DEFAULTS,
    DEMO_EPOCHS,
    DEMO_IMAGE_SIZE,
    DEMO_LIMIT,
    DEMO_OUT,
    FIELDS,
    FIT_DEFAULT,
    PRETRAIN_ARCH,
    PRETRAIN_ARCH_HELP,
    PRETRAIN_DEFAULTS,
    PRETRAIN_HELP,
    PRETRAIN_OPTIONS,
    FitConfig,
)
from headstart.style.defaults import (
    DEFAULT_CONTENT_LAYER,
    DEFAULT_STYLE_LAYERS,
    DEFAULT_STYLE_WEIGHT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TV_WEIGHT,
)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is None or action.default is False or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line "did you mean" for a mistyped command or option (exit status 2, as argparse's errors)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if isinstance(action, argparse._SubParsersAction) and action.choices is not None and value not in action.choices:
            self._did_you_mean("command", str(value), list(action.choices))
        super()._check_value(action, value)

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._subparser(getattr(parsed, "command", None))
            known = [o for a in (command or self)._actions for o in a.option_strings if o.startswith("--")]
            unknown = next((e for e in extras if e.startswith("-")), extras[0])
            if unknown.startswith("-"):
                (command or self)._did_you_mean("option", unknown.split("=", 1)[0], known)  # type: ignore[union-attr]
            (command or self).error(f"unexpected argument {unknown!r}")
        return parsed

    def _subparser(self, name: str | None) -> argparse.ArgumentParser | None:
        actions = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        return actions[0].choices.get(name) if actions and name else None  # type: ignore[union-attr]

    def _did_you_mean(self, what: str, given: str, known: list[str]) -> None:
        close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; see `{self.prog} --help`"
        print(f"error: unknown {what} {given}{hint}", file=sys.stderr)
        sys.exit(2)


def _data_options(p: argparse.ArgumentParser) -> None:
    """The options every command that reads DATA shares, spelled and explained once."""
    p.add_argument("--seed", type=int, default=0, help="seed of the split, subsets and probes")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default ~/.cache/headstart or $HEADSTART_CACHE)")
    p.add_argument("--text-column", default=None, help=TEXT_COLUMN_HELP)
    p.add_argument("--label-column", default=None, help=LABEL_COLUMN_HELP)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --quiet)")


def add_fit_options(p: argparse.ArgumentParser, names: tuple[str, ...], defaults: FitConfig, help: Mapping[str, str] | None = None) -> None:  # noqa: A002
    """One option per FitConfig field in ``names`` that has a command-line Flag: spelling, type, choices and help come from the field.

    ``defaults`` gives the parser's defaults (fit's, or pretrain's); a Flag's own parser default
    stands in where fit's is not a command-line value, unless ``defaults`` overrides it.
    """
    for f in fields(FitConfig):
        flag = f.metadata["cli"]
        if flag is None or f.name not in names:
            continue
        value = getattr(defaults, f.name)
        default = value if flag.default is FIT_DEFAULT or value != getattr(DEFAULTS, f.name) else flag.default
        spelling = {"type": flag.type, "choices": flag.choices, "action": flag.action, "nargs": flag.nargs, "const": flag.const}
        p.add_argument(flag.name or "--" + f.name.replace("_", "-"), dest=f.name, default=default, help=(help or {}).get(f.name, f.metadata["help"]),
                       **{key: v for key, v in spelling.items() if v is not None})  # fmt: skip


DATA_HELP = "image or audio folder, CSV/TSV/JSONL table of texts, or a path,label listing (as for fit)"
RUN_HELP = "run directory written by `headstart fit`"
JSON_HELP = "print the result as JSON"
QUIET_HELP = "no progress output"
BATCH_HELP = "examples per forward pass: it bounds peak memory"
TEXT_COLUMN_HELP = "column of the texts in a CSV/TSV/JSONL table (default: found from the header)"
LABEL_COLUMN_HELP = "column of the labels in a CSV/TSV/JSONL table (default: found from the header)"


def build_parser() -> argparse.ArgumentParser:
    """Every command's options; fit's and pretrain's are generated from :class:`headstart.config.FitConfig`."""
    parser = _Parser(prog="headstart", description="Transfer learning for small labelled datasets.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("fit", help="train a classifier on DATA by transfer from a pretrained backbone")
    p.add_argument("data", nargs="?", help="image or audio folder (class sub-folders, optional train/val/test), CSV/TSV/JSONL with text and label columns, or a path,label[,split] listing")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue the interrupted run RUN with its own arguments (same as `headstart resume RUN`)")
    add_fit_options(p, FIELDS, DEFAULTS)
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --quiet)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("pretrain", help="train a source model from scratch on DATA and save it as a backbone for fit/profile/rank/advise")
    p.add_argument("data", help="source dataset: image folder or CSV/TSV/JSONL, as for fit")
    p.add_argument("--arch", default=PRETRAIN_ARCH, help=PRETRAIN_ARCH_HELP)
    add_fit_options(p, PRETRAIN_OPTIONS, PRETRAIN_DEFAULTS, PRETRAIN_HELP)
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --quiet)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("resume", help="continue a fit that Ctrl-C or a crash interrupted, after its last finished epoch")
    p.add_argument("run", help="run directory of the interrupted fit (it holds checkpoint/)")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --quiet)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("lr-find", help="learning-rate range test on DATA (before a fit, or on a saved --run): suggested rate and a plot")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--backbone", default=None, help="efficientnet_lite0 (images) or minilm (text) by default")
    p.add_argument("--run", default=None, help="test the model of this saved run instead of a new one")
    p.add_argument("--trainable-blocks", type=int, default=0, help="0: the head alone on cached features; k: the top k blocks and the head (fine-tune)")
    p.add_argument("--steps", type=int, default=100, help="learning rates tried, geometrically from --start to --end")
    p.add_argument("--start", type=float, default=1e-7, help="smallest learning rate tried")
    p.add_argument("--end", type=float, default=10.0, help="largest learning rate tried (the test stops early when the loss diverges)")
    p.add_argument("--plot", default=None, help="PNG path (default lr-find-<data>.png; 'none' for no plot)")
    p.add_argument("--batch-size", type=int, default=32, help=BATCH_HELP)
    p.add_argument("--image-size", type=int, default=None, help="input resolution (default the weights' own)")
    _data_options(p)
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("evaluate", help="metrics of a saved run on a dataset")
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("data", help="dataset to score, in any form fit reads (its classes must be the run's)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split of DATA is scored")
    p.add_argument("--text-column", default=None, help=TEXT_COLUMN_HELP)
    p.add_argument("--label-column", default=None, help=LABEL_COLUMN_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label and probability for images (paths) or texts (strings or files of lines)")
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("inputs", nargs="+", help="image or audio files, or texts: each a string or a text file of one example per line")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="the K most probable labels of each input, with their probabilities")
    p.add_argument("--batch-size", type=int, default=32, help=BATCH_HELP)
    p.add_argument("--output", default=None, metavar="FILE", help="write the predictions to FILE, CSV or JSON by its extension (.csv, .json), instead of a table")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summary", help="blocks, parameter counts, trainable/frozen and BatchNorm mode of a backbone or run")
    p.add_argument("model", help="backbone name or run directory")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("list", help="embedded backbones")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("profile", help="per-block linear-probe accuracy and LogME of a backbone on DATA, with a plot")
    p.add_argument("data", help="image or audio folder, or CSV/TSV/JSONL (train and val splits are measured, test is left out)")
    p.add_argument("--backbone", default=None, help="efficientnet_lite0 (images) or minilm (text) by default")
    p.add_argument("--blocks", default=None, help="comma-separated block names or indices (default: all, or every k-th for deep models)")
    p.add_argument("--every", type=int, default=None, help="profile every k-th block")
    p.add_argument("--limit", type=int, default=None, help="stratified subset of this many examples")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of each block's linear probe")
    p.add_argument("--tolerance", type=float, default=0.01, help="accuracy within which a block is as good as the best (default 0.01 = 1 point)")
    p.add_argument("--plot", default=None, help="PNG path (default profile-<data>-<backbone>.png; 'none' for no plot)")
    p.add_argument("--run", default=None, help="profile this saved run's source backbone and input size, and save the result in RUN for its report")
    p.add_argument("--batch-size", type=int, default=32, help=BATCH_HELP)
    _data_options(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("rank", help="rank candidate backbones for DATA by a transferability score (one forward pass each)")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--backbones", default=None, help="comma-separated extra candidates (embedded ones of the modality are always included unless --only)")
    p.add_argument("--only", action="store_true", help="rank only the --backbones named")
    p.add_argument("--score", default="logme", choices=["logme", "hscore", "hscore-shrinkage", "leep", "nce"], help="transferability score the backbones are ranked by")
    p.add_argument("--limit", type=int, default=None, help="stratified subset of this many examples")
    p.add_argument("--batch-size", type=int, default=32, help=BATCH_HELP)
    _data_options(p)
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("advise", help="place DATA in the four cases (small/large x similar/different) and recommend how to fit it")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--backbone", default=None, help="efficientnet_lite0 (images) or minilm (text) by default")
    p.add_argument("--limit", type=int, default=400, help="examples profiled (stratified subset; size counts all)")
    p.add_argument("--every", type=int, default=None, help="profile every k-th block")
    _data_options(p)
    p.set_defaults(func=cmd_advise)

    p = sub.add_parser("report", help="(re)build the self-contained HTML report of a run (fit writes it too)")
    p.add_argument("run", help="run directory written by `headstart fit`")
    p.add_argument("--compare", action="append", default=None, metavar="RUN", help="another run on the same data to show side by side (repeatable); scratch/transfer siblings are found without it")
    p.add_argument("--out", default=None, help="where to write the page (default RUN/report.html)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a run's model as ONNX or TorchScript, with preprocessing.json beside it")
    p.add_argument("run", help="run directory written by `headstart fit`")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="file format of the exported model")
    p.add_argument("--out", default=None, help="output directory (default RUN/export)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="offline demo on the ELPV solar-cell images: feature extraction and fine-tuning against scratch, with reports")
    p.add_argument("--limit", type=int, default=DEMO_LIMIT, help=f"number of ELPV images used (default {DEMO_LIMIT})")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"epochs for fine-tune and scratch (default {DEMO_EPOCHS})")
    p.add_argument("--image-size", type=int, default=DEMO_IMAGE_SIZE, help=f"input resolution (default {DEMO_IMAGE_SIZE})")
    p.add_argument("--out", default=DEMO_OUT, help=f"folder for the three runs and their reports (default ./{DEMO_OUT}; never overwritten without --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("stylize", help="neural style transfer: optimise the pixels of CONTENT to take the style of STYLE (the backbone stays frozen)")
    p.add_argument("content", help="image whose layout is kept")
    p.add_argument("style", help="image whose colours and textures are taken")
    p.add_argument("--out", required=True, help="output image (.png, .jpg or .webp); never overwritten without --overwrite")
    p.add_argument("--backbone", default="efficientnet_lite0", help="convolutional image backbone: efficientnet_lite0 (default, offline), timm:vgg19 ...")
    p.add_argument("--weights", default=None, help="local weights file for a timm: backbone")
    p.add_argument("--size", type=int, default=256, help="longer side of the result in pixels (0: the content image's size)")
    p.add_argument("--style-scale", type=float, default=1.0, help="style image size relative to the result: larger gives larger strokes")
    p.add_argument("--layers", default=None, help=f"style blocks, comma-separated names or globs as for freezing (default on EfficientNet: {','.join(DEFAULT_STYLE_LAYERS)})")
    p.add_argument("--content-layer", default=None, help=f"block whose features keep the content (default on EfficientNet: {DEFAULT_CONTENT_LAYER})")
    p.add_argument("--content-weight", type=float, default=1.0, help="weight of the content loss")
    p.add_argument("--style-weight", type=float, default=DEFAULT_STYLE_WEIGHT, help="weight of the style loss")
    p.add_argument("--tv-weight", type=float, default=DEFAULT_TV_WEIGHT, help="total-variation smoothing")
    p.add_argument("--transform", default="softmax", choices=["softmax", "none"], help="softmax: SWAG features (Wang et al. 2021); none: Gatys' raw features")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="softmax temperature in units of each block's activation spread")
    p.add_argument("--steps", type=int, default=300, help="optimiser iterations")
    p.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"], help="optimiser of the pixels")
    p.add_argument("--lr", type=float, default=None, help="step size (default 1 for L-BFGS, 0.05 for Adam)")
    p.add_argument("--parameterization", default="fourier", choices=["fourier", "pixels"], help="optimise decorrelated Fourier coefficients (default) or raw pixels")
    p.add_argument("--init", default="content", choices=["content", "noise"], help="start from the content image or from seeded noise")
    p.add_argument("--seed", type=int, default=0, help="random seed of the optimisation (and of the noise start)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("ui", help="a local web page: choose or upload examples, see the advice, train, try the model, compare runs (extra: headstart[ui])")
    p.add_argument("--allow", action="append", default=None, metavar="DIR", help="a folder the page may read datasets from (repeatable; default the current folder)")
    p.add_argument("--project", default="headstart-project", help="folder for uploaded datasets and runs (default ./headstart-project)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on")
    p.add_argument("--max-upload-mb", type=int, default=2048, help="largest size an uploaded zip or set of images may unpack to (default 2048)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.set_defaults(func=cmd_ui)
    return parser
