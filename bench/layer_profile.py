"""Layer-wise profiles near and far from ImageNet: hymenoptera, elpv (binary) and brain_tumor_mri.

Usage: python bench/layer_profile.py [--limit N] [--datasets a,b]
For each dataset: `headstart.profile` of efficientnet_lite0 on a stratified subset of the train+val
examples (5-fold linear probe + LogME per block); the plot goes to docs/profile-<dataset>.png and
one JSON line to bench/results/profile.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from headstart.analysis.probes import profile
from headstart.data import load_elpv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--datasets", default="hymenoptera,elpv,brain_tumor_mri")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--cache-dir", default="/tmp/headstart-bench-cache")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    for name in args.datasets.split(","):
        data = load_elpv(task="binary") if name == "elpv" else SHARED / name
        result = profile(data, backbone=args.backbone, limit=args.limit, cache_dir=args.cache_dir)
        result.data = name
        plot = result.plot(ROOT / "docs" / f"profile-{name}.png")
        record = {**result.to_dict(), "plot": str(plot.relative_to(ROOT)), "machine": f"{platform.machine()}, {os.cpu_count()} threads, torch {torch.__version__}", "commit": commit}
        print(result.to_markdown(), json.dumps(result.seconds), sep="\n", flush=True)
        with (ROOT / "bench" / "results" / "profile.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
