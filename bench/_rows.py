"""What every bench row carries (the machine, the version and the commit, appended as one JSON line), and the profiler summary beside a figure."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import headstart


def context() -> dict[str, Any]:
    """Machine, torch threads, headstart version and commit: a figure is only comparable with these."""
    return {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "headstart": headstart.__version__,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip(),
    }


def append(path: Path, row: dict[str, Any]) -> None:
    """Print ``row`` and append it to the JSON-lines file ``path``."""
    print(json.dumps(row), flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def profiled(work, top: int = 10) -> list[dict]:
    """The ``top`` operators of ``work()`` by self CPU time (torch profiler, the training process only).

    A separate, untimed run: the profiler's own overhead must not enter the ratios.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 1), "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:top]]
