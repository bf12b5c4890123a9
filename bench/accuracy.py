"""Issue 2 accuracy figures: hymenoptera, elpv and SMS spam with the embedded backbones.

Usage: python bench/accuracy.py CONFIG [CONFIG ...]   (configs listed in CONFIGS below)
Each result is appended as one JSON line to bench/results/accuracy.jsonl, with the exact settings.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _rows import append, context

from headstart.api import fit
from headstart.data import load_dataset, load_elpv

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

CONFIGS = {
    "hym-fe": dict(data="hymenoptera", backbone="efficientnet_lite0", strategy="feature-extraction"),
    "hym-fe-288": dict(data="hymenoptera", backbone="efficientnet_lite0", strategy="feature-extraction", image_size=288),
    "hym-ft-288": dict(data="hymenoptera", backbone="efficientnet_lite0", strategy="fine-tune", image_size=288),
    "hym-ft": dict(data="hymenoptera", backbone="efficientnet_lite0", strategy="fine-tune"),
    "hym-scratch": dict(data="hymenoptera", backbone="efficientnet_lite0", strategy="scratch", epochs=30),
    "elpv-ft": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="fine-tune", epochs=20),
    "elpv-fe": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="feature-extraction"),
    "elpv4-ft": dict(data="elpv-4class", backbone="efficientnet_lite0", strategy="fine-tune", epochs=12),
    "elpv4-fe": dict(data="elpv-4class", backbone="efficientnet_lite0", strategy="feature-extraction"),
    "elpv-fe-300": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="feature-extraction", image_size=300),
    "sms-fe": dict(data="sms_spam", backbone="minilm", strategy="feature-extraction"),
    "sms-ft": dict(data="sms_spam", backbone="minilm", strategy="fine-tune", epochs=4),
    "elpv-ft-bntrain": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="fine-tune", epochs=20, batchnorm="train"),
    "sms-ft-acc": dict(data="sms_spam", backbone="minilm", strategy="fine-tune", epochs=4, monitor="val_accuracy"),
    "elpv-ft-acc": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="fine-tune", epochs=20, monitor="val_accuracy"),
    "elpv-full-acc": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="full", epochs=20, monitor="val_accuracy"),
    "elpv-ft-advised": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="fine-tune", epochs=20, trainable_blocks=5, batchnorm="train"),
    "elpv-ft-dihedral": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="fine-tune", epochs=25, patience=8, augment="dihedral"),
    "elpv-ft-lite2-dihedral": dict(data="elpv-binary", backbone="efficientnet_lite2", strategy="fine-tune", epochs=25, patience=8, augment="dihedral"),
    "elpv-ft-dihedral-tta": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="fine-tune", epochs=25, patience=8, augment="dihedral", tta="dihedral"),
    "elpv-ft-300": dict(data="elpv-binary", backbone="efficientnet_lite0", strategy="fine-tune", epochs=12, image_size=300),
}


def dataset(name: str):
    if name.startswith("elpv-"):
        return load_elpv(task=name.split("-", 1)[1], seed=0)
    if name == "sms_spam":
        return load_dataset(SHARED / "sms_spam" / "data.csv", seed=0)
    return load_dataset(SHARED / name, seed=0)


def main(names: list[str]) -> None:
    out = Path(__file__).parent / "results" / "accuracy.jsonl"
    for name in names:
        settings = dict(CONFIGS[name])
        data = dataset(settings.pop("data"))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            run = fit(data, out=Path(tmp) / "run", quiet=True, **settings)
        test = run.metrics["test"]
        extra = {}
        if settings.get("tta", "none") != "none":  # the same trained model without test-time views, for the comparison
            from dataclasses import replace

            from headstart.inference import predict_proba

            with_views = run.model.backbone.preprocessing
            run.model.backbone.preprocessing = replace(with_views, tta="none")
            probs = predict_proba(run.model, data.items("test"))
            run.model.backbone.preprocessing = with_views
            remap = np.array([run.model.classes.index(c) for c in data.classes])
            extra["test_accuracy_without_tta"] = float((probs.argmax(1) == remap[data.labels("test")]).mean())
        row = {
            "config": name,
            **CONFIGS[name],
            "test_accuracy": test["accuracy"],
            "balanced_accuracy": test["balanced_accuracy"],
            "macro_f1": test["macro_f1"],
            "n_test": test["n"],
            **extra,
            "epochs_run": {phase: sum(r["phase"] == phase for r in run.history.epochs) for phase in dict.fromkeys(r["phase"] for r in run.history.epochs)},
            "seconds": time.perf_counter() - started,
            **context(),
        }
        append(out, row)


if __name__ == "__main__":
    main(sys.argv[1:] or list(CONFIGS))
