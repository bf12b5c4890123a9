"""Blocks of any timm model, read from its own structure instead of a hand-written rule per family.

A timm model's ``forward_features`` runs its top-level modules (stem, stage container, final norm
or conv) in order for most families; ``group_matcher(coarse=True)`` (what timm's layer-wise
learning-rate decay uses) says which parameters belong to the stem, to each stage and to the end.
We flatten the top-level modules one level (``stages.0``, ``stages.1``, ...), stop at the head,
and merge consecutive modules of one group into a block. The result is only used when it is exact:
running the blocks in sequence must give ``forward_features`` (checked once per architecture with a
fixed input, skipped for the classes the test suite checks), and every parameter before the head
must be in a block. Otherwise the model is not split, and strategies that need blocks refuse it.
"""

from __future__ import annotations

import torch
from torch import nn

# Top-level modules from which on everything belongs to forward_head, not forward_features.
_HEAD_NAMES = frozenset({"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "attn_pool", "head_dist", "flatten", "pre_logits"})

# Classes whose generic split tests/test_timm_blocks.py runs against forward_features; others are checked when built.
VERIFIED_CLASSES = frozenset(
    {"ByobNet", "MaxxVit", "MambaOut", "NormFreeNet", "MobileNetV3", "RegNet", "DenseNet", "SwinTransformer", "EfficientVit",
     "Levit", "LevitDistilled", "GhostNet", "RepVit", "FastVit", "EdgeNeXt"}
)  # fmt: skip
_CHECKED: dict[tuple[str, str, int, int], bool] = {}


class _Tokens(nn.Module):
    """A LeViT stem's maps laid out as tokens, as its ``forward_features`` does between stem and stages."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The top-level modules ``forward_features`` runs, in order, with containers opened one level."""
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in _HEAD_NAMES:
            break
        if isinstance(child, nn.Identity):
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            units += [(f"{name}.{sub}", module) for sub, module in child.named_children()]
        else:
            units.append((name, child))
        if name == "stem" and type(model).__name__.startswith("Levit") and not getattr(model, "use_conv", True):
            units.append(("stem.tokens", _Tokens()))
    return units


def _block_name(unit: str, model: nn.Module, is_stem: bool) -> str:
    if is_stem:
        return "stem"
    container, _, index = unit.rpartition(".")
    if index.isdigit():
        return f"{'block' if container == 'blocks' and hasattr(model, 'patch_embed') else 'stage'}{index}"
    return index


def _grouped(model: nn.Module, units: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]] | None:
    """Consecutive units of one ``group_matcher`` group merged into a named block; None if the groups are out of order."""
    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):
        matcher = None
    from timm.models import group_parameters

    groups = group_parameters(model, matcher, reverse=True) if matcher else {}
    has_stem = isinstance(matcher, dict) and "stem" in matcher
    merged: list[tuple[int | None, list[str], list[nn.Module]]] = []  # (last group, unit names, modules)
    for position, (name, module) in enumerate(units):
        ids = [groups.get(f"{name}.{p}", position) if groups else position for p, _ in module.named_parameters()]
        if merged and (not ids or merged[-1][0] is None or min(ids) <= merged[-1][0]):
            if ids and merged[-1][0] is not None and min(ids) < merged[-1][0]:
                return None  # a module whose parameters belong to an earlier stage: not a sequence of stages
            last = merged[-1]
            merged[-1] = (max([*ids, *([] if last[0] is None else [last[0]])]) if ids else last[0], [*last[1], name], [*last[2], module])
        else:
            merged.append((max(ids) if ids else None, [name], [module]))
    labels: list[str] = []
    for index, (group, names, _) in enumerate(merged):
        label = _block_name(names[0], model, is_stem=index == 0 and (has_stem and group == 0 or "." not in names[0]))
        labels.append(f"{label}_{index}" if label in labels else label)
    parts = _end_at_documented_outputs(model, [list(zip(names, modules)) for _, names, modules in merged])
    return [(label, part[0][1] if len(part) == 1 else nn.Sequential(*(m for _, m in part))) for label, part in zip(labels, parts)]


