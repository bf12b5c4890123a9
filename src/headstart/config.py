"""Every option of :func:`headstart.fit`, declared once: default, help and command-line spelling.

:class:`FitConfig` holds one field per option. ``fit``'s signature, the ``headstart fit`` and
``headstart pretrain`` parsers, ``pretrain``, ``TransferClassifier`` and the checkpoint that
``resume`` reads are generated from it or tested against it (tests/test_config.py), so adding an
option means adding a field here and using it in :func:`headstart.api.fit`.

Standard library only: ``headstart --help`` builds its parser from this module without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headstart.strategies import Strategy

STRATEGY_HELP = {
    "feature-extraction": "Fastest. The pretrained network stays as it is; only a new last layer learns your classes. Best with few examples.",
    "fine-tune": "The top layers of the network also adapt to your examples. Slower; it pays off when the network's features leave your classes mixed up or your examples look unlike what it learned from (`headstart advise` estimates the gain and the time).",
    "full": "Every layer adapts. Slowest; needs many examples.",
    "gradual": "Layers are unfrozen one at a time from the top (ULMFiT).",
    "lora": "Small adapter weights inside a transformer learn; the network itself stays frozen (text models).",
    "contrastive": "A handful of texts per class: the text model first learns from pairs of your examples (SetFit), then a new last layer.",
    "scratch": "No pretrained knowledge at all: a baseline that shows what transfer bought.",
}
STRATEGY_NAMES = tuple(STRATEGY_HELP)  # headstart.strategies.STRATEGIES registers these names, in this order
LONG_TEXT_MODES = ("truncate", "chunk")
"""What becomes of a text longer than the token window: its end is cut, or it is read in overlapping windows."""
AUGMENT_PRESETS = ("none", "light", "strong", "dihedral")
"""Augmentation presets. ``dihedral`` is for images with no up, down, left or right (solar cells,
microscopy, satellite tiles, spectrogram-free textures): ``light`` plus vertical flips and quarter
turns, the eight symmetries of the square."""
MONITORS = ("val_loss", "val_accuracy")
PRECISIONS = ("fp32", "bf16")
BATCHNORM_MODES = ("eval", "train")
TTA_MODES = ("none", "flip", "dihedral")
LOG_TO = ("tensorboard", "mlflow")
TASK_NAMES = ("auto", "classification", "regression", "multilabel")
"""What a label is (headstart.tasks registers the last three): ``auto`` reads a table's label column of
numbers as a regression target when they are not all whole or take more than
:data:`REGRESSION_DISTINCT` values, and as classes otherwise; folders are always classification."""
REGRESSION_DISTINCT = 20
REGRESSION_LOSSES = ("mse", "huber")
LABEL_DELIMITER = "|"


FIT_DEFAULT: Any = type("FitDefault", (), {"__repr__": lambda self: "FIT_DEFAULT"})()  # a Flag's default: the same as fit's


@dataclass(frozen=True)
class Flag:
    """How an option is spelled on the command line, and how the parsed value becomes ``fit``'s.

    ``default`` is the parser's own default where ``fit``'s cannot be written as a command-line value
    (``"default"`` sentinels, the backbone chosen from DATA); ``convert`` maps the parsed value
    (including that default) to the value ``fit`` takes.
    """

    name: str | None = None  # default: --field-name
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    action: str | None = None
    nargs: str | None = None
    const: Any = None
    default: Any = FIT_DEFAULT
    convert: Callable[[Any], Any] | None = None


def option(default: Any, help: str, cli: Flag | None = Flag(), *, saved: bool = True) -> Any:  # noqa: A002 - argparse's word
    """A FitConfig field; ``cli=None`` for Python-only options, ``saved=False`` for those a resumed run does not repeat."""
    return field(default=default, metadata={"help": help, "cli": cli, "saved": saved})


def parse_block_lrs(text: str | None) -> tuple[float, float] | dict[str, float] | None:
    """``LOW:HIGH`` (geometric from the first block to the head) or ``BLOCK=RATE,...`` (names or globs)."""
    if not text:
        return None
    try:
        if "=" not in text:
            low, high = text.split(":")
            return float(low), float(high)
        return {name.strip(): float(rate) for name, rate in (part.split("=") for part in text.split(",") if part.strip())}
    except ValueError:
        raise ValueError(f"--block-lrs {text!r}: write LOW:HIGH (e.g. 1e-5:1e-3) or BLOCK=RATE,... (e.g. 'layer5=1e-4,layer4=5e-5')") from None


def parse_budget(text: str | float | None) -> float | None:
    """``"90s"``, ``"10m"``, ``"1.5h"`` or a number of seconds -> seconds; ``None`` stays ``None``."""
    if text is None:
        return None
    value = str(text).strip().lower()
    unit = {"s": 1, "m": 60, "h": 3600}.get(value[-1:])
    try:
        seconds = float(value[:-1] if unit else value) * (unit or 1)
    except ValueError:
        raise ValueError(f"--budget {text!r}: write a time such as 90s, 10m or 1.5h") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"--budget {text!r}: the budget must be a positive time such as 90s, 10m or 1.5h")
    return seconds


def _block_ref(text: str | None) -> str | int | None:
    """A block index as an int (``--cut 3``, ``--cut -2``), a name as it is."""
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def _sentinel(value: Any) -> Any:
    """No flag given: the strategy's own value (``fit``'s ``"default"``)."""
    return "default" if value is None else value


def _grad_clip(value: float | None) -> float | str | None:
    """No flag: the strategy's clipping; ``--grad-clip 0``: none."""
    return "default" if value is None else (value or None)


