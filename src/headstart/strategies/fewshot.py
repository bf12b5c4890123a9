"""Few-shot text classification: contrastive tuning of the sentence encoder, then a new head (SetFit).

With 8 labelled examples per class a head on frozen embeddings is limited by how well the
pretrained geometry already separates the classes. SetFit (Tunstall et al., 2022) first tunes the
encoder on pairs of examples, pulling same-class pairs to cosine similarity 1 and pushing
different-class pairs to 0; 48 examples give thousands of pairs. The head is then fitted on the
tuned embeddings. The class names are data too: :func:`templated_examples` turns each into
sentences ("This sentence is joy"), SetFit's own ``get_templated_dataset``, added to the few labelled
examples before tuning and for the head. Here it is built from headstart's pieces: the backbone's own tokeniser and
pooling, AdamW with :func:`~headstart.training.optim.make_scheduler`, and :func:`warm_up_head` (or any
classifier on :func:`embed`) afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from headstart.progress import Progress
from headstart.training.evaluation import to_device
from headstart.training.optim import make_scheduler


def templated_examples(
    classes: Sequence[str], *, per_class: int = 8, template: str = "This sentence is {}"
) -> tuple[list[str], list[int]]:
    """``per_class`` copies of ``template`` filled with each class name, labelled with that class.

    With 8 examples per class the labelled tweets are a noisy sample of what a class means, while a
    sentence encoder already places "This sentence is sadness" near sad sentences (zero-shot). The
    copies weight that prior like ``per_class`` examples in the pairs and in the head's fit.
    """
    if "{}" not in template:
        raise ValueError(f"template {template!r} needs a {{}} where the class name goes")
    texts = [template.format(name) for name in classes for _ in range(per_class)]
    return texts, [k for k in range(len(classes)) for _ in range(per_class)]


def contrastive_pairs(labels: Sequence[int], *, iterations: int = 20, seed: int = 0) -> list[tuple[int, int, float]]:
    """SetFit's pair sampling: per iteration, every example gets one same-class and one other-class partner.

    Returns ``(i, j, target)`` with target 1.0 for a same-class pair and 0.0 otherwise.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    if len(by_class) < 2 or min(len(v) for v in by_class.values()) < 2:
        raise ValueError("contrastive tuning needs at least 2 classes with 2 or more examples each")
    pairs: list[tuple[int, int, float]] = []
    for _ in range(iterations):
        for i, c in enumerate(labels):
            same = by_class[c][by_class[c] != i]
            pairs.append((i, int(rng.choice(same)), 1.0))
            pairs.append((i, int(rng.choice(np.flatnonzero(labels != c))), 0.0))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


def contrastive_tune(
    backbone: nn.Module,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    iterations: int = 20,
    epochs: int = 1,
    lr: float = 2e-5,
    batch_size: int = 16,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[float]:
    """Tune ``backbone`` in place so that cosine similarity of pooled embeddings predicts "same class".

    Defaults are SetFit's (20 iterations, one epoch, batch 16, rate 2e-5, cosine-similarity MSE
    loss); returns the loss of each step. Every backbone parameter trains; the caller freezes it
    afterwards (feature extraction) to fit the head.
    """
    pairs = contrastive_pairs(labels, iterations=iterations, seed=seed)
    for param in backbone.parameters():
        param.requires_grad_(True)
    device = next(backbone.parameters()).device
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * -(-len(pairs) // batch_size)
    scheduler = make_scheduler(optimizer, steps, warmup=0.1)
    prepare = backbone.preprocessing  # type: ignore[attr-defined]
    losses: list[float] = []
    backbone.train()
    task = progress.task("contrastive tuning", total=steps) if progress else None
    for _ in range(epochs):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            left = backbone(to_device(prepare([texts[i] for i, _, _ in chunk]), device))
            right = backbone(to_device(prepare([texts[j] for _, j, _ in chunk]), device))
            target = torch.tensor([t for _, _, t in chunk], device=device)
            loss = nn.functional.mse_loss(nn.functional.cosine_similarity(left, right), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if task is not None:
                task.advance()
    if task is not None:
        task.done()
    backbone.eval()
    return losses


@torch.inference_mode()
def embed(backbone: nn.Module, texts: Sequence[str], *, batch_size: int = 64, normalize: bool = True) -> np.ndarray:
    """Pooled (by default L2-normalised, as sentence-transformers' MiniLM does) embeddings of ``texts``."""
    backbone.eval()
    device = next(backbone.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        features = backbone(to_device(backbone.preprocessing(list(texts[start : start + batch_size])), device)).float()  # type: ignore[attr-defined]
        out.append((nn.functional.normalize(features, dim=-1) if normalize else features).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
