"""headstart: transfer learning from pretrained networks for small labelled datasets.

``import headstart`` is cheap: the public names below are imported on first use (PEP 562), so the
command line prints ``--help`` without loading torch. The layout, from the bottom up:

* ``config`` (every ``fit`` option, declared once), ``rundir`` (the run directory's files),
  ``errors`` (what counts as a user error), ``io``, ``progress``;
* ``data`` (datasets, readers, images, audio, splits, preprocessing, loaders), ``freezing``;
* ``backbones`` (one entry point, :func:`create_backbone`, over a registry: timm, Hugging Face,
  embedded weights, run directories), ``model`` (:class:`TransferModel`: backbone + new head);
* ``caches`` (embeddings, decoded images, frozen-boundary activations), ``training`` (the loop, its
  state and callbacks, optimizers, regularizers, checkpoints, distributed runs);
* ``strategies`` (feature extraction, fine-tuning, … and how to write your own);
* ``analysis`` (layer probes, transferability scores, ranking, the advisor, the LR finder);
* ``api`` (:func:`fit`, :func:`resume`), ``inference`` (:func:`predict`, :func:`evaluate`,
  :func:`from_pretrained`), ``pretraining``, ``estimator``, ``export``, ``report``, ``style``;
* ``cli`` and ``ui`` on top.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from headstart._torchvision import install_import_hook

__version__ = "0.1.0"

install_import_hook()  # timm and transformers import torchvision; see headstart/_torchvision.py

# public name -> the module that defines it
_PUBLIC = {
    "Run": "headstart.api",
    "fit": "headstart.api",
    "resume": "headstart.api",
    "evaluate": "headstart.inference",
    "from_pretrained": "headstart.inference",
    "predict": "headstart.inference",
    "predict_proba": "headstart.inference",
    "TransferClassifier": "headstart.estimator",
    "TransferRegressor": "headstart.estimator",
    "TransferModel": "headstart.model",
    "advise": "headstart.analysis.advisor",
    "profile": "headstart.analysis.probes",
    "rank": "headstart.analysis.ranking",
    "create_backbone": "headstart.backbones.registry",
    "list_backbones": "headstart.backbones.registry",
    "load_dataset": "headstart.data.readers",
    "freeze": "headstart.freezing",
    "freeze_report": "headstart.freezing",
    "unfreeze": "headstart.freezing",
    "pretrain": "headstart.pretraining",
}
__all__ = [
    "Run",
    "TransferClassifier",
    "TransferRegressor",
    "TransferModel",
    "advise",
    "create_backbone",
    "evaluate",
    "fit",
    "freeze",
    "freeze_report",
    "from_pretrained",
    "list_backbones",
    "load_dataset",
    "predict",
    "predict_proba",
    "pretrain",
    "profile",
    "rank",
    "resume",
    "unfreeze",
]

if TYPE_CHECKING:
    from headstart.analysis.advisor import advise
    from headstart.analysis.probes import profile
    from headstart.analysis.ranking import rank
    from headstart.api import Run, fit, resume
    from headstart.backbones.registry import create_backbone, list_backbones
    from headstart.data.readers import load_dataset
    from headstart.estimator import TransferClassifier, TransferRegressor
    from headstart.freezing import freeze, freeze_report, unfreeze
    from headstart.inference import evaluate, from_pretrained, predict, predict_proba
    from headstart.model import TransferModel
    from headstart.pretraining import pretrain


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'headstart' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
