"""Running under ``torchrun``: PyTorch's own process groups, DistributedDataParallel and samplers.

``torchrun --nproc_per_node=N -m headstart fit DATA ...`` starts N copies of the same command;
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address, and
:func:`setup` joins the group (NCCL when CUDA is there, Gloo otherwise). Without those variables
every function here is a no-op, so single-process code pays nothing.

What changes with N processes:

* the missing embeddings (and decoded images) are split across ranks; each rank writes its own
  cache shards atomically, and after a barrier every rank reads the merged cache, which a later
  single-process run reuses as is;
* phases that train body blocks wrap the model in ``DistributedDataParallel``, rebuilt at each
  phase because DDP fixes the set of parameters it reduces when it is built (gradual unfreezing
  adds blocks); frozen parameters are outside that set, so they cost no all-reduce;
* training batches come from a ``DistributedSampler``; validation is split without padding and
  its loss and accuracy are summed over ranks, so early stopping decides the same on every rank;
* a head trained on cached features is tiny: every rank trains the same one (same data, same seed)
  and rank 0's weights are broadcast, instead of paying an all-reduce per step;
* only rank 0 writes the run directory, the checkpoint and the report, and prints progress.
"""

from __future__ import annotations

import atexit
import inspect
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched() -> bool:
    """True in a process that torchrun (or another launcher setting ``WORLD_SIZE`` > 1) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> None:
    """Join the process group torchrun describes, once; NCCL with CUDA, Gloo on CPU."""
    if not launched() or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(minutes=int(os.environ.get("HEADSTART_DIST_TIMEOUT_MIN", "30"))))
    # Leave the group before the interpreter exits: a process exiting with Gloo's threads still up
    # can abort ("terminate called without an active exception"), which torchrun reports as a failure.
    atexit.register(teardown)


def teardown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def backend() -> str:
    return str(dist.get_backend()) if active() else "none"


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes files and prints."""
    return rank() == 0


def device() -> torch.device:
    """This rank's device: its own GPU under torchrun (``LOCAL_RANK``), the GPU, or the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if launched() else torch.device("cuda")


def barrier() -> None:
    if active():
        dist.barrier()


def share(work: Sequence[T]) -> list[T]:
    """This rank's part of ``work`` (every ``world_size``-th item from its rank): each item goes to exactly one rank."""
    return list(work[rank() :: world_size()])


def sum_over_ranks(*values: float) -> list[float]:
    """Element-wise sums over ranks (float64), e.g. loss sums, correct counts and example counts."""
    if not active():
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=device() if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object), e.g. a run name with a timestamp."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_shared(folder: Path, count: int, *, expect: int | None = None) -> None:
    """Stop when ranks disagree about what a cache folder holds: the folder is not shared between them.

    Ranks split the missing work by position and read each other's shards after a barrier, so the
    cache must be one folder every rank sees (on several nodes: a shared filesystem). ``count`` is
    this rank's number of missing entries; ``expect`` what it must be (default: rank 0's).
    """
    if not active():
        return
    counts = [0] * world_size()
    dist.all_gather_object(counts, count)
    wanted = counts[0] if expect is None else expect
    if any(c != wanted for c in counts):
        raise RuntimeError(
            f"{folder}: the ranks see different cache contents (missing per rank: {counts}); under torchrun on several nodes "
            "put --cache-dir on a filesystem every node mounts (NFS, Lustre, a cloud file share)"
        )


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank hold rank 0's parameters and buffers."""
    if active():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def train_sampler(dataset: Any, *, seed: int) -> Any:
    """A ``DistributedSampler`` (shuffled, padded to equal length so every rank takes the same number of steps), or None."""
    if not active():
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)


def eval_subset(dataset: Any) -> Any:
    """This rank's share of an evaluation set, without padding (metrics are summed, not averaged)."""
    if not active():
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, share(range(len(dataset))))


def wrap(model: torch.nn.Module, train_loader: Any) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when this phase's batches are sharded across ranks; else ``model``.

    Built from what is trainable now; buffers are broadcast only when some BatchNorm is in train
    mode (frozen BatchNorm statistics are the same on every rank already).
    """
    from torch.utils.data import DistributedSampler

    if not active() or not isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
        return model
    if not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    training_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())
    ids = [model_device.index] if (model_device := next(model.parameters()).device).type == "cuda" else None
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:  # torch >= 2.13 renamed it
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=training_bn)
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=training_bn)
