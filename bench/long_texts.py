"""Truncation against chunked windows on the longest real texts at hand, side by side in one process.

Usage: PYTHONPATH=src python bench/long_texts.py [WINDOW] [SETTINGS]   (default 32 truncate,chunk,full; one JSON line per setting)

No shared dataset holds texts longer than MiniLM's 256-token window (the longest, in sms_spam, has
238 tokens), so the window is narrowed instead: at 32 tokens, 29% of sms_spam's messages are longer
than the window and 18% of their tokens fall outside it. Feature extraction with minilm (seed 0,
the default split) at WINDOW with truncation, at WINDOW with --long-text chunk, and at minilm's own
256 tokens (nothing cut: the reference). Each setting embeds with an empty cache.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sms_spam" / "data.csv"


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import headstart

    window = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    chosen = (sys.argv[2] if len(sys.argv) > 2 else "truncate,chunk,full").split(",")
    settings = {"truncate": (window, "truncate"), "chunk": (window, "chunk"), "full": (None, "truncate")}
    for max_length, long_text in (settings[name] for name in chosen):
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            run = headstart.fit(DATA, backbone="minilm", strategy="feature-extraction", max_length=max_length, long_text=long_text,
                                save=False, quiet=True, cache_dir=cache)  # fmt: skip
            seconds = time.perf_counter() - start
        test = run.metrics["test"]
        print(json.dumps({"data": "sms_spam", "max_length": max_length or 256, "long_text": long_text, "text_lengths": run.metrics.get("text_lengths"),
                          "test_accuracy": round(test["accuracy"], 4), "test_macro_f1": round(test["macro_f1"], 4), "n_test": test["n"],
                          "seconds": round(seconds, 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