@dataclass
class FitConfig:
    """The options of :func:`headstart.fit` (all but ``data`` and ``callbacks``), in its order."""

    backbone: str = option("efficientnet_lite0", "efficientnet_lite0, minilm, timm:ARCH, hf:ID_OR_DIR or a run dir (on the command line the default follows DATA: minilm for a table of texts, efficientnet_lite0 otherwise)",
                           Flag(default=None))  # fmt: skip
    weights: str | Path | None = option(None, "local weights file for a timm: backbone")
    strategy: str | Strategy = option("feature-extraction", "one of the strategies, or auto: measure the data first (see `headstart advise`) and use its settings except those given; contrastive: few-shot text (SetFit)",
                                      Flag(choices=(*STRATEGY_NAMES, "auto")))  # fmt: skip
    budget: str | float | None = option(None, "with --strategy auto: a time budget (90s, 10m, 1.5h; seconds in Python) for short measured trials of the leading candidates on train/val (successive halving); the winner is trained with the time left")
    out: str | Path | None = option(None, "run directory (default runs/<data>-<strategy>-<time>), never overwritten without overwrite; while training, its checkpoint/ holds what resume needs")
    epochs: int | None = option(None, "at most this many epochs of the strategy's main phase (fine-tune/full/lora/scratch: the network; gradual: each stage; feature-extraction/contrastive: the head's L-BFGS rounds); the head warm-up before it runs its own, up to 30, counted and shown apart (\"head warm-up epoch 12/30\", \"fine-tune epoch 2/6\") (default per strategy)", Flag(type=int))
    lr: float | None = option(None, "head learning rate (default per strategy)", Flag(type=float))
    body_lr: float | None = option(None, "learning rate of trainable backbone blocks (default lr/10)", Flag(type=float))
    patience: int | None | str = option("default", "epochs without improvement before early stopping (default per strategy; None in Python: never stop early)", Flag(type=int, default=None, convert=_sentinel))
    monitor: str | None = option(None, "what early stopping and the kept weights follow (default per strategy)", Flag(choices=MONITORS))
    trainable_blocks: int | None = option(None, "fine-tune: number of top backbone blocks that train", Flag(type=int))
    freeze: float | None = option(None, "fine-tune: fraction of backbone blocks frozen from the input (default 0.5)", Flag(type=float))
    batchnorm: str | None = option(None, "fine-tune/full/gradual: BatchNorm of trainable blocks in eval (default: keeps ImageNet statistics) or train mode", Flag(choices=BATCHNORM_MODES))
    head_warmup: bool | None = option(None, "fine-tune/full/gradual/lora: --no-head-warmup (False) skips fitting the head on cached features first (plain FT instead of LP-FT)",
                                      Flag(name="--no-head-warmup", action="store_const", const=False))  # fmt: skip
    layer_decay: float | None = option(None, "layer-wise lr decay: the block k below the head trains at lr*decay^k (replaces body_lr)", Flag(type=float))
    block_lrs: tuple[float, float] | dict[str, float] | None = option(None, "per-block rates: LOW:HIGH (a (low, high) tuple: geometric, first block to head) or BLOCK=RATE,... (a dict of names or globs)",
                                                                      Flag(convert=parse_block_lrs))  # fmt: skip
    l2sp: float | None = option(None, "L2-SP penalty toward the pretrained weights (a bare --l2sp: weight 0.01)", Flag(type=float, nargs="?", const=0.01))
    bss: float | None = option(None, "Batch Spectral Shrinkage penalty (a bare --bss: weight 0.001)", Flag(type=float, nargs="?", const=0.001))
    unfreeze_blocks: int | None = option(None, "gradual: backbone blocks trainable by the last stage (each stage: epochs, or until patience epochs without improvement)", Flag(type=int))
    lora_rank: int | None = option(None, "lora: adapter rank (default 8)", Flag(type=int))
    label_templates: int | None = option(None, "contrastive: add N 'This sentence is {class}' examples per class (default 0)", Flag(type=int))
    accumulate: int | None = option(None, "gradient accumulation: batches per optimizer step", Flag(type=int))
    grad_clip: float | None | str = option("default", "clip the gradient norm (default 1.0; 0 on the command line, None in Python, for none)", Flag(type=float, default=None, convert=_grad_clip))
    precision: str | None = option(None, "bf16: autocast on a GPU that supports it", Flag(choices=PRECISIONS))
    torch_compile: bool | None = option(None, "run the training steps through torch.compile (pays off on a GPU over many steps)", Flag(action="store_const", const=True))
    cut: str | int | None = option(None, "use the pooled output of this block (name or index) instead of the last one", Flag(convert=_block_ref))
    hidden: int | None = option(None, "hidden layer width of the new head (default: none, a linear head)", Flag(type=int))
    dropout: float = option(0.0, "dropout of the new head", Flag(type=float))
    augment: str | None = option(None, "image augmentation (default light when fine-tuning; dihedral adds vertical flips and quarter turns for images with no up or down)", Flag(choices=AUGMENT_PRESETS))
    image_size: int | None = option(None, "input resolution (of images, or of spectrogram images for audio) instead of the weights' own (saved with the run)", Flag(type=int))
    max_length: int | None = option(None, "text: token window of the encoder instead of its own (256 for minilm), at most its position limit (saved with the run, used at predict)",
                                    Flag(type=int))  # fmt: skip
    long_text: str | None = option(None, "text longer than the window: truncate (its end is dropped; the default) or chunk (overlapping windows, their embeddings averaged; feature-extraction only) (saved with the run)",
                                   Flag(choices=LONG_TEXT_MODES))  # fmt: skip
    tta: str | None = option(None, "test-time augmentation: predictions averaged over flips, or the 8 symmetries of the square (saved with the run; validation does not use it)", Flag(choices=TTA_MODES))
    batch_size: int = option(32, "examples per step, for training and embedding: it bounds peak memory; halved and the run restarted when the GPU runs out of memory (down to 1)", Flag(type=int))
    seed: int = option(0, "same data, seed and settings give identical results on CPU", Flag(type=int))
    overwrite: bool = option(False, "allow writing into an existing run directory", Flag(action="store_true"), saved=False)
    save: bool = option(True, "write the run directory; False only returns the trained Run", None)
    quiet: bool = option(False, "no progress output", Flag(action="store_true"), saved=False)
    cache_dir: str | Path | None = option(None, "embedding cache (default ~/.cache/headstart or $HEADSTART_CACHE)")
    text_column: str | None = option(None, "column of the texts in a CSV/TSV/JSONL table")
    label_column: str | None = option(None, "column of the labels in a CSV/TSV/JSONL table")
    task: str = option("auto", "what a label is: classification (one class per example), regression (a number), multilabel (several labels per example: "
                       "|-separated in one cell (see --label-delimiter), or one row per label in a listing); auto: a table's label column of numbers that are not "
                       "all whole, or of more than 20 distinct values, is a regression target, anything else classification (folders: one class per folder)",
                       Flag(choices=TASK_NAMES))  # fmt: skip
    label_delimiter: str = option(LABEL_DELIMITER, "multilabel: what separates several labels in one label cell (default |)")
    loss: str | None = option(None, "regression loss: mse (default) or huber (less swayed by outlying targets)", Flag(choices=REGRESSION_LOSSES))
    resume: bool = option(False, "continue the interrupted run in out from its checkpoint; use headstart.resume, which repeats the run's own arguments", None, saved=False)
    report: bool = option(True, "write report.html into the run directory (see headstart.report.write_report)", None, saved=False)
    log_to: str | None = option(None, "also log per-epoch metrics and the report there (optional extras)", Flag(choices=LOG_TO))
    log_uri: str | None = option(None, "TensorBoard log dir (default RUN/tensorboard) or MLflow tracking URI (default: MLflow's own)")

    @classmethod
    def from_arguments(cls, values: Mapping[str, Any]) -> FitConfig:
        """The options found in ``values`` (a call's ``locals()``, a saved checkpoint's arguments); the rest keep their defaults."""
        return cls(**{name: values[name] for name in FIELDS if name in values})

    @classmethod
    def from_cli(cls, values: Mapping[str, Any]) -> FitConfig:
        """The options of a parsed command line (``vars(namespace)``), each converted to the value ``fit`` takes."""
        converted = {}
        for f in fields(cls):
            flag = f.metadata["cli"]
            if flag is not None and f.name in values:
                converted[f.name] = flag.convert(values[f.name]) if flag.convert else values[f.name]
        return cls(**converted)

    def saved_arguments(self) -> dict[str, Any]:
        """What the checkpoint records so that ``resume`` repeats the run (paths as text; same keys as ever)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata["saved"]}

    def strategy_options(self) -> dict[str, Any]:
        """The keywords of :func:`headstart.strategies.make_strategy`, from this config."""
        return {name: getattr(self, name) for name in STRATEGY_OPTIONS}

    def validate(self, strategy: str | None = None) -> None:
        """Refuse values ``fit`` cannot use; ``strategy``: the name the run trains with, once known (``auto`` resolves late)."""
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive integer")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 8):
            raise ValueError(f"max_length={self.max_length!r} must be a whole number of tokens, at least 8")
        if strategy is not None and self.long_text == "chunk" and strategy != "feature-extraction":
            raise ValueError(f"--long-text chunk averages window embeddings of a frozen encoder: use it with --strategy feature-extraction, not {strategy}")
        if self.budget is not None:
            parse_budget(self.budget)
            if self.strategy != "auto" and strategy is None:
                raise ValueError("--budget applies to --strategy auto (it decides between strategies by trying them)")
        if strategy is not None and (self.l2sp or self.bss) and strategy in ("feature-extraction", "scratch"):
            raise ValueError(f"--l2sp/--bss regularise a pretrained backbone while it trains; --strategy {strategy} trains none")


FIELDS = tuple(f.name for f in fields(FitConfig))
DEFAULTS = FitConfig()
STRATEGY_OPTIONS = ("epochs", "lr", "body_lr", "patience", "monitor", "trainable_blocks", "freeze", "batchnorm", "head_warmup", "layer_decay", "block_lrs",
                    "accumulate", "grad_clip", "precision", "torch_compile", "unfreeze_blocks", "lora_rank", "label_templates")  # fmt: skip
"""The options :func:`headstart.strategies.make_strategy` takes (its keywords are tested against these)."""
ADVICE_KEYS = ("cut", "trainable_blocks", "lr", "body_lr", "epochs", "batchnorm")  # what advise() may set in Advice.fit_kwargs (strategy="auto")


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def check_strategy_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse options the strategy ``name`` would ignore (the messages name the command-line flags)."""
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {list(STRATEGY_NAMES)}")
    if (options["trainable_blocks"] is not None or options["freeze"] is not None) and name != "fine-tune":
        raise ValueError("--trainable-blocks/--freeze only apply to --strategy fine-tune")
    if options["unfreeze_blocks"] is not None and name != "gradual":
        raise ValueError("--unfreeze-blocks only applies to --strategy gradual")
    if options["lora_rank"] is not None and name != "lora":
        raise ValueError("--lora-rank only applies to --strategy lora")
    if options["label_templates"] is not None and name != "contrastive":
        raise ValueError("--label-templates only applies to --strategy contrastive")
    if (options["layer_decay"] is not None or options["block_lrs"] is not None) and name in ("feature-extraction", "lora"):
        raise ValueError(f"--layer-decay/--block-lrs set rates per backbone block; --strategy {name} trains no backbone block")
    if options["batchnorm"] is not None and name not in ("fine-tune", "full", "gradual"):
        raise ValueError("--batchnorm applies to --strategy fine-tune, full or gradual")
    if options["head_warmup"] is not None and name not in ("fine-tune", "full", "gradual", "lora"):
        raise ValueError("--no-head-warmup applies to --strategy fine-tune, full, gradual or lora")


