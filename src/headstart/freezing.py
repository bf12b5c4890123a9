"""Freezing by block: no gradient, not in the optimizer, statistics layers in inference mode.

A block is *frozen* when it has parameters and none of them requires a gradient; that is the only
state, so it cannot drift from the truth. Models that own blocks (:class:`~headstart.backbones.Backbone`,
:class:`~headstart.model.TransferModel`) use :class:`FreezableMixin`, whose ``train()`` puts every
frozen block back in eval mode, so BatchNorm running statistics in frozen blocks never move (the
pitfall the Keras transfer-learning guide warns about) and dropout there is off. A freeze takes
effect at once: nothing needs re-compiling, and the trainer builds its optimizer from the
parameters that still require gradients.

>>> report = freeze(model, model.blocks[:-3])        # like Keras' model.layers[:-3]
>>> report = freeze(model, until="stage4")           # everything up to and including stage4
>>> report = freeze(model, fraction=0.75)            # the first 75% of blocks
>>> report = freeze(model, ["stem", "stage*"])       # names and globs
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, Union

import torch
from torch import nn

from headstart.blocks import Block, BlockList
from headstart.errors import UnknownName, WrongType

BlockSelector = Union[Block, str, int]


class HasBlocks(Protocol):
    @property
    def blocks(self) -> BlockList: ...


class FreezableMixin:
    """Keeps frozen blocks (and, if asked, every BatchNorm) in eval mode whenever ``train()`` is called."""

    batchnorm: str = "train"  # "eval": running statistics of trainable blocks stay fixed too

    def train(self, mode: bool = True):  # type: ignore[no-untyped-def]
        super().train(mode)  # type: ignore[misc]
        if mode:
            for block in self.blocks:  # type: ignore[attr-defined]
                if is_frozen(block):
                    block.module.eval()
            if self.batchnorm == "eval":
                for layer in _stat_layers(self):  # type: ignore[arg-type]
                    layer.eval()
        return self


def set_batchnorm(model: nn.Module, mode: str) -> None:
    """``"eval"`` keeps every BatchNorm in inference mode during training (its weights still learn).

    When fine-tuning on data far from the source, batch statistics differ from the stored running
    statistics; letting them drive the layers changes every feature the new head was fitted on, and
    the first steps undo the pretraining. The Keras guide therefore keeps BatchNorm in inference mode
    when fine-tuning; ``"train"`` (the PyTorch default) lets trainable blocks re-estimate them.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"batchnorm={mode!r}; use 'eval' or 'train'")
    for module in model.modules():
        if isinstance(module, FreezableMixin):
            module.batchnorm = mode
    model.train(model.training)


