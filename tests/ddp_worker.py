"""Worker for tests/test_distributed.py, run alone or under ``torchrun --nproc_per_node=2``.

``gradients OUT``: one gradient of a half-frozen efficientnet_lite0 on a batch of 8 (alone: all of
it; under torchrun: half per rank, through :func:`headstart.training.distributed.wrap`); rank 0 saves the
gradients to OUT.

``unshared ROOT IMAGE...``: each rank embeds into its own cache folder under ROOT, as ranks on
nodes without a shared filesystem would; the run must stop with the one-line explanation.
"""

import sys
from pathlib import Path

import torch

from headstart.caches.embeddings import EmbeddingCache
from headstart.data import tensor_loader
from headstart.freezing import freeze_bottom, set_batchnorm
from headstart.model import TransferModel
from headstart.training import distributed
from headstart.training.loop import seed_everything

distributed.setup()
seed_everything(0)
model = TransferModel.from_backbone("efficientnet_lite0", ["a", "b", "c"])
mode, target, *images = sys.argv[1:]
if mode == "unshared":
    try:
        EmbeddingCache(Path(target) / f"rank{distributed.rank()}").embed(model.backbone, [Path(i) for i in images])
    except RuntimeError as error:
        print(f"rank {distributed.rank()}: {error}")
        sys.exit(0)
    sys.exit("no error")

freeze_bottom(model, 3)
model.train()
set_batchnorm(model, "eval")
generator = torch.Generator().manual_seed(1)
x, y = torch.randn(8, 3, 64, 64, generator=generator), torch.randint(0, 3, (8,), generator=generator)
loader = tensor_loader(x, y.numpy(), batch_size=8 // distributed.world_size(), shuffle=True, seed=0, shard=True)
net = distributed.wrap(model, loader)
assert (net is not model) == distributed.active()
(inputs, labels), *_ = list(loader)  # all of the batch alone; a half per rank under torchrun
torch.nn.functional.cross_entropy(net(inputs), labels).backward()  # the mean per rank; DDP averages the ranks
if distributed.is_main():
    torch.save({name: p.grad for name, p in model.named_parameters()}, target)
