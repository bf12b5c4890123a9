"""Issue 22: does another malloc configuration cut the system time and page faults of training on CPU?

Usage:
    python bench/allocator.py [--rounds 2] [--bench p2|kernels|forward] [--data hymenoptera]

Runs ``python bench/perf.py BENCH DATA`` (``forward``: this file's own ``forward_child``, four
inference batches of 32 through EfficientNet-Lite0 at 224 px, channels-last, after one untimed
batch) once per configuration and round, the configurations
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
CONFIGS = {"default": {}, "glibc": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}}  # glibc: what `headstart` sets with mallopt


def forward_child(batches: int = 4) -> None:
    """The ``forward`` bench's child: seconds, CPU and page faults of ``batches`` inference batches (printed as JSON)."""
    import torch

    from headstart.backbones import create_backbone

    backbone = create_backbone("efficientnet_lite0").eval().fast_layout()
    x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        backbone(x)
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(batches):
            backbone(x)
        wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds_per_batch": wall / batches, "user_seconds": after.ru_utime - before.ru_utime,
                      "system_seconds": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt}))  # fmt: skip


def run(bench: str, data: str, config: str) -> dict:
    env = {**os.environ, **CONFIGS[config]}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines_before = RESULTS.read_text().count("\n") if RESULTS.exists() else 0
    started = time.perf_counter()
    command = [sys.executable, __file__, "--forward-child"] if bench == "forward" else [sys.executable, str(HERE / "perf.py"), bench, data]
    child = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = RESULTS.read_text().splitlines()[lines_before:]
    perf = json.loads(rows[-1]) if rows else {}
    timed = json.loads(child.stdout.splitlines()[-1]) if bench == "forward" else perf.get("kernels")
    return {
        "config": config, "env": CONFIGS[config], "wall_seconds": round(wall, 1),
        "user_seconds": round(after.ru_utime - before.ru_utime, 1), "system_seconds": round(after.ru_stime - before.ru_stime, 1),
        "minor_faults": after.ru_minflt - before.ru_minflt, "peak_rss_mib_so_far": round(after.ru_maxrss / 1024),
        "headstart_images_per_second": perf.get("headstart", {}).get("images_per_second"),
        "bare_images_per_second": perf.get("bare", {}).get("images_per_second"), "ratio": perf.get("ratio"),
        "timed_part": timed, "load_average": os.getloadavg(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bench", default="p2")
    parser.add_argument("--data", default="hymenoptera")
    parser.add_argument("--forward-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward_child:
        return forward_child()
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
