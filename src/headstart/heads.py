"""New heads that replace a backbone's source head (classification, regression or multi-label: :mod:`headstart.tasks`)."""

from __future__ import annotations

from typing import Any

from torch import nn


class ClassifierHead(nn.Module):
    """Linear classifier on pooled features, optionally with one hidden layer and dropout.

    Parameters
    ----------
    in_features : int
        Size of the backbone's pooled features.
    num_classes : int
        Number of outputs: target classes (2 for a binary task: softmax over two logits), labels
        (multilabel), or 1 (regression); see :meth:`headstart.tasks.Task.head_width`.
    hidden : int or None, default=None
        Width of an optional hidden layer (ReLU).
    dropout : float, default=0.0
        Dropout before the (last) linear layer.
    """

    def __init__(self, in_features: int, num_classes: int, *, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"A head needs at least 1 output, got {num_classes}")
        self.in_features, self.num_classes, self.hidden, self.dropout = in_features, num_classes, hidden, dropout
        layers: list[nn.Module] = []
        width = in_features
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.ReLU()]
            width = hidden
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features):  # type: ignore[no-untyped-def]
        return self.layers(features)

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "num_classes": self.num_classes, "hidden": self.hidden, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClassifierHead:
        return cls(config["in_features"], config["num_classes"], hidden=config.get("hidden"), dropout=config.get("dropout", 0.0))
