"""Seeded runs whose weights, metrics and losses must be bit-identical between two commits.

Usage: PYTHONPATH=CHECKOUT/src python bench/identical.py OUT_DIR [RUN ...]
Writes generated data (24 photos in 3 classes; 60 chatterbot-corpus utterances in 3 topics), fits
each run with seed 0 into OUT_DIR/runs/ with an empty cache, and writes OUT_DIR/hashes.json
(SHA-256 of model.safetensors and of metrics.json less its seconds, and every epoch's losses).
Run it once per commit and compare the two hashes.json files.
"""
import csv
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
os.environ["HEADSTART_CACHE"] = str(out / "cache")
import numpy as np
from PIL import Image

import headstart


def photos(root, per_class=8, classes=("a", "b", "c")):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng(10 * c + i)
            base = np.zeros((48, 64, 3), np.uint8); base[..., c] = 120
            Image.fromarray((base + rng.integers(0, 120, (48, 64, 3))).astype(np.uint8)).save(root / name / f"{i}.jpg")
    return root

data = photos(out / "data")
import chatterbot_corpus
import yaml

rows = []
for topic in ("food", "sports", "computers"):
    conv = yaml.safe_load((Path(chatterbot_corpus.__file__).parent / "data/english" / f"{topic}.yml").read_text())["conversations"]
    texts = sorted({str(t).strip() for c in conv for t in c if str(t).strip()})
    rows += [(t, topic) for t in texts[:20]]
table = out / "topics.csv"
with table.open("w", newline="") as h:
    w = csv.writer(h); w.writerow(["text", "label"]); w.writerows(rows)

RUNS = {
    "fe": dict(data=data, strategy="feature-extraction", epochs=8, image_size=64),
    "ft": dict(data=data, strategy="fine-tune", epochs=2, image_size=64, trainable_blocks=2),
    "full-l2sp": dict(data=data, strategy="full", epochs=1, image_size=64, l2sp=0.01),
    "gradual": dict(data=data, strategy="gradual", epochs=1, image_size=64, unfreeze_blocks=2),
    "scratch": dict(data=data, strategy="scratch", backbone="timm:test_resnet", epochs=2, image_size=32),
    "text-fe": dict(data=table, backbone="minilm", strategy="feature-extraction", epochs=10),
    "text-ft": dict(data=table, backbone="minilm", strategy="fine-tune", epochs=1, trainable_blocks=1),
}
result = {}
for name, kw in RUNS.items():
    if len(sys.argv) > 2 and name not in sys.argv[2:]:
        continue
    d = out / "runs" / name
    kw = dict(kw); data_ = kw.pop("data")
    run = headstart.fit(data_, out=d, quiet=True, overwrite=True, **kw)
    metrics = json.loads((d / "metrics.json").read_text()); metrics.pop("seconds", None)
    result[name] = {"weights": hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest(),
                    "metrics": hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest(),
                    "history": [(e["phase"], e["epoch"], e["train_loss"], e["val_loss"]) for e in json.loads((d / "history.json").read_text())["epochs"]]}
    print(name, result[name]["weights"][:12], result[name]["metrics"][:12], flush=True)

(out / "hashes.json").write_text(json.dumps(result, indent=1))
