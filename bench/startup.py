"""CPU seconds of the commands that should be instant: `headstart --help`, `fit --help`, `import headstart`.

Usage: python bench/startup.py [--other-src DIR] [--runs 7]
Each command runs in a fresh interpreter, alternately with the same command on ``--other-src`` (e.g.
an older checkout's ``src``, put first on PYTHONPATH) when given; the child's user + system CPU
seconds come from ``os.wait4`` (the same accounting ``/usr/bin/time`` prints). Prints medians and the
ratio, and appends one JSON line per command to bench/results/startup.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "headstart --help": ["-m", "headstart", "--help"],
    "headstart fit --help": ["-m", "headstart", "fit", "--help"],
    "import headstart": ["-c", "import headstart"],
    "import torch (floor of any command that trains)": ["-c", "import torch"],
}


def cpu_seconds(argv: list[str], pythonpath: str | None) -> tuple[float, float]:
    """(user + system CPU, wall) seconds of one run of ``python argv``."""
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit status {os.waitstatus_to_exitcode(status)}")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other-src", default=None, help="a src/ folder of another checkout to time side by side")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    out = Path(__file__).parent / "results" / "startup.jsonl"
    for name, argv in COMMANDS.items():
        cpu_seconds(argv, None)  # warm-up: file cache
        ours, other = [], []
        for _ in range(args.runs):
            ours.append(cpu_seconds(argv, None)[0])
            if args.other_src:
                other.append(cpu_seconds(argv, args.other_src)[0])
        row = {"command": name, "cpu_s_median": round(statistics.median(ours), 3), "runs": args.runs,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}  # fmt: skip
        if other:
            row["other_cpu_s_median"] = round(statistics.median(other), 3)
            row["ratio"] = round(statistics.median(a / b for a, b in zip(ours, other)), 4)
        print(json.dumps(row))
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
