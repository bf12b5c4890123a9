"""Time each transferability score on a 10,000 x 2,048 feature matrix with 10 classes.

Usage: python bench/scores_speed.py   (appends one JSON line per score to bench/results/scores_speed.jsonl)
The features are synthetic (Gaussian, 10 informative dimensions); LEEP/NCE read 1,000-class
source probabilities. Each score is timed once after a warm-up call on a small matrix.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from headstart.analysis.transferability import SCORES, score

n, d, k, source_classes = 10_000, 2_048, 10, 1_000
rng = np.random.default_rng(0)
labels = rng.integers(0, k, n)
features = rng.normal(size=(n, d)).astype(np.float32)
features[:, :k] += 2.0 * np.eye(k, dtype=np.float32)[labels]
probabilities = rng.dirichlet(np.ones(source_classes), n)
machine = f"{platform.machine()}, {os.cpu_count()} threads, numpy {np.__version__}"
out = Path(__file__).parent / "results" / "scores_speed.jsonl"
for name in SCORES:
    score(name, labels[:200], features=features[:200, :64], source_probabilities=probabilities[:200])  # warm-up
    start = time.perf_counter()
    value = score(name, labels, features=features, source_probabilities=probabilities)
    seconds = time.perf_counter() - start
    row = {"score": name, "n": n, "dim": d, "classes": k, "value": value, "seconds": round(seconds, 3), "machine": machine}
    print(json.dumps(row))
    with out.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
