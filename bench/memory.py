"""Issue 5, P4: feature extraction over 5k, 20k and 50k images - peak memory and time against N.

Usage:
    python bench/memory.py make DIR [--n 50000]          # build the images once (about 1 GB of JPEG)
    python bench/memory.py run DIR [--sizes 5000,20000,50000]
    python bench/memory.py profile DIR --n 2000          # the hot path's top operators (torch profiler, in-process)

``make`` builds N distinct images from the real shared ones (hymenoptera, oxford_flowers17,
brain_tumor_mri): each is a random crop (30-100% of the side, random position, random horizontal
flip) of a random source image, resized to 256 x 256 and saved as JPEG (quality 90). The label is
the source dataset, so the task is real enough for a head to learn. ``run`` writes a listing
(``path,label``) of the first N images and runs, per N, in a fresh process with an empty cache:

    headstart fit LISTING --strategy feature-extraction --quiet --json --no-report

and records its wall time and CPU time (user + system of the process and its reaped loader workers:
less sensitive than wall time to other jobs on a shared machine), per 1,000 images, and memory two ways: the peak resident
set size of the largest single process (``/usr/bin/time -v``: the main process or one of its 2
loader workers) and the peak of the sum of PSS (proportional set size: shared pages split between
the processes sharing them) over the whole process tree, sampled every 0.2 s with psutil. Rows
are appended to bench/results/memory.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RESULTS = Path(__file__).parent / "results" / "memory.jsonl"
SOURCES = ("hymenoptera", "oxford_flowers17", "brain_tumor_mri")


def make(folder: Path, n: int, seed: int = 0) -> None:
    sources = []
    for name in SOURCES:
        sources += [(path, name) for path in sorted((SHARED / name).rglob("*")) if path.suffix.lower() in (".jpg", ".jpeg", ".png")]
    rows = crop_images(sources, folder, n, seed=seed)
    with open(folder / "all.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label"), *rows])


def crop_images(sources: list[tuple[Path, str]], folder: Path, n: int, *, seed: int = 0, workers: int = 1) -> list[tuple[str, str]]:
    """``n`` distinct 256 x 256 JPEGs under ``folder``, each a random square crop (30-100% of the short
    side, random place, flipped half the time) of a random ``(path, label)`` source; returns
    ``(relative path, label)`` rows. The draws are made in order in this process (the same images
    for a seed whatever ``workers``); decoding, cropping and saving run in ``workers`` processes."""
    rng = random.Random(seed)
    jobs, rows = [], []
    for i in range(n):
        path, label = rng.choice(sources)
        with Image.open(path) as image:  # reads the header: the size, not the pixels
            width, height = image.size
        side = int(min(width, height) * rng.uniform(0.3, 1.0))
        x, y = rng.randint(0, width - side), rng.randint(0, height - side)
        name = f"{i // 1000:03d}/{i:06d}.jpg"
        jobs.append((path, (x, y, x + side, y + side), rng.random() < 0.5, folder / name))
        rows.append((name, label))
    for sub in {job[3].parent for job in jobs}:
        sub.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        for done, _ in enumerate(pool.imap(_crop, jobs, chunksize=64) if pool else map(_crop, jobs), 1):
            if done % 5000 == 0:
                print(f"{done} images, {time.perf_counter() - started:.0f}s", flush=True)
    return rows


def _crop(job: tuple[Path, tuple[int, int, int, int], bool, Path]) -> None:
    path, box, flip, out = job
    with Image.open(path) as image:
        crop = image.convert("RGB").crop(box).resize((256, 256), Image.Resampling.BILINEAR)
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    crop.save(out, quality=90)


def tree_pss(pid: int) -> int:
    """Sum of the proportional set sizes of ``pid`` and all its descendants, in bytes (0 once it is gone).

    PSS charges each shared page to the processes sharing it in equal parts, so the sum is the
    memory the tree really holds (RSS would count the pages forked loader workers share with the
    main process once per process)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_full_info().pss
    return total


def run(folder: Path, sizes: list[int]) -> None:
    with open(folder / "all.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    header, rows = rows[0], rows[1:]
    for n in sizes:
        if n > len(rows):
            raise SystemExit(f"{folder} holds {len(rows)} images; make more (make --n {n})")
        listing = folder / f"first-{n}.csv"
        with open(listing, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows[:n]])
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "HEADSTART_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1"}
            command = [sys.executable, "-m", "headstart", "fit", str(listing), "--strategy", "feature-extraction", "--out", str(Path(tmp) / "run"), "--json"]
            started = time.perf_counter()
            with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
                process = subprocess.Popen(["/usr/bin/time", "-v", *command], stdout=out, stderr=err, env=env, text=True)
                tree_peak = 0
                while process.poll() is None:
                    tree_peak = max(tree_peak, tree_pss(process.pid))
                    time.sleep(0.2)
                seconds = time.perf_counter() - started
                out.seek(0), err.seek(0)
                result = subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
        timed = dict(line.strip().rsplit(": ", 1) for line in result.stderr.splitlines() if line.startswith("\t") and ": " in line)
        peak_kb = int(timed["Maximum resident set size (kbytes)"])
        cpu_seconds = float(timed["User time (seconds)"]) + float(timed["System time (seconds)"])
        metrics = json.loads(result.stdout)["metrics"]
        row = {
            "n": n,
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "peak_tree_pss_mb": round(tree_peak / 2**20, 1),
            "seconds": round(seconds, 1),
            "seconds_per_1000": round(1000 * seconds / n, 2),
            "cpu_seconds": round(cpu_seconds, 1),
            "cpu_seconds_per_1000": round(1000 * cpu_seconds / n, 2),
            "load_average_after": os.getloadavg()[0],
            "test_accuracy": metrics["test"]["accuracy"],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}",
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip(),
        }
        print(json.dumps(row), flush=True)
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def profile_run(folder: Path, n: int) -> None:
    """P4's hot path: the same feature-extraction fit over the first ``n`` images, in this process under
    the torch profiler (an untimed extra run: the rows above are measured without it)."""
    from _rows import context, profiled

    import headstart

    with open(folder / "all.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    listing = folder / f"first-{n}.csv"
    with open(listing, "w", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *rows[1 : n + 1]])
    with tempfile.TemporaryDirectory() as tmp:
        top = profiled(lambda: headstart.fit(listing, strategy="feature-extraction", out=Path(tmp) / "run", cache_dir=Path(tmp) / "cache", quiet=True))
    row = {"n": n, "profile": top, **context()}
    print(json.dumps(row), flush=True)
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["make", "run", "profile"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--sizes", default="5000,20000,50000")
    args = parser.parse_args()
    if args.command == "make":
        make(args.folder, args.n)
    elif args.command == "profile":
        profile_run(args.folder, args.n)
    else:
        run(args.folder, [int(s) for s in args.sizes.split(",")])


if __name__ == "__main__":
    main()