def is_frozen(block: Block) -> bool:
    params = list(block.module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _stat_layers(module: nn.Module) -> list[nn.Module]:
    """Layers that keep running statistics (BatchNorm): these must stay in eval mode when frozen."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def norm_kinds(module: nn.Module) -> str:
    """The normalisation layers of a block by kind, e.g. ``BatchNorm2d×3, LayerNorm×1``: what decides how it may be frozen."""
    counts: dict[str, int] = {}
    for layer in module.modules():
        if isinstance(layer, _NORM_TYPES) or type(layer).__name__.endswith(("Norm", "Norm1d", "Norm2d", "NormAct2d")):
            counts[type(layer).__name__] = counts.get(type(layer).__name__, 0) + 1
    return ", ".join(f"{kind}×{n}" for kind, n in counts.items()) or "-"


def select_blocks(
    model: HasBlocks,
    blocks: Iterable[BlockSelector] | BlockSelector | slice | None = None,
    *,
    until: str | int | None = None,
    fraction: float | None = None,
) -> list[Block]:
    """Resolve one way of naming blocks (selectors, ``until`` or ``fraction``) into blocks."""
    all_blocks = model.blocks
    given = [x is not None for x in (blocks, until, fraction)]
    if sum(given) > 1:
        raise ValueError("Pass only one of blocks, until= and fraction=")
    if until is not None:
        return list(all_blocks[: all_blocks.index_of(until) + 1])
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction={fraction} must be between 0 and 1")
        return list(all_blocks[: math.floor(fraction * len(all_blocks) + 1e-9)])
    if blocks is None:
        return list(all_blocks)
    if isinstance(blocks, slice):
        return list(all_blocks[blocks])
    if isinstance(blocks, (Block, str, int)):
        blocks = [blocks]
    chosen: dict[int, Block] = {}
    for selector in blocks:
        if isinstance(selector, Block):
            matches = [all_blocks[selector.index]] if selector.name == all_blocks[selector.index].name else []
        elif isinstance(selector, int):
            matches = [all_blocks[all_blocks.index_of(selector)]]
        elif isinstance(selector, str):
            matches = [b for b in all_blocks if fnmatch.fnmatchcase(b.name, selector)]
        else:
            raise WrongType(f"Cannot select a block with {selector!r}; use a Block, name, glob or index")
        if not matches:
            raise UnknownName(f"No block matches {getattr(selector, 'name', selector)!r}; blocks are {all_blocks.names()}")
        chosen.update({b.index: b for b in matches})
    return [chosen[i] for i in sorted(chosen)]


def _set_requires_grad(model: HasBlocks, chosen: list[Block], requires_grad: bool) -> None:
    for block in chosen:
        for param in block.module.parameters():
            param.requires_grad_(requires_grad)
        if not requires_grad:
            block.module.eval()
        elif isinstance(model, nn.Module) and model.training:
            block.module.train()


def freeze(
    model: HasBlocks,
    blocks: Iterable[BlockSelector] | BlockSelector | slice | None = None,
    *,
    until: str | int | None = None,
    fraction: float | None = None,
) -> FreezeReport:
    """Freeze blocks (all of them by default); returns a :class:`FreezeReport` of the result.

    See Also
    --------
    unfreeze : the inverse.
    """
    _set_requires_grad(model, select_blocks(model, blocks, until=until, fraction=fraction), False)
    return freeze_report(model)


def unfreeze(
    model: HasBlocks,
    blocks: Iterable[BlockSelector] | BlockSelector | slice | None = None,
    *,
    until: str | int | None = None,
    fraction: float | None = None,
) -> FreezeReport:
    """Make blocks trainable again (all by default); the inverse of :func:`freeze`."""
    _set_requires_grad(model, select_blocks(model, blocks, until=until, fraction=fraction), True)
    return freeze_report(model)


def freeze_bottom(model: HasBlocks, trainable_blocks: int) -> FreezeReport:
    """Freeze all but the last ``trainable_blocks`` blocks and make those trainable."""
    all_blocks = model.blocks
    if not 0 <= trainable_blocks <= len(all_blocks):
        raise ValueError(f"trainable_blocks={trainable_blocks} must be between 0 and {len(all_blocks)}")
    cut = len(all_blocks) - trainable_blocks
    require = getattr(model, "require_blocks", None)
    if require is not None and any(b.name != "classifier" for b in all_blocks[cut:]):  # a body block would train
        require(f"training its top {trainable_blocks} block(s)")
    unfreeze(model, slice(cut, None))
    return freeze(model, slice(0, cut)) if cut else freeze_report(model)


@dataclass(frozen=True)
class BlockState:
    name: str
    parameters: int
    trainable: bool
    batchnorm_layers: int
    batchnorm_mode: str  # "eval", "train" or "-"


@dataclass(frozen=True)
class FreezeReport:
    """What is frozen: per block, and totals."""

    blocks: tuple[BlockState, ...]

    @property
    def trainable(self) -> int:
        return sum(b.parameters for b in self.blocks if b.trainable)

    @property
    def frozen(self) -> int:
        return sum(b.parameters for b in self.blocks if not b.trainable)

    @property
    def frozen_blocks(self) -> list[str]:
        return [b.name for b in self.blocks if not b.trainable and b.parameters]

    @property
    def bn_in_eval(self) -> int:
        return sum(b.batchnorm_layers for b in self.blocks if b.batchnorm_mode == "eval")

    def __str__(self) -> str:
        """In words, as the CLI prints it (a summary's caption): never a Python repr."""
        return (
            f"{human_count(self.trainable)} parameters trainable, {human_count(self.frozen)} frozen; "
            f"{len(self.frozen_blocks)} of {len(self.blocks)} blocks frozen; {self.bn_in_eval} BatchNorm layers in eval mode"
        )

    def to_rows(self) -> list[dict[str, object]]:
        return [b.__dict__.copy() for b in self.blocks]


def freeze_report(model: HasBlocks) -> FreezeReport:
    """Describe the current frozen/trainable state and BatchNorm modes of every block."""
    states = []
    for block in model.blocks:
        bns = _stat_layers(block.module)
        mode = "-" if not bns else ("train" if any(m.training for m in bns) else "eval")
        states.append(BlockState(block.name, block.num_parameters(), not is_frozen(block), len(bns), mode))
    return FreezeReport(tuple(states))


def human_count(n: int) -> str:
    """Parameter counts as people read them: 1.05M, 12.3K, 512."""
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


class FreezeAuditError(ValueError):
    """What a phase is about to train differs from what is meant to be frozen (the CLI prints it and exits 2)."""


def audit_freeze(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    meant_frozen: set[str],
    phase: str = "train",
) -> str:
    """Check, before a phase trains, that freezing is what it claims to be; return the audit line.

    Checked: every parameter named in ``meant_frozen`` (the frozen set the phase was built with, or
    the one a checkpoint recorded) still has ``requires_grad=False``, holds no gradient and is not
    in ``optimizer``; every parameter in ``optimizer`` requires a gradient and every trainable one
    is in it (else it would silently not train); BatchNorm layers in frozen blocks (all of them
    when the model keeps BatchNorm in eval) are in eval mode, so their statistics do not move.
    Lightning's unfreezing loses its frozen set on resume (Lightning #6891): this catches that.

    Raises
    ------
    FreezeAuditError
        On the first kind of mismatch, naming up to three parameters or layers.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    params = dict(model.named_parameters())
    problems: list[tuple[str, list[str]]] = [
        ("meant to be frozen but requires a gradient", [n for n in sorted(meant_frozen) if n in params and params[n].requires_grad]),
        ("meant to be trainable but frozen", [n for n, p in params.items() if n not in meant_frozen and not p.requires_grad]),
        ("frozen but in the optimizer", [n for n, p in params.items() if not p.requires_grad and id(p) in in_optimizer]),
        ("frozen but holds a gradient", [n for n, p in params.items() if not p.requires_grad and p.grad is not None]),
        ("trainable but not in the optimizer", [n for n, p in params.items() if p.requires_grad and id(p) not in in_optimizer]),
        ("in the optimizer but not part of the model", [f"{len(in_optimizer - set(names))} tensors"] if in_optimizer - set(names) else []),
    ]
    bn_total, bn_eval = 0, 0
    if model.training:
        frozen_bn: list[str] = []
        blocks = model.blocks if isinstance(model, FreezableMixin) else []  # type: ignore[attr-defined]
        must_be_eval = {id(m) for block in blocks if is_frozen(block) for m in _stat_layers(block.module)}
        if getattr(model, "batchnorm", "train") == "eval":
            must_be_eval |= {id(m) for m in _stat_layers(model)}
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                bn_total += 1
                bn_eval += not module.training
                if id(module) in must_be_eval and module.training:
                    frozen_bn.append(name)
        problems.append(("BatchNorm meant to stay in eval mode is training (its statistics would move)", frozen_bn))
    for what, found in problems:
        if found:
            more = f" and {len(found) - 3} more" if len(found) > 3 else ""
            raise FreezeAuditError(f"freeze audit ({phase}): {len(found)} {what}: {', '.join(found[:3])}{more}; the run was stopped before training")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return (
        f"freeze audit ({phase}): ok: {human_count(trainable)} trainable in {len(optimizer.param_groups)} optimizer groups, "
        f"{human_count(frozen)} frozen with no gradient and not in the optimizer, BatchNorm in eval {bn_eval}/{bn_total}"
    )


def check_frozen_set(model: nn.Module, recorded: Iterable[str], *, phase: str) -> None:
    """Refuse to continue a phase whose rebuilt model freezes other parameters than the checkpoint recorded."""
    changed = sorted(set(recorded) ^ frozen_parameter_names(model))
    if changed:
        raise FreezeAuditError(
            f"freeze audit ({phase}): after resume {len(changed)} parameters differ from the frozen set the checkpoint recorded "
            f"({', '.join(changed[:3])}); the run was stopped before training"
        )


def frozen_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of ``model`` that do not require a gradient."""
    return {n for n, p in model.named_parameters() if not p.requires_grad}


@torch.no_grad()
def fold_batchnorm(module: nn.Module, example: torch.Tensor, *, tolerance: float = 1e-4) -> tuple[nn.Module, int]:
    """A copy of ``module`` for inference, each BatchNorm folded into the convolution that feeds it.

    In inference mode a BatchNorm is a fixed affine map per channel, so it can live in the preceding
    convolution's weights and bias at no cost; run as its own operator it was 28% of the embedding
    pass of EfficientNet-Lite0 (BENCHMARKS.md, P4). Pairs are found by running ``example`` through
    the copy: a BatchNorm whose input is exactly the tensor a convolution returned. The copy is then
    checked against ``module`` on ``example`` (largest difference relative to the largest output,
    at most ``tolerance``); if a pairing was wrong, e.g. a convolution's output also read elsewhere,
    ``module`` itself comes back. Returns ``(the model to run, number of BatchNorm layers folded)``.
    Never use the copy for training: it shares nothing with ``module``.
    """
    module.eval()
    folded_model = copy.deepcopy(module)
    produced: dict[int, str] = {}
    consumed: dict[str, int] = {}
    alive: list[torch.Tensor] = []  # outputs kept until the pass ends, so no two tensors share an id

    def record_conv(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:  # a hook returning a value would replace the output
            alive.append(output)
            produced[id(output)] = name

        return hook

    def record_norm(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            consumed[name] = id(inputs[0])

        return hook

    modules = dict(folded_model.named_modules())
    hooks = [m.register_forward_hook(record_conv(n)) for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(record_norm(n)) for n, m in modules.items() if isinstance(m, nn.BatchNorm2d) and m.running_var is not None]
    try:
        expected = module(example)
        folded_model(example)
    finally:
        for hook in hooks:
            hook.remove()
    pairs = [(produced[tensor], norm) for norm, tensor in consumed.items() if tensor in produced]
    if not pairs:
        return module, 0
    for conv_name, norm_name in pairs:
        conv, norm = modules[conv_name], modules[norm_name]
        scale = torch.rsqrt(norm.running_var + norm.eps) * (norm.weight if norm.affine else 1.0)
        shift = (norm.bias if norm.affine else 0.0) - norm.running_mean * scale
        conv.weight.mul_(scale.reshape(-1, *[1] * (conv.weight.dim() - 1)))
        conv.bias = nn.Parameter((conv.bias if conv.bias is not None else torch.zeros_like(shift)) * scale + shift, requires_grad=conv.weight.requires_grad)
        parent, _, attribute = norm_name.rpartition(".")
        rest = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None)) if isinstance(m, nn.Module)]  # timm's BatchNormAct2d
        setattr(modules[parent] if parent else folded_model, attribute, nn.Sequential(*rest) if rest else nn.Identity())
    error = float((folded_model(example) - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
    return (folded_model, len(pairs)) if error <= tolerance else (module, 0)
