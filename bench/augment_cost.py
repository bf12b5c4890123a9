"""Issue 28 on the CPU: what augmenting cached pixels costs per image, alternating in one process.

Usage:
    python bench/augment_cost.py CACHE_DIR ROUNDS SIDES [--before SRC] [--data DIR]
SIDES: comma-separated among ``before`` (the per-image path of another checkout's ``src``, given by
``--before``: e.g. ``git archive 978f437 src | tar -x -C /tmp/base`` then ``--before /tmp/base/src``),
``after`` (this checkout's per-image path) and ``device_on_cpu`` (``headstart.data.device_augment``
run on the CPU). The training images of DATA (default hymenoptera) are presized into the decoded-image
cache under CACHE_DIR, then each side augments all of them (light, 224 px, bicubic) and normalises
them in batches of 32; the sides alternate for ROUNDS rounds and the row gives the fastest round of
each, in ms per image, and every round. No training step: P2 (bench/perf.py) times that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

from headstart.caches.images import DecodedImageCache
from headstart.data import load_dataset
from headstart.data.device_augment import PresizedCrop, augment_batch, collate_crops
from headstart.data.images import CachedImage
from headstart.data.preprocessing import ImagePreprocessing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("rounds", type=int)
    parser.add_argument("sides")
    parser.add_argument("--before", type=Path, help="the src folder of the code to compare with (side 'before')")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "hymenoptera")
    args = parser.parse_args()
    prep = ImagePreprocessing()  # EfficientNet-Lite0's: 224 px, bicubic, cached at short side 256
    items, line = DecodedImageCache(args.cache).prepare(load_dataset(args.data, seed=0).items("train"), prep, augment="light", workers=0)
    arrays = [CachedImage.array(item) for item in items]
    print(line, flush=True)
    transforms = {"after": prep.presized_train_transform("light")}
    if args.before is not None:  # the older module loaded under another name, beside this checkout's package
        spec = importlib.util.spec_from_file_location("before_preprocessing", args.before / "headstart" / "data" / "preprocessing.py")
        before = importlib.util.module_from_spec(spec)
        sys.modules["before_preprocessing"] = before
        spec.loader.exec_module(before)
        transforms["before"] = before.ImagePreprocessing().presized_train_transform("light")
    crop = PresizedCrop(transforms["after"])

    def per_image(transform) -> None:
        for start in range(0, len(arrays), 32):
            prep.collate([(transform(a), 0) for a in arrays[start : start + 32]])

    def device_path() -> None:
        for start in range(0, len(arrays), 32):
            augment_batch(collate_crops([(crop(a), 0) for a in arrays[start : start + 32]])[0], prep)

    work = {"before": lambda: per_image(transforms["before"]), "after": lambda: per_image(transforms["after"]), "device_on_cpu": device_path}
    times: dict[str, list[float]] = {side: [] for side in args.sides.split(",")}
    for r in range(args.rounds):
        for side in times:
            torch.manual_seed(r)
            started = time.perf_counter()
            work[side]()
            times[side].append(time.perf_counter() - started)
    print(json.dumps({"images": len(arrays), "threads": torch.get_num_threads(),
                      "ms_per_image_best": {side: round(min(t) / len(arrays) * 1000, 2) for side, t in times.items()},
                      "rounds_s": times, "load_average": os.getloadavg()}))  # fmt: skip


if __name__ == "__main__":
    main()