# `pretrain`: fit with the scratch strategy and a source model's longer training.
PRETRAIN_ARCH = "resnet18"
PRETRAIN_ARCH_HELP = "timm architecture (resnet18, resnet10t, test_resnet ...), timm:ARCH, hf:CONFIG_DIR or an embedded name (default resnet18)"
PRETRAIN_OPTIONS = ("out", "epochs", "lr", "patience", "image_size", "augment", "batch_size", "seed", "overwrite", "save", "quiet", "cache_dir", "text_column", "label_column",
                    "task", "label_delimiter", "loss")  # fmt: skip
PRETRAIN_DEFAULTS = replace(DEFAULTS, strategy="scratch", epochs=30, lr=1e-3, patience=10)
PRETRAIN_HELP = {  # where pretrain's meaning is narrower than fit's
    "out": "run directory, later passed as --backbone (default runs/<data>-pretrain-<arch>-<time>)",
    "lr": "learning rate of every block",
    "patience": "epochs without better validation loss before stopping",
    "image_size": "input resolution (default the architecture's own, usually 224)",
    "augment": "image augmentation (default light: crops and flips)",
}


def parameters_doc(names: tuple[str, ...] = FIELDS, defaults: FitConfig = DEFAULTS, help: Mapping[str, str] | None = None) -> str:  # noqa: A002
    """A numpydoc block (``name : type, default=...`` and its help) for docstrings, from the same texts as ``--help``."""
    by_name = {f.name: f for f in fields(FitConfig)}
    lines = []
    for name in names:
        f = by_name[name]
        lines += [f"    {name} : {f.type}, default={getattr(defaults, name)!r}", f"        {(help or {}).get(name, f.metadata['help'])}"]
    return "\n".join(lines) + "\n"

# `headstart demo`: ELPV images, three strategies side by side (read by headstart.demo and the CLI parser)
DEMO_LIMIT = 800  # ELPV images used
DEMO_EPOCHS = 5  # epochs of fine-tune and scratch
DEMO_IMAGE_SIZE = 112  # the cells are 300 px; at 224 px and 6 epochs the demo took over 9 minutes on two cores, at 128 px 3:43
DEMO_OUT = "headstart-demo"  # in the current folder; never overwritten without --overwrite
