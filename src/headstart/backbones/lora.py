"""Low-rank adapters (LoRA, through PEFT) inside a backbone: the base weights stay frozen.

PEFT's own save/load keeps the adapter and drops a new classification head unless it is listed in
``modules_to_save`` (PEFT #310). headstart does not use PEFT's saving: the adapter is described in
the run's ``config.json`` (``"adapter"``), its weights are saved with every other tensor of the
:class:`~headstart.model.TransferModel` (head included), and the run loader
(:func:`headstart.backbones.runs.load_run`) injects the same adapter before loading them, so a
reloaded model predicts exactly what the trained one did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from headstart.freezing import human_count


def add_lora(backbone: nn.Module, *, rank: int = 8, alpha: float = 16.0, dropout: float = 0.1, targets: Sequence[str] = ("query", "value")) -> str:
    """Inject LoRA adapters into the linear layers of ``backbone`` named ``targets``; freeze everything else in it.

    Returns a one-line report with the trainable parameter count. The adapter's settings are kept
    in ``backbone.adapter`` so that a saved model can be rebuilt with it.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as error:
        raise ImportError(f"--strategy lora needs PEFT: pip install peft ({error})") from None
    if getattr(backbone, "adapter", None):
        raise ValueError("this backbone already has a LoRA adapter")
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lora rank={rank!r} must be a positive integer (8 is usual)")
    linear_names = {name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in linear_names]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not linear layers of {type(backbone).__name__}; linear layers are named {sorted(linear_names)[:12]}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    inject_adapter_in_model(config, backbone)
    for name, param in backbone.named_parameters():
        param.requires_grad_("lora_" in name)
    backbone.adapter = adapter_config(rank=rank, alpha=alpha, dropout=dropout, targets=targets)
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    total = sum(p.numel() for p in backbone.parameters())
    return f"LoRA rank {rank} on {', '.join(targets)}: {human_count(trainable)} trainable adapter parameters ({100 * trainable / total:.2f}% of the backbone's {human_count(total)})"


def adapter_config(*, rank: int, alpha: float, dropout: float, targets: Sequence[str]) -> dict[str, Any]:
    """What ``config.json`` records of an adapter; ``add_lora(backbone, **config)`` rebuilds it."""
    return {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": list(targets)}
