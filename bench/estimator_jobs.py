"""GridSearchCV over TransferClassifier with n_jobs=1 and n_jobs=2, side by side in one process.

Usage: PYTHONPATH=src python bench/estimator_jobs.py [BACKBONE] [--rounds N] [--timeline FILE]
(default minilm, 1 round; prints one JSON line per setting and round)

Data: the chatterbot-corpus topics table the tests use (food, sports, computers; 30 texts each).
Grid: epochs in (10, 20), cv=3: 6 fits and the refit. Each setting starts with an empty embedding
cache (a fresh temporary HEADSTART_CACHE), so both pay for the same embedding passes. ``n_jobs=2``
runs twice: "cold" with fresh joblib workers (loky's reusable pool is shut down first), which pay
for starting (importing torch, transformers, headstart), then "warm" on the same workers, as a second
search in the same Python session does (loky keeps its pool). The parent has imported headstart and
scikit-learn before any timing, as a user's session has. With ``--rounds N`` the three settings
alternate N times (the machine is shared: report medians). ``--timeline FILE`` appends, per fit, the process id, its torch threads and its start and
end relative to the start of the search, so a slow setting shows where its time went.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


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


def _timed_classifier(path: str, origin: float) -> Any:
    """TransferClassifier whose fit appends (pid, threads, start, end) to ``path``; defined here so loky pickles it by value."""
    from headstart import TransferClassifier

    class Timed(TransferClassifier):
        def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
            import torch

            started = time.time() - origin
            super().fit(X, y, sample_weight)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads(), "epochs": self.epochs, "n": len(X),
                                         "start": round(started, 1), "end": round(time.time() - origin, 1)}) + "\n")  # fmt: skip
            return self

    return Timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backbone", nargs="?", default="minilm")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeline", default=None)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from joblib.externals.loky import get_reusable_executor
    from sklearn.model_selection import GridSearchCV

    from headstart import TransferClassifier

    texts, labels = _topics()
    for round_ in range(1, args.rounds + 1):
        for n_jobs, pool in ((1, "-"), (2, "cold"), (2, "warm")):
            if pool != "warm":
                get_reusable_executor().shutdown(wait=True)  # fresh workers: the cold setting pays their start
            with tempfile.TemporaryDirectory() as cache:
                os.environ["HEADSTART_CACHE"] = cache
                start = time.time()
                cls = _timed_classifier(args.timeline, start) if args.timeline else TransferClassifier
                if args.timeline:
                    with open(args.timeline, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps({"setting": {"n_jobs": n_jobs, "pool": pool, "round": round_}}) + "\n")
                search = GridSearchCV(cls(args.backbone), {"epochs": [10, 20]}, cv=3, n_jobs=n_jobs).fit(texts, labels)
                seconds = time.time() - start
            print(json.dumps({"backbone": args.backbone, "n_jobs": n_jobs, "pool": pool, "round": round_, "seconds": round(seconds, 1), "best": search.best_params_,
                              "score": round(float(search.best_score_), 4), "cpus": os.cpu_count(), "load": round(os.getloadavg()[0], 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
