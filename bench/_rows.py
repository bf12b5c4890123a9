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


def device_profiled(work, device: str, top: int = 10) -> dict:
    """``work()`` under the torch profiler: the ``top`` operators by device time (CUDA; self CPU time on a CPU) and, on a GPU,
    the share of the wall time when no kernel ran on any stream (the GPU idle: waiting on input, on the CPU's launches, or on syncs).
    A separate, untimed run: the profiler's own overhead must not enter the figures."""
    import time

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device == "cuda" else [])]
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        work()
    wall_us = (time.perf_counter() - started) * 1e6
    if device != "cuda":
        return {"ops_by_self_cpu": _top(prof.key_averages(), lambda e: e.self_cpu_time_total, top), "wall_ms": round(wall_us / 1000, 1)}
    device_time = lambda e: getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)  # noqa: E731  (renamed in torch 2.4)
    kernels = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA"))
    busy, end = 0.0, float("-inf")
    for a, b in kernels:  # the union of the kernels' intervals, all streams
        if b > end:
            busy += b - max(a, end)
            end = b
    span = (kernels[-1][1] - kernels[0][0]) if kernels else 0.0
    return {"ops_by_device_time": _top(prof.key_averages(), device_time, top), "wall_ms": round(wall_us / 1000, 1), "kernels": len(kernels),
            "gpu_busy_ms": round(busy / 1000, 1), "gpu_idle_fraction": round(1 - busy / wall_us, 3) if wall_us else None,
            "gpu_idle_fraction_within_kernel_span": round(1 - busy / span, 3) if span else None}  # fmt: skip


def _top(events, key, top: int) -> list[dict]:
    events = sorted(events, key=key, reverse=True)
    total = sum(key(e) for e in events) or 1
    return [{"op": e.key, "ms": round(key(e) / 1000, 1), "share": round(key(e) / total, 3), "calls": e.count} for e in events[:top]]
