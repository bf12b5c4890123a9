"""Seeded runs whose weights, metrics and losses must be bit-identical between two commits.

Usage: PYTHONPATH=CHECKOUT/src python bench/identical.py OUT_DIR [RUN ...]
Writes generated data (24 photos in 3 classes; 60 chatterbot-corpus utterances in 3 topics), fits
each run with seed 0 into OUT_DIR/runs/ with an empty cache, and writes OUT_DIR/hashes.json
(SHA-256 of model.safetensors and of metrics.json less its seconds, and every epoch's losses).
Run it once per commit and compare the two hashes.json files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

RUNS = {
    "fe": {"strategy": "feature-extraction", "epochs": 8, "image_size": 64},
    "ft": {"strategy": "fine-tune", "epochs": 2, "image_size": 64, "trainable_blocks": 2},
    "full-l2sp": {"strategy": "full", "epochs": 1, "image_size": 64, "l2sp": 0.01},
    "gradual": {"strategy": "gradual", "epochs": 1, "image_size": 64, "unfreeze_blocks": 2},
    "scratch": {"strategy": "scratch", "backbone": "timm:test_resnet", "epochs": 2, "image_size": 32},
    "text-fe": {"backbone": "minilm", "strategy": "feature-extraction", "epochs": 10, "text": True},
    "text-ft": {"backbone": "minilm", "strategy": "fine-tune", "epochs": 1, "trainable_blocks": 1, "text": True},
}


def photos(root: Path, per_class: int = 8, classes: tuple[str, ...] = ("a", "b", "c")) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng(10 * c + i)
            base = np.zeros((48, 64, 3), np.uint8)
            base[..., c] = 120
            Image.fromarray((base + rng.integers(0, 120, (48, 64, 3))).astype(np.uint8)).save(root / name / f"{i}.jpg")
    return root


def topics(path: Path) -> Path:
    import chatterbot_corpus

    rows = []
    for topic in ("food", "sports", "computers"):
        conversations = yaml.safe_load((Path(chatterbot_corpus.__file__).parent / "data/english" / f"{topic}.yml").read_text())["conversations"]
        texts = sorted({str(t).strip() for c in conversations for t in c if str(t).strip()})
        rows += [(t, topic) for t in texts[:20]]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HEADSTART_CACHE"] = str(out / "cache")
    import headstart

    images, table = photos(out / "data"), topics(out / "topics.csv")
    result = {}
    for name, settings in RUNS.items():
        if len(sys.argv) > 2 and name not in sys.argv[2:]:
            continue
        settings = dict(settings)
        data = table if settings.pop("text", False) else images
        directory = out / "runs" / name
        headstart.fit(data, out=directory, quiet=True, overwrite=True, **settings)
        metrics = json.loads((directory / "metrics.json").read_text())
        metrics.pop("seconds", None)
        epochs = json.loads((directory / "history.json").read_text())["epochs"]
        result[name] = {"weights": hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest(),
                        "metrics": hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest(),
                        "history": [(e["phase"], e["epoch"], e["train_loss"], e["val_loss"]) for e in epochs]}  # fmt: skip
        print(name, result[name]["weights"][:12], result[name]["metrics"][:12], flush=True)
    (out / "hashes.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
