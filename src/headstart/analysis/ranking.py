"""Which pretrained model? Rank candidate backbones by a transferability score, one forward pass each.

Fine-tuning every candidate to compare them costs epochs per candidate; a score of frozen features
(LogME by default, see :mod:`headstart.analysis.transferability`) costs one pass and correlates with the
accuracy fine-tuning reaches (You et al. 2021). Features go through the embedding cache, so a
feature-extraction run with the winner reuses them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from headstart.analysis.probes import labelled_examples
from headstart.analysis.transferability import SCORES, score
from headstart.backbones import Backbone, create_backbone, list_backbones, match_data, source_probabilities
from headstart.caches.embeddings import EmbeddingCache
from headstart.data import Dataset
from headstart.progress import Progress


@dataclass
class Candidate:
    backbone: str
    score: float
    seconds: float
    dim: int
    note: str = ""


@dataclass
class Ranking:
    """Candidates sorted best first by ``score_name``; candidates it cannot score come last with a note."""

    data: str
    score_name: str
    n_examples: int
    candidates: list[Candidate]

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "score": self.score_name, "n_examples": self.n_examples, "candidates": [c.__dict__ for c in self.candidates]}

    def to_markdown(self) -> str:
        lines = [f"| rank | backbone | {self.score_name} | feature dim | seconds | note |", "|---:|---|---:|---:|---:|---|"]
        for i, c in enumerate(self.candidates, start=1):
            lines.append(f"| {i} | {c.backbone} | {c.score:.4f} | {c.dim} | {c.seconds:.1f} | {c.note} |")
        return "\n".join(lines)


def default_candidates(modality: str, named: list[str] | None = None) -> list[str]:
    """Every embedded backbone of ``modality`` whose packages are installed, then the named ones not already in the list.

    Audio's embedded backbones are the image CNNs, which read log-mel spectrograms.
    """
    names = [spec.name for spec in list_backbones("image" if modality == "audio" else modality, installed=True)]
    return names + [n for n in named or [] if n not in names]


def rank(
    data: str | Path | Dataset,
    *,
    backbones: list[str | Backbone] | None = None,
    score_name: str = "logme",
    limit: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    quiet: bool = True,
    text_column: str | None = None,
    label_column: str | None = None,
) -> Ranking:
    """Score each candidate backbone's frozen features on ``data`` (train + val splits) and sort.

    Parameters
    ----------
    backbones : list of names or Backbone objects, optional
        Default: every embedded backbone of the data's modality (``headstart list``). Pass Backbone
        objects for candidates without a name (e.g. ``create_backbone(name, pretrained=False)``).
    score_name : {"logme", "hscore", "hscore-shrinkage", "leep", "nce"}, default="logme"
        LEEP and NCE read the backbone's source head; candidates without one are listed last.
    limit : int, optional
        Score a stratified subset of this many examples.
    """
    if score_name not in SCORES:
        raise ValueError(f"Unknown score {score_name!r}; choose one of {sorted(SCORES)}")
    dataset, items, labels = labelled_examples(data, limit=limit, seed=seed, text_column=text_column, label_column=label_column)
    chosen = backbones if backbones else default_candidates(dataset.modality)
    cache = EmbeddingCache(cache_dir)
    candidates = []
    with Progress(quiet=quiet) as progress:
        for candidate in chosen:
            started = time.perf_counter()
            model = match_data(candidate if isinstance(candidate, Backbone) else create_backbone(candidate), dataset)
            name = candidate if isinstance(candidate, str) else model.spec.name
            model.to("cuda" if torch.cuda.is_available() else "cpu")
            features, _ = cache.embed(model, items, batch_size=batch_size, progress=progress)
            probabilities = source_probabilities(model, features) if SCORES[score_name][1] == "source" else None
            if SCORES[score_name][1] == "source" and probabilities is None:
                candidates.append(Candidate(name, math.nan, time.perf_counter() - started, features.shape[1], "no source head"))
                continue
            value = score(score_name, labels, features=features, source_probabilities=probabilities)
            candidates.append(Candidate(name, value, time.perf_counter() - started, features.shape[1]))
            progress.log(f"{name}: {score_name} {value:.4f}")
    candidates.sort(key=lambda c: (math.isnan(c.score), -c.score if not math.isnan(c.score) else 0.0))
    return Ranking(str(dataset.source), score_name, len(items), candidates)
