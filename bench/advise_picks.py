"""What the advisor picks on the benchmark datasets (no grid validation: see BENCHMARKS.md).

Usage: python bench/advise_picks.py [--limit N]   (appends to bench/results/advise.jsonl)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headstart.analysis.advisor import advise
from headstart.data import load_elpv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"

parser = argparse.ArgumentParser()
parser.add_argument("--limit", type=int, default=240)
parser.add_argument("--cache-dir", default="/tmp/headstart-bench-cache")
args = parser.parse_args()
for name in ("hymenoptera", "elpv", "brain_tumor_mri"):
    data = load_elpv(task="binary") if name == "elpv" else SHARED / name
    advice = advise(data, limit=args.limit, cache_dir=args.cache_dir)
    print(f"## {name}\n{advice}", flush=True)
    with (ROOT / "bench" / "results" / "advise.jsonl").open("a") as handle:
        handle.write(json.dumps({"dataset": name, "limit": args.limit, **advice.to_dict()}) + "\n")
