"""Issue 22: does another malloc configuration cut the system time and page faults of training on CPU?

Usage:
    python bench/allocator.py [--rounds 2] [--bench p2] [--data hymenoptera]

Runs ``python bench/perf.py BENCH DATA`` once per configuration and round, the configurations
alternating (default, glibc, default, glibc, ...), each in a fresh process since malloc reads its
settings at start-up. Per run: wall seconds, user and system CPU seconds, minor page faults and
peak memory of the child (``resource.getrusage(RUSAGE_CHILDREN)`` before and after), and the row
perf.py appended (P2: headstart's and the bare loop's images per second).

Configurations: ``default`` (glibc as it comes), ``glibc`` (``MALLOC_MMAP_MAX_=0``: no block is
served by its own mmap, so a freed activation's pages are reused instead of unmapped and faulted in
again at the next step; ``MALLOC_TRIM_THRESHOLD_`` large: the heap is not given back to the system
between steps). jemalloc or tcmalloc would be tried by LD_PRELOAD if a library were installed; this
machine has none (``ldconfig -p``), and nothing is installed for the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "perf.jsonl"
CONFIGS = {"default": {}, "glibc": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 * 2**30)}}


def run(bench: str, data: str, config: str) -> dict:
    env = {**os.environ, **CONFIGS[config]}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines_before = RESULTS.read_text().count("\n") if RESULTS.exists() else 0
    started = time.perf_counter()
    subprocess.run([sys.executable, str(HERE / "perf.py"), bench, data], env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = RESULTS.read_text().splitlines()[lines_before:]
    perf = json.loads(rows[-1]) if rows else {}
    return {
        "config": config, "env": CONFIGS[config], "wall_seconds": round(wall, 1),
        "user_seconds": round(after.ru_utime - before.ru_utime, 1), "system_seconds": round(after.ru_stime - before.ru_stime, 1),
        "minor_faults": after.ru_minflt - before.ru_minflt, "peak_rss_mib_so_far": round(after.ru_maxrss / 1024),
        "headstart_images_per_second": perf.get("headstart", {}).get("images_per_second"),
        "bare_images_per_second": perf.get("bare", {}).get("images_per_second"), "ratio": perf.get("ratio"),
        "load_average": os.getloadavg(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bench", default="p2")
    parser.add_argument("--data", default="hymenoptera")
    args = parser.parse_args()
    runs = []
    for _ in range(args.rounds):
        for config in CONFIGS:
            runs.append(run(args.bench, args.data, config))
            print(json.dumps(runs[-1]), flush=True)
    row = {"bench": f"allocator-{args.bench}", "data": args.data, "runs": runs,
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()}  # fmt: skip
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
