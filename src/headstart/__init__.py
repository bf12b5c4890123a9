"""headstart: transfer learning from pretrained networks for small labelled datasets."""

__version__ = "0.1.0"

from headstart._torchvision import import_torchvision  # noqa: E402

import_torchvision()  # before anything imports timm or transformers: see headstart/_torchvision.py

from headstart.analysis.advisor import advise  # noqa: E402
from headstart.api import Run, evaluate, fit, from_pretrained, predict, predict_proba, resume  # noqa: E402
from headstart.backbones import create_backbone, list_backbones  # noqa: E402
from headstart.data import load_dataset  # noqa: E402
from headstart.estimator import TransferClassifier  # noqa: E402
from headstart.freezing import freeze, freeze_report, unfreeze  # noqa: E402
from headstart.model import TransferModel  # noqa: E402
from headstart.pretraining import pretrain  # noqa: E402
from headstart.analysis.probes import profile  # noqa: E402
from headstart.analysis.ranking import rank  # noqa: E402

__all__ = [
    "Run",
    "TransferClassifier",
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
