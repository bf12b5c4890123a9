"""Regularisers toward the pretrained network, added to the loss by :func:`headstart.training.loop.fit_model`.

==========  ====================================================================================
``L2SP``     ``alpha/2 * ||w - w_pretrained||^2`` over the backbone (Li et al., ICML 2018): the body
             may move, but is pulled back toward the source weights instead of toward zero, so
             weight decay is turned off in the backbone when it is used.
``BSS``      ``eta * sum of the k smallest squared singular values`` of each batch's pooled features
             (Chen et al., NeurIPS 2019, Batch Spectral Shrinkage): suppresses the feature directions
             that small target sets cannot estimate and that carry negative transfer.
==========  ====================================================================================

Defaults follow TLlib's scripts (L2-SP trade-off 0.01, BSS trade-off 0.001 with k=1). DELTA
(behaviour regularisation with attention from a second, frozen copy of the source network) is not
implemented: it needs a second forward pass through a full source copy per batch, which doubles
the cost on CPU for a method TLlib itself reports on par with L2-SP.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class Penalty(Protocol):
    """A term added to the loss; ``features`` are the pooled backbone features of the batch when
    ``needs_features`` (else ``None``)."""

    needs_features: bool
    replaces_weight_decay: bool

    def __call__(self, model: nn.Module, features: torch.Tensor | None) -> torch.Tensor: ...


class L2SP:
    """L2 distance of the backbone to its pretrained weights (captured when this is created).

    Create it from the model before any backbone weight moves (``fit`` does): the reference is then
    the source network in every phase, including after a resume, which rebuilds the model from the
    same pretrained weights.
    """

    needs_features = False
    replaces_weight_decay = True

    def __init__(self, model: nn.Module, alpha: float = 0.01) -> None:
        if alpha <= 0:
            raise ValueError(f"l2sp={alpha} must be positive (TLlib uses 0.01)")
        self.alpha = alpha
        backbone = getattr(model, "backbone", model)
        self.reference = {name: p.detach().clone() for name, p in backbone.named_parameters()}

    def __call__(self, model: nn.Module, features: torch.Tensor | None) -> torch.Tensor:
        backbone = getattr(model, "backbone", model)
        terms = [(p - self.reference[name]).pow(2).sum() for name, p in backbone.named_parameters() if p.requires_grad and name in self.reference]
        if not terms:
            return torch.zeros((), device=next(model.parameters()).device)
        return 0.5 * self.alpha * torch.stack(terms).sum()


class BSS:
    """Batch Spectral Shrinkage on the pooled features of each batch."""

    needs_features = True
    replaces_weight_decay = False

    def __init__(self, eta: float = 0.001, k: int = 1) -> None:
        if eta <= 0 or k < 1:
            raise ValueError(f"bss={eta} must be positive and k={k} at least 1 (TLlib uses 0.001 and 1)")
        self.eta, self.k = eta, k

    def __call__(self, model: nn.Module, features: torch.Tensor | None) -> torch.Tensor:
        if features is None:
            raise ValueError("BSS needs the pooled features of the batch; the model must have a backbone and a head")
        singular = torch.linalg.svdvals(features.float())  # descending
        return self.eta * singular[-self.k :].pow(2).sum()


def make_penalties(model: nn.Module, *, l2sp: float | None = None, bss: float | None = None) -> list[Penalty]:
    """The penalties asked for (``None`` or 0 leaves one out)."""
    penalties: list[Penalty] = []
    if l2sp:
        penalties.append(L2SP(model, l2sp))
    if bss:
        penalties.append(BSS(bss))
    return penalties
