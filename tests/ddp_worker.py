"""Worker for tests/test_distributed.py, run under ``torchrun --nproc_per_node=2`` (or imported, for one process).

``OUT ROOT IMAGE...`` does two things in one launch (each launch costs two fresh interpreters):

1. one gradient of a half-frozen efficientnet_lite0 on a batch of 8, half per rank through
   :func:`headstart.training.distributed.wrap`, with a classification head and with a regression
   head (its task's loss, :mod:`headstart.tasks`); rank 0 saves the gradients to OUT;
2. each rank embeds IMAGE... into its own cache folder under ROOT, as ranks on nodes without a
   shared filesystem would; the run must stop with the one-line explanation, which each rank prints.
"""

import sys
from pathlib import Path

import torch

from headstart.backbones import create_backbone
from headstart.caches.embeddings import EmbeddingCache
from headstart.data import tensor_loader
from headstart.freezing import freeze_bottom, set_batchnorm
from headstart.model import TransferModel
from headstart.training import distributed
from headstart.training.loop import seed_everything


def gradients(task: str = "classification") -> dict[str, torch.Tensor | None]:
    """The gradient of every parameter after one backward pass (all of the batch alone, a half per rank under torchrun);
    ``task="regression"``: a one-output head and the task's MSE on standardised targets."""
    seed_everything(0)
    regression = task == "regression"
    model = TransferModel.from_backbone("efficientnet_lite0", ["y"] if regression else ["a", "b", "c"], task=task, target={"mean": 1.0, "std": 0.5} if regression else None)
    freeze_bottom(model, 3)
    model.train()
    set_batchnorm(model, "eval")
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 64, 64, generator=generator), torch.randint(0, 3, (8,), generator=generator)
    targets = model.encoded_labels(y.numpy() / 2.0) if regression else y.numpy()
    loader = tensor_loader(x, targets, batch_size=8 // distributed.world_size(), shuffle=True, seed=0, shard=True)
    net = distributed.wrap(model, loader)
    assert (net is not model) == distributed.active()
    (inputs, labels), *_ = list(loader)
    model.task.loss(net(inputs), labels).backward()  # the mean per rank; DDP averages the ranks
    return {name: p.grad for name, p in model.named_parameters()}


def unshared(root: Path, images: list[str]) -> None:
    try:
        EmbeddingCache(root / f"rank{distributed.rank()}").embed(create_backbone("efficientnet_lite0"), [Path(i) for i in images])
    except RuntimeError as error:
        print(f"rank {distributed.rank()}: {error}", flush=True)
        return
    sys.exit("no error")


if __name__ == "__main__":
    distributed.setup()
    target, root, *images = sys.argv[1:]
    grads = {task: gradients(task) for task in ("classification", "regression")}
    if distributed.is_main():
        torch.save(grads, target)
    unshared(Path(root), images)
