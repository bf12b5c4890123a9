"""The ELPV solar-cell images, a real defect-detection set for demos and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headstart.data.dataset import Dataset
from headstart.data.readers import _finish
from headstart.data.splits import stratified_split


def load_elpv(*, task: str = "binary", test_fraction: float = 0.25, val_fraction: float = 0.15, seed: int = 0, limit: int | None = None) -> Dataset:
    """The ELPV solar-cell set (``pip install elpv-dataset``; CC BY-NC-SA 4.0, never redistribute).

    ``task="binary"``: defective when the defect probability is >= 0.5; ``task="4class"``: the four
    probabilities {0, 1/3, 2/3, 1}; ``task="probability"``: the probability itself, a regression target. The test split is stratified by probability *and* cell type, as
    in Deitsch et al. (2019); ``limit`` keeps a stratified subset (for demos and tests).
    """
    try:
        import elpv_dataset
    except ImportError:
        raise ImportError("load_elpv needs the package `elpv-dataset`: pip install elpv-dataset") from None
    root = Path(elpv_dataset.__file__).parent / "data"
    rows = [line.split() for line in (root / "labels.csv").read_text().splitlines() if line.strip()]
    paths = [root / r[0] for r in rows]
    probability = np.array([float(r[1]) for r in rows])
    kind = [r[2] for r in rows]
    if task == "binary":
        names = ["defective" if p >= 0.5 else "functional" for p in probability]
    elif task == "4class":
        names = [f"p={round(p * 3)}/3" for p in probability]
    elif task == "probability":  # the defect probability as a regression target
        names = [float(p) for p in probability]
    else:
        raise ValueError(f"task={task!r}; use 'binary', '4class' or 'probability'")
    strata = [f"{p:.2f}-{k}" for p, k in zip(probability, kind)]
    if limit is not None and limit < len(paths):
        _, taken = stratified_split(strata, limit / len(paths), seed + 7)
        paths, names, strata = [paths[i] for i in taken], [names[i] for i in taken], [strata[i] for i in taken]
    train_index, test_index = stratified_split(strata, test_fraction, seed)
    raw = {"train": ([paths[i] for i in train_index], [names[i] for i in train_index]), "test": ([paths[i] for i in test_index], [names[i] for i in test_index])}
    notes = [f"elpv {task}: stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split by defect probability and cell type (seed {seed})"]
    return _finish(root, "image", raw, [], notes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                   **({"task": "regression", "target": "defect_probability"} if task == "probability" else {}))  # fmt: skip
