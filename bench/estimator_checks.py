"""scikit-learn's ``check_estimator`` on ``TransferClassifier``: how many checks pass, are skipped, fail.

Usage: PYTHONPATH=src python bench/estimator_checks.py [BACKBONE] [EPOCHS]   (default minilm 3; prints one JSON line)

Run on the source tree in PYTHONPATH (an older commit's ``src`` gives the "before" counts).
``check_estimator(..., on_fail=None)`` runs every check it yields for the estimator's tags and
returns each one's status; checks it does not yield (the tags say the input is not a 2-D table)
are listed by :mod:`tests.test_estimator` with the reason.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections import Counter


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sklearn.utils.estimator_checks import check_estimator

    from headstart import TransferClassifier

    backbone = sys.argv[1] if len(sys.argv) > 1 else "minilm"
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = check_estimator(TransferClassifier(backbone, epochs=epochs), on_fail=None)
    counts = Counter(r["status"] for r in results)
    skip_warnings = sorted({str(w.message)[:160] for w in caught if type(w.category).__name__ == "type" and w.category.__name__ == "SkipTestWarning"})
    print(json.dumps({"backbone": backbone, "epochs": epochs, "counts": dict(counts), "seconds": round(time.perf_counter() - start, 1),
                      "failed": sorted(r["check_name"] for r in results if r["status"] == "failed"),
                      "passed": sorted(r["check_name"] for r in results if r["status"] == "passed"), "skip_warnings": skip_warnings}))  # fmt: skip


if __name__ == "__main__":
    main()
