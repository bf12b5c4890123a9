"""GridSearchCV over TransferClassifier with n_jobs=1 and n_jobs=2, side by side in one process.

Usage: PYTHONPATH=src python bench/estimator_jobs.py [BACKBONE]   (default minilm; prints one JSON line per setting)

Data: the chatterbot-corpus topics table the tests use (food, sports, computers; 30 texts each).
Grid: epochs in (10, 20), cv=3: 6 fits and the refit. Each setting starts with an empty embedding
cache (a fresh temporary HEADSTART_CACHE), so both pay for the same embedding passes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _topics() -> tuple[list[str], list[str]]:
    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    texts, labels = [], []
    for topic in ("food", "sports", "computers"):
        conversations = yaml.safe_load((root / f"{topic}.yml").read_text(encoding="utf-8"))["conversations"]
        found = sorted({str(t).strip() for conv in conversations for t in conv if str(t).strip()})[:30]
        texts += found
        labels += [topic] * len(found)
    return texts, labels


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sklearn.model_selection import GridSearchCV

    from headstart import TransferClassifier

    backbone = sys.argv[1] if len(sys.argv) > 1 else "minilm"
    texts, labels = _topics()
    for n_jobs in (1, 2):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["HEADSTART_CACHE"] = cache
            start = time.perf_counter()
            search = GridSearchCV(TransferClassifier(backbone), {"epochs": [10, 20]}, cv=3, n_jobs=n_jobs).fit(texts, labels)
            seconds = time.perf_counter() - start
        print(json.dumps({"backbone": backbone, "n_jobs": n_jobs, "seconds": round(seconds, 1), "best": search.best_params_,
                          "score": round(float(search.best_score_), 4), "cpus": os.cpu_count()}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