def _end_at_documented_outputs(model: nn.Module, parts: list[list[tuple[str, nn.Module]]]) -> list[list[tuple[str, nn.Module]]]:
    """Move what follows a documented stage output (DenseNet's transition after its dense block) to the next block.

    A cut then pools exactly the output ``feature_info`` documents, with its width.
    """
    documented = set(output_widths(model))
    for i in range(len(parts) - 1):
        ends = [j for j, (name, _) in enumerate(parts[i]) if name in documented]
        if ends and ends[-1] < len(parts[i]) - 1:
            parts[i], parts[i + 1] = parts[i][: ends[-1] + 1], parts[i][ends[-1] + 1 :] + parts[i + 1]
    return parts


def _covers_body(model: nn.Module, blocks: list[tuple[str, nn.Module]]) -> bool:
    """Every parameter ``forward_features`` can use (all but the head's) is in a block."""
    names = [name for name, _ in model.named_children()]
    start = next((i for i, name in enumerate(names) if name in _HEAD_NAMES), len(names))
    head = {id(p) for _, child in list(model.named_children())[start:] for p in child.parameters()}
    inside = {id(p) for _, module in blocks for p in module.parameters()}
    return all(id(p) in inside for p in model.parameters() if id(p) not in head)


def _runs_as_forward_features(model: nn.Module, blocks: list[tuple[str, nn.Module]]) -> bool:
    """Whether the blocks in sequence give ``forward_features`` on a fixed input (no random numbers drawn, no statistics moved)."""
    size = input_size(model)
    x = torch.linspace(-2.0, 2.0, 3 * size * size).reshape(1, 3, size, size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected, got = model.forward_features(x), x
            for _, block in blocks:
                got = block(got)
        return got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
    except Exception:  # noqa: BLE001 - a block that cannot run on its own means the split is wrong, whatever the error
        return False
    finally:
        model.train(was_training)


def generic_blocks(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """Named runnable blocks of ``model`` from its structure, or None when no exact split is found."""
    blocks = _grouped(model, _units(model))
    if blocks is None or len(blocks) < 2 or not _covers_body(model, blocks):
        return None
    kind = type(model).__name__
    if kind in VERIFIED_CLASSES:
        return blocks
    # the same architecture built with other arguments (img_size=, class_token=) is checked again
    key = (kind, str(model.pretrained_cfg.get("architecture", "")), input_size(model), sum(p.numel() for p in model.parameters()))
    if key not in _CHECKED:
        _CHECKED[key] = _runs_as_forward_features(model, blocks)
    return blocks if _CHECKED[key] else None


def input_size(model: nn.Module) -> int:
    """The image size the model was built for: a fixed-size model's own (built with ``img_size=``), else its pretrained config's."""
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None) or getattr(model, "img_size", None)
    if fixed is not None:
        return int(fixed[0] if isinstance(fixed, (tuple, list)) else fixed)
    return int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def generic_pooling(model: nn.Module) -> str:
    """How the maps of a generically split model are pooled: channels-last maps (Swin, MambaOut) or the rest."""
    return "avg_nhwc" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "avg"


def generic_post_pool_norm(model: nn.Module) -> nn.Module | None:
    """The LayerNorm a timm head applies after pooling (NormMlpClassifierHead, MambaOut's MlpHead)."""
    norm = getattr(getattr(model, "head", None), "norm", None)
    return norm if isinstance(norm, nn.LayerNorm) else None


def output_widths(model: nn.Module) -> dict[str, int]:
    """Channels of the stage outputs timm documents (``feature_info``), keyed by module name."""
    return {info["module"]: int(info["num_chs"]) for info in getattr(model, "feature_info", [])}
