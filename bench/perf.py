"""Issue 5: what headstart's caches buy, against the textbook loops, side by side in one process.

Usage:
    python bench/perf.py p1 DATA [--epochs 30] [--textbook-epochs N]
    python bench/perf.py p3 DATA [--epochs 10] [--textbook-epochs N]
    python bench/perf.py p2 DATA [--epochs 2]
    python bench/perf.py fold DATA
    python bench/perf.py kernels DATA
    python bench/perf.py decode DATA [--epochs 2]
    python bench/perf.py p5 DATA [--epochs 2] [--n 6000] [--batch-size 128] [--variants compile,graphs] [--budget 480]  (on a GPU;
        --device cpu --n 48 --batch-size 8 --models timm:test_efficientnet checks the script on a CPU)
    add --profile to any: headstart's side once more under the torch profiler, top operators in the row
DATA: hymenoptera (../shared/datasets/hymenoptera) or elpv (the elpv-dataset package, binary).

p1 - feature extraction, ``epochs`` epochs of head training.
     textbook: the PyTorch transfer-learning tutorial's "ConvNet as fixed feature extractor"
     (every parameter but the new classifier has requires_grad=False; each epoch runs the whole
     network over the augmented training images, then over the validation images), test once.
     headstart: ``headstart.fit(strategy="feature-extraction")`` on an empty cache.
     plain forward: one inference pass of the same network over every image headstart touches.
p3 - fine-tune the last 2 blocks, no augmentation, ``epochs`` epochs.
     textbook: the tutorial's fine-tuning loop with the bottom frozen (requires_grad=False and,
     as the Keras guide does with training=False, the frozen part in inference mode), the whole
     network run every step; best validation weights kept, as the tutorial does; test once.
     headstart: ``headstart.fit(strategy="fine-tune", trainable_blocks=2, augment="none")``.
p2 - full fine-tuning throughput: training images per second of ``headstart.fit(strategy="full")``
     (its last epoch's training steps: loader, light augmentation, forward, backward, AdamW step)
     against a bare loop of forward + backward + AdamW step over the same model (the same
     TransferModel, channels-last, BatchNorm as headstart's full strategy keeps it) on tensors
     preprocessed into memory beforehand.
fold - the frozen pass with and without BatchNorm folded into the convolutions
     (``headstart.freezing.fold_batchnorm``): inference over every image of DATA, preprocessed into
     memory first, batch 32, channels-last; the two networks alternate for 3 rounds and each keeps
     its fastest round. The row gives both times, their ratio and the largest output difference.
kernels - issue 22: static TF padding (inference, Conv2dSame against StaticSameConv2d) and a training
     step with the frozen bottom's BatchNorm folded against as stored (see ``kernels``); alternating.
p1text - sms_spam: ``fit(backbone="minilm", strategy="feature-extraction")`` on an empty cache against
     the model card's plain forward over the same texts, in order and length-sorted (``p1_text``).
decode - the decoded-image cache: ``headstart.fit(strategy="full")`` for ``epochs`` epochs with
     the cache (each image decoded and resized once) and with ``HEADSTART_IMAGE_CACHE=0`` (decoded,
     resized and augmented by PIL in the loader workers every epoch), both from empty caches; the
     row gives each run's seconds per training epoch of the full phase and the whole run.
p5 - on a GPU, per model (the embedded EfficientNet-Lite0 fine-tuned with ``strategy="full"``, and
     timm's ResNet-50 from random weights with ``strategy="scratch"``: no ResNet-50 weights can be
     fetched here, and throughput does not depend on them): training images per second of
     ``headstart.fit(precision="bf16")``'s last epoch against a bare AMP loop (bf16 autocast,
     forward + backward + AdamW step, channels-last, on batches already on the GPU), and inference
     images per second of headstart's frozen pass (embedding ``n`` image files from an empty cache)
     against a bare forward on batches already on the GPU. What limits headstart: its training
     loader alone (decoded-image cache + augmentation, batches copied to the GPU, no model), with
     its own worker count and with 2 workers (``HEADSTART_WORKERS=2``, the choice before P5), and
     fit with 2 workers too. The data: ``n`` distinct 256 px crops of DATA's training images
     (``bench/memory.py``'s ``crop_images``), labels kept, split by headstart (65% train).
     Issue 28 (``gpu_throughput``): per model, in this order, each part printed as it ends: the bare
     AMP step (and inference) on batches already on the device; fit's training loader alone with
     augmentation on the device and on the CPU (``--augment-on device/cpu``); one epoch of fit's own
     training loop (``fit_model``, no validation) over each loader, with the share of the epoch spent
     waiting for the next batch and a profile of one more epoch (top operators by CUDA time, the
     share of wall time no kernel ran: ``_rows.device_profiled``); ``fit`` itself with
     ``augment_on`` auto (the device on a GPU) and cpu, bf16 by default; the frozen pass from image
     files, profiled too. ``--variants compile,graphs`` add the bare step under torch.compile and
     replayed from a CUDA graph, and fit's loop with ``torch_compile``. After ``--budget`` seconds the
     remaining parts are skipped and listed.

Both sides use the same split (headstart's train/val/test of DATA), the same network
(EfficientNet-Lite0, the embedded weights), batch 32, torch's default threads. The reference loops
use 2 loader workers; the tutorial uses batch 4 and 4 workers, and batch 32 with 2 workers (this
machine has 2 cores) is faster, so the reference is not slowed down. headstart picks its own
workers (none on a CPU when it augments cached pixels: see P2 in BENCHMARKS.md). With ``--textbook-epochs N`` < epochs the textbook
loop runs N epochs and the row also gives N-epoch time x epochs / N (every epoch does the same
work); the row says so. Rows are appended to bench/results/perf.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _rows import device_profiled, profiled
from torch import nn

import headstart
from headstart.backbones import create_backbone
from headstart.data import load_dataset, load_elpv, load_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RESULTS = Path(__file__).parent / "results" / "perf.jsonl"


def dataset(name: str, root: Path = SHARED) -> headstart.data.Dataset:
    return load_elpv(task="binary", seed=0) if name == "elpv" else load_dataset(root / name, seed=0)


class Images(torch.utils.data.Dataset):
    """The tutorial's ImageFolder, over headstart's split: (transformed image, label)."""

    def __init__(self, paths: list, labels: np.ndarray, transform) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_image(self.paths[i])), int(self.labels[i])


def reference_model(classes: int) -> nn.Module:
    """The embedded EfficientNet-Lite0 as a plain timm model with a new classifier."""
    model = copy.deepcopy(create_backbone("efficientnet_lite0")._source[0])
    model.reset_classifier(classes)
    return model


def loaders(data, transform_train, transform_eval, batch_size: int = 32) -> dict:
    make = lambda split, t, shuffle: torch.utils.data.DataLoader(  # noqa: E731
        Images(data.items(split), data.labels(split), t), batch_size=batch_size, shuffle=shuffle, num_workers=2
    )
    return {"train": make("train", transform_train, True), "val": make("val", transform_eval, False), "test": make("test", transform_eval, False)}


def train_model(model, dataloaders, criterion, optimizer, scheduler, num_epochs, frozen: nn.Module | None = None, channels_last: bool = False) -> tuple[nn.Module, float]:
    """The tutorial's ``train_model``: train + validate every epoch, keep the best validation weights (batches channels-last if asked)."""
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc = 0.0
    for _epoch in range(num_epochs):
        for phase in ["train", "val"]:
            model.train() if phase == "train" else model.eval()
            if frozen is not None:
                frozen.eval()  # Keras guide: the frozen base runs in inference mode
            running_corrects, seen = 0, 0
            for inputs, labels in dataloaders[phase]:
                if channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_corrects += int((outputs.argmax(1) == labels).sum())
                seen += len(labels)
            if phase == "train":
                scheduler.step()
            if phase == "val" and running_corrects / seen > best_acc:
                best_acc = running_corrects / seen
                best_model_wts = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_model_wts)
    return model, best_acc


@torch.no_grad()
def test_accuracy(model: nn.Module, loader) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / len(loader.dataset)


def textbook(kind: str, data, epochs: int, channels_last: bool = False) -> dict:
    from torchvision import transforms as T

    prep = create_backbone("efficientnet_lite0").preprocessing
    normalize = T.Normalize(prep.mean, prep.std)
    evaluate = T.Compose([T.Resize(prep.resize_size), T.CenterCrop(prep.input_size), T.ToTensor(), normalize])
    augment = T.Compose([T.RandomResizedCrop(prep.input_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    torch.manual_seed(0)
    model = reference_model(len(data.classes))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = nn.CrossEntropyLoss()
    if kind == "p1":
        for param in model.parameters():
            param.requires_grad = False
        for param in model.get_classifier().parameters():
            param.requires_grad = True
        dl = loaders(data, augment, evaluate)
        optimizer = torch.optim.SGD(model.get_classifier().parameters(), lr=0.001, momentum=0.9)
        frozen = None
    else:  # p3: last 2 blocks (blocks[6] and conv_head/bn2) and the classifier train; no augmentation
        top = [model.blocks[6], model.conv_head, model.bn2, model.get_classifier()]
        for param in model.parameters():
            param.requires_grad = False
        for module in top:
            for param in module.parameters():
                param.requires_grad = True
        frozen = nn.ModuleList([model.conv_stem, model.bn1, *model.blocks[:6]])
        dl = loaders(data, evaluate, evaluate)
        optimizer = torch.optim.AdamW(
            [{"params": model.get_classifier().parameters(), "lr": 1e-3}, {"params": [p for m in top[:3] for p in m.parameters()], "lr": 1e-4}]
        )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    started = time.perf_counter()
    model, best_val = train_model(model, dl, criterion, optimizer, scheduler, epochs, frozen=frozen, channels_last=channels_last)
    accuracy = test_accuracy(model, dl["test"])
    return {"seconds": time.perf_counter() - started, "epochs": epochs, "val_accuracy": best_val, "test_accuracy": accuracy}


def plain_forward(data, layout: str = "inputs_channels_last") -> dict:
    """One inference pass of the network over every image headstart embeds (train, val, test).

    ``layout``: "contiguous" (the tutorial: nothing converted), "inputs_channels_last" (the batches
    channels-last, the weights as stored: the reference of the first P1 rows), "channels_last"
    (weights and batches), "channels_last_folded" (that, BatchNorm folded into the convolutions:
    what headstart's embedding pass runs, less the static padding).
    """
    from headstart.data import make_loader
    from headstart.freezing import fold_batchnorm

    backbone = create_backbone("efficientnet_lite0").eval()
    size = backbone.preprocessing.input_size
    network = backbone
    if layout in ("channels_last", "channels_last_folded"):
        network = backbone.to(memory_format=torch.channels_last)
    if layout == "channels_last_folded":  # folded before the clock starts (headstart's fit folds inside its time: ~0.2 s)
        network = fold_batchnorm(backbone, torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last))[0]
    items = [*data.items("train"), *data.items("val"), *data.items("test")]
    started = time.perf_counter()
    with torch.inference_mode():
        for inputs, _ in make_loader(items, None, backbone.preprocessing, batch_size=64):
            network(inputs.contiguous(memory_format=torch.contiguous_format if layout == "contiguous" else torch.channels_last))
    return {"seconds": time.perf_counter() - started, "images": len(items), "layout": layout}


def text_forward(texts: list[str], *, length_sorted: bool, batch_size: int = 32) -> dict:
    """The all-MiniLM-L6-v2 model card's inference (tokenizer + AutoModel, mean pooling), in batches under inference mode.

    ``length_sorted``: batches of similar lengths, as sentence-transformers' ``encode`` makes them;
    otherwise in the order given, as the model card's snippet does. Loading the model is not timed.
    """
    from transformers import AutoModel, AutoTokenizer

    from headstart.backbones.embedded import _minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(str(_minilm_dir()))
    model = AutoModel.from_pretrained(str(_minilm_dir())).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if length_sorted else list(range(len(texts)))
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            encoded = tokenizer([texts[i] for i in order[start : start + batch_size]], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return {"seconds": time.perf_counter() - started, "texts": len(texts), "length_sorted": length_sorted, "batch_size": batch_size}


def p1_text(path: Path) -> dict:
    """P1 for text: ``fit(strategy="feature-extraction")`` with MiniLM on an empty cache, then plain forward passes (in order, length-sorted).

    Each side is printed when it ends (a loaded machine may stop the run before the last).
    """
    data = load_dataset(path, seed=0)
    texts = [*data.items("train"), *data.items("val"), *data.items("test")]
    row: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEADSTART_CACHE"] = tmp
        usage = rusage()
        started = time.perf_counter()
        run = headstart.fit(path, backbone="minilm", strategy="feature-extraction", out=Path(tmp) / "run", quiet=True)
        row["headstart"] = {"seconds": time.perf_counter() - started, **usage(), "test_accuracy": run.metrics["test"]["accuracy"],
                            "head_seconds": sum(r["seconds"] for r in run.history.epochs),
                            "log": [line for line in (Path(tmp) / "run" / "log.txt").read_text().splitlines() if "embeddings" in line]}  # fmt: skip
    print(json.dumps({"headstart": row["headstart"], "load_average": os.getloadavg()}), flush=True)
    for name, length_sorted in (("reference_in_order", False), ("reference_length_sorted", True)):
        row[name] = text_forward(texts, length_sorted=length_sorted)
        row[f"headstart_over_{name}"] = row["headstart"]["seconds"] / row[name]["seconds"]
        print(json.dumps({name: row[name], f"headstart_over_{name}": row[f"headstart_over_{name}"], "load_average": os.getloadavg()}), flush=True)
    return row


def rusage():
    """A function that returns the CPU seconds (user, system: this process and its finished children) and minor page faults since now."""
    import resource

    def now() -> tuple[float, float, int]:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime, own.ru_minflt + children.ru_minflt

    before = now()
    return lambda: dict(zip(("user_seconds", "system_seconds", "minor_faults"), (b - a for a, b in zip(before, now()))))


def ours(kind: str, data, epochs: int) -> dict:
    kwargs = (
        dict(strategy="feature-extraction", epochs=epochs, patience=None)
        if kind == "p1"
        else dict(strategy="fine-tune", trainable_blocks=2, augment="none", epochs=epochs, patience=None)
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEADSTART_CACHE"] = tmp  # empty caches: the first run pays for everything
        started = time.perf_counter()
        run = headstart.fit(data, out=Path(tmp) / "run", quiet=True, **kwargs)
        seconds = time.perf_counter() - started
        log = (Path(tmp) / "run" / "log.txt").read_text().splitlines()
    return {"seconds": seconds, "test_accuracy": run.metrics["test"]["accuracy"], "log": [line for line in log if "cache" in line or "embeddings" in line]}


def preloaded_batches(data, preprocessing, batch_size: int, count: int, device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of preprocessed training images, channels-last, already on ``device``."""
    from headstart.data import make_loader

    items = data.items("train")[: batch_size * count]
    return [(x.to(device).contiguous(memory_format=torch.channels_last), y.to(device))
            for x, y in make_loader(items, data.labels("train")[: len(items)], preprocessing, batch_size=batch_size)]  # fmt: skip


def bare_loop(data, batches: int, batch_size: int = 32, warmup: int = 3) -> dict:
    """Forward + backward + AdamW step on pre-loaded tensors: the ceiling for any data pipeline."""
    from headstart.freezing import set_batchnorm, unfreeze
    from headstart.model import TransferModel

    model = TransferModel.from_backbone("efficientnet_lite0", data.classes)
    unfreeze(model)
    set_batchnorm(model, "eval")
    tensors = preloaded_batches(data, model.preprocessing, batch_size, batches)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for x, y in tensors[:warmup]:  # untimed whole steps, AdamW's included: allocations, kernels and optimizer state warmed up
        step(x, y)
    timed = [tensors[i % len(tensors)] for i in range(max(20, len(tensors)))]  # at least 20 batches, the preloaded ones in turn
    usage = rusage()
    started = time.perf_counter()
    for x, y in timed:
        step(x, y)
    seconds = time.perf_counter() - started
    images = sum(len(y) for _, y in timed)
    return {"seconds": seconds, "images": images, "batches": len(timed), "warmup_steps": warmup, "images_per_second": images / seconds, **usage()}


def full_throughput(data, epochs: int, augment_on: str = "auto") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEADSTART_CACHE"] = tmp
        usage = rusage()
        on = {} if augment_on == "auto" else {"augment_on": augment_on}  # the default: a run as every P2 before issue 28
        run = headstart.fit(data, out=Path(tmp) / "run", quiet=True, strategy="full", epochs=epochs, patience=None, **on)
        used = usage()
        log = (Path(tmp) / "run" / "log.txt").read_text().splitlines()
    last = [r for r in run.history.epochs if r["phase"] == "full"][-1]
    n = len(data.items("train"))
    return {"train_seconds": last["train_seconds"], "images": n, "images_per_second": n / last["train_seconds"], "whole_fit": used,
            "log": [line for line in log if "cache" in line]}  # fmt: skip


def folded_forward(data, rounds: int = 3) -> dict:
    """Seconds of one inference pass over preloaded images, the network as stored and BatchNorm-folded."""
    from headstart.data import make_loader
    from headstart.freezing import fold_batchnorm

    backbone = create_backbone("efficientnet_lite0").eval()
    items = [*data.items("train"), *data.items("val"), *data.items("test")]
    batches = [x.contiguous(memory_format=torch.channels_last) for x, _ in make_loader(items, None, backbone.preprocessing, batch_size=32)]
    folded, count = fold_batchnorm(backbone, batches[0][:2])
    times: dict[str, list[float]] = {"batchnorm": [], "folded": []}
    with torch.inference_mode():
        expected = [backbone(x) for x in batches[:2]]
        difference = max(float((folded(x) - e).abs().max() / e.abs().max()) for x, e in zip(batches, expected))
        for _ in range(rounds):
            for name, network in (("batchnorm", backbone), ("folded", folded)):
                started = time.perf_counter()
                for x in batches:
                    network(x)
                times[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in times.items()}
    return {"images": len(items), "batchnorm_folded": count, "seconds": best, "rounds": times,
            "speedup": best["batchnorm"] / best["folded"], "max_relative_difference": difference}  # fmt: skip


def alternate(sides: dict, batches: list, rounds: int = 3) -> dict:
    """Seconds of each side's ``step(x, y)`` over ``batches``, the sides alternating for ``rounds``; the fastest round each."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, step in sides.items():
            started = time.perf_counter()
            for x, y in batches:
                step(x, y)
            times[name].append(time.perf_counter() - started)
    return {"best": {name: min(values) for name, values in times.items()}, "rounds": times}


def kernels(data, batch_size: int = 32, count: int = 3) -> dict:
    """Issue 22's two kernel changes, each side by side in this process on ``count`` preloaded training batches.

    padding: inference with timm's Conv2dSame (padding computed at every call) against
    StaticSameConv2d (worked out once), channels-last, BatchNorm as stored. folding: a training step
    (forward, backward, AdamW) of EfficientNet-Lite0 with its bottom 7 blocks frozen, as stored
    against the frozen blocks run BatchNorm-folded (``TransferModel.frozen_batchnorm_folded``).
    """
    from timm.layers import Conv2dSame

    from headstart.backbones.timm import StaticSameConv2d
    from headstart.freezing import freeze_bottom
    from headstart.model import TransferModel

    model = TransferModel.from_backbone("efficientnet_lite0", data.classes)
    batches = preloaded_batches(data, model.preprocessing, batch_size, count)
    dynamic = copy.deepcopy(model.backbone).eval()
    for parent in list(dynamic.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, StaticSameConv2d):
                conv = Conv2dSame(child.in_channels, child.out_channels, child.kernel_size, stride=child.stride, dilation=child.dilation,
                                  groups=child.groups, bias=child.bias is not None)  # fmt: skip
                conv.weight, conv.bias = child.weight, child.bias
                setattr(parent, name, conv)
    static = model.backbone.eval()
    with torch.inference_mode():
        same = all(torch.equal(static(x), dynamic(x)) for x, _ in batches[:1])
        padding = alternate({"dynamic": lambda x, y: dynamic(x), "static": lambda x, y: static(x)}, batches)
    freeze_bottom(model, 3)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    step(*batches[0])
    times: dict[str, list[float]] = {"batchnorm": [], "folded": []}
    for _ in range(3):
        for name in times:
            with model.frozen_batchnorm_folded() if name == "folded" else contextlib.nullcontext():
                times[name].append(alternate({name: step}, batches, rounds=1)["rounds"][name][0])
    best = {name: min(values) for name, values in times.items()}
    return {"images": sum(len(y) for _, y in batches), "padding": {**padding, "outputs_equal": same, "speedup": padding["best"]["dynamic"] / padding["best"]["static"]},
            "folding": {"best": best, "rounds": times, "speedup": best["batchnorm"] / best["folded"]}}  # fmt: skip


def decode_cache(data, epochs: int) -> dict:
    """Full fine-tuning with and without the decoded-image cache, one after the other."""
    sides = {}
    for name, flag in (("cache", "1"), ("no_cache", "0")):
        os.environ["HEADSTART_IMAGE_CACHE"] = flag
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["HEADSTART_CACHE"] = tmp
            started = time.perf_counter()
            run = headstart.fit(data, out=Path(tmp) / "run", quiet=True, strategy="full", epochs=epochs, patience=None)
            seconds = time.perf_counter() - started
        epochs_run = [r for r in run.history.epochs if r["phase"] == "full"]
        sides[name] = {"seconds": seconds, "train_seconds_per_epoch": float(np.mean([r["train_seconds"] for r in epochs_run])),
                       "test_accuracy": run.metrics["test"]["accuracy"]}  # fmt: skip
    os.environ.pop("HEADSTART_IMAGE_CACHE")
    sides["epoch_speedup"] = sides["no_cache"]["train_seconds_per_epoch"] / sides["cache"]["train_seconds_per_epoch"]
    return sides


def crop_dataset(data, n: int, folder: Path) -> headstart.data.Dataset:
    """``n`` distinct crops of ``data``'s training images (labels kept), read back as a headstart listing."""
    from memory import crop_images

    sources = [(Path(path), data.classes[label]) for path, label in zip(data.items("train"), data.labels("train"))]
    rows = crop_images(sources, folder, n, workers=os.cpu_count() or 1)
    with open(folder / "all.csv", "w") as handle:
        handle.write("path,label\n" + "".join(f"{path},{label}\n" for path, label in rows))
    return load_dataset(folder / "all.csv", seed=0)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step, batches: list, device: str, rounds: int = 3) -> float:
    """Images per second of ``step(x, y)`` over ``batches``, after a warm-up pass; the fastest of ``rounds``."""
    for x, y in batches[:3]:
        step(x, y)
    synchronize(device)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for x, y in batches:
            step(x, y)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return sum(len(y) for _, y in batches) / best


def autocast(device: str, graphed: bool = False):
    """bf16 autocast on the GPU (the AMP recipe; no scaler needed); nothing on the CPU (the smoke run checks the script, not speed).
    ``graphed``: without autocast's cast cache, which CUDA graph capture requires."""
    return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphed) if device == "cuda" else contextlib.nullcontext()


def bare_amp(name: str, data, batch_size: int, pretrained: bool, batchnorm: str, device: str, count: int = 20, variants: tuple[str, ...] = ()) -> dict:
    """The AMP recipe (bf16 autocast) on batches already on the device: training and inference ceilings.

    ``variants``: also the training step under ``torch.compile`` ("compile") and captured in a CUDA
    graph ("graphs": static input buffers, the whole step replayed), each against the same batches.
    """
    from headstart.freezing import set_batchnorm, unfreeze
    from headstart.model import TransferModel

    torch.manual_seed(0)
    model = TransferModel.from_backbone(name, data.classes, pretrained=pretrained).to(device).fast_layout()
    batches = preloaded_batches(data, model.preprocessing, batch_size, count, device=device)
    unfreeze(model)
    model.train()
    set_batchnorm(model, batchnorm)
    graphed = "graphs" in variants and device == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=graphed)  # a captured step keeps its step count on the GPU
    loss_fn = nn.CrossEntropyLoss()

    def train_step(x, y, net=model):
        with autocast(device, graphed):
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=not graphed)  # a graph replays into the same gradient tensors
        loss.backward()
        optimizer.step()
        return loss

    row: dict = {"train_images_per_second": timed(train_step, batches, device)}
    if "compile" in variants:
        started = time.perf_counter()
        compiled = torch.compile(model)
        train_step(*batches[0], net=compiled)
        synchronize(device)
        row["compile_seconds"] = time.perf_counter() - started
        row["train_compiled_images_per_second"] = timed(lambda x, y: train_step(x, y, net=compiled), batches, device)
    if graphed:  # the step replayed from a CUDA graph: no launch overhead, no CPU in the loop
        static_x, static_y = (t.clone() for t in batches[0])
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                train_step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            train_step(static_x, static_y)

        def replay(x, y):
            static_x.copy_(x)
            static_y.copy_(y)
            graph.replay()

        row["train_cuda_graph_images_per_second"] = timed(replay, [b for b in batches if len(b[1]) == batch_size], device)
    model.eval()
    for precision in ("bf16", "fp32") if device == "cuda" else ("fp32",):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16" and device == "cuda"):
            row[f"inference_{precision}_images_per_second"] = timed(lambda x, y: model(x), batches, device)
    row["batch_size"], row["images"] = batch_size, sum(len(y) for _, y in batches)
    return row


class TimedLoader:
    """A training loader that counts the seconds the loop waits for each next batch (the step cannot start without it)."""

    def __init__(self, loader) -> None:
        self.loader, self.waited = loader, 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):  # sampler, generator: as the wrapped loader's
        return getattr(self.loader, name)

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            self.waited += time.perf_counter() - started
            if batch is None:
                return
            yield batch


def train_items(data, preprocessing, cache: Path) -> list:
    """The training split's items from the decoded-image cache (decoded on the first call), as fit trains on them."""
    from headstart.caches.images import image_cache

    return image_cache(cache).prepare(data.items("train"), preprocessing, augment="light")[0]


def loader_only(data, preprocessing, batch_size: int, cache: Path, augment_on: str, device: str) -> float:
    """Images per second of fit's training loader alone (cached pixels, light augmentation, on the device), no model."""
    from headstart.data import make_loader

    items = train_items(data, preprocessing, cache)
    loader = make_loader(items, data.labels("train"), preprocessing, batch_size=batch_size, train=True, augment="light", augment_on=augment_on)
    started = time.perf_counter()
    for x, _ in loader:
        x.to(device, non_blocking=True)
    synchronize(device)
    return len(items) / (time.perf_counter() - started)


def training_epoch(name: str, data, batch_size: int, cache: Path, augment_on: str, device: str, *, pretrained: bool, batchnorm: str,
                   profile: bool = False) -> dict:  # fmt: skip
    """One epoch of fit's own training loop (``fit_model``, no validation) over fit's loader: images per second, the share of the
    epoch spent waiting for the next batch and, with ``profile``, the profiler's summary (a separate epoch, not timed)."""
    from headstart.data import make_loader
    from headstart.freezing import set_batchnorm, unfreeze
    from headstart.model import TransferModel
    from headstart.training.loop import default_precision, fit_model
    from headstart.training.state import TrainSettings

    torch.manual_seed(0)
    model = TransferModel.from_backbone(name, data.classes, pretrained=pretrained).to(device).fast_layout()
    unfreeze(model)
    set_batchnorm(model, batchnorm)
    items = train_items(data, model.preprocessing, cache)
    settings = TrainSettings(epochs=1, lr=1e-4, patience=None, precision=default_precision(torch.device(device))[0])

    def epoch() -> TimedLoader:
        loader = TimedLoader(make_loader(items, data.labels("train"), model.preprocessing, batch_size=batch_size, train=True, augment="light",
                                         augment_on=augment_on))  # fmt: skip
        fit_model(model, loader, None, settings)
        synchronize(device)
        return loader

    epoch()  # warm-up: allocator, kernels, workers
    started = time.perf_counter()
    loader = epoch()
    seconds = time.perf_counter() - started
    row = {"images_per_second": len(items) / seconds, "input_wait_fraction": loader.waited / seconds, "precision": settings.precision}
    if profile:
        row["profile"] = device_profiled(epoch, device)
    return row


def gpu_throughput(data, n: int, batch_size: int, epochs: int, models: list[str], *, device: str = "cuda", variants: tuple[str, ...] = (),
                   budget: float = 480.0) -> dict:  # fmt: skip
    """P5, issue 28: per model, the bare AMP ceilings, fit's loader alone, fit's training loop and fit itself with augmentation on
    the CPU (per image, in loader workers) and on the device, profiles beside them, and the frozen pass from image files.

    Parts are run in order of importance; once ``budget`` seconds have passed, the rest is skipped and the row says so.
    """
    from headstart.data import loader_workers

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # the crops and their caches: gone afterwards
        root = Path(tmp)
        crops = crop_dataset(data, n, root / "crops")
        out: dict = {"n": {s: len(crops.items(s)) for s in crops.splits}, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                     "cpus": os.cpu_count(), "default_workers": loader_workers(len(crops.items("train")), batch_size), "skipped": []}  # fmt: skip
        for stage in ("main", *variants):  # every model's main figures before any variant's
            for name in models:
                out[name] = model_throughput(name, crops, root, batch_size, epochs, device, stage, out.get(name, {}),
                                             skip=lambda: time.perf_counter() - began > budget, skipped=out["skipped"])  # fmt: skip
        out["seconds"] = time.perf_counter() - began
    return out


def model_throughput(name: str, crops, root: Path, batch_size: int, epochs: int, device: str, stage: str, row: dict, *, skip, skipped: list) -> dict:
    """One model's ``stage`` of :func:`gpu_throughput` ("main", "graphs" or "compile") added to its ``row``; each part printed as it
    ends (a run stopped early keeps what it printed)."""
    from headstart.caches.embeddings import EmbeddingCache

    pretrained = name.startswith("efficientnet_lite")  # embedded weights; no others can be fetched, and throughput does not depend on them
    strategy, batchnorm = ("full", "eval") if pretrained else ("scratch", "train")
    row.update(strategy=strategy, pretrained=pretrained)
    cache = root / f"cache-{strategy}-{name.replace(':', '_')}"
    backbone = create_backbone(name, pretrained=pretrained)
    model = dict(pretrained=pretrained, batchnorm=batchnorm)

    def part(key: str, work) -> None:
        if skip():
            skipped.append(f"{name} {key}")
            return
        try:
            row[key] = work()
        except Exception as error:  # one part's failure must not lose the others' figures
            import traceback

            row[key] = {"error": traceback.format_exc()[-2000:]}
            print(f"{name} {key}: {error!r}", flush=True)
        print(json.dumps({name: {key: row[key]}}), flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()

    def whole_fit(on: str) -> dict:
        started = time.perf_counter()
        run = headstart.fit(crops, backbone=name, strategy=strategy, epochs=epochs, patience=None, batch_size=batch_size, augment_on=on,
                            quiet=True, save=False, report=False, cache_dir=cache)  # fmt: skip
        last = [r for r in run.history.epochs if r["phase"] == strategy][-1]
        return {"train_images_per_second": len(crops.items("train")) / last["train_seconds"], "seconds": time.perf_counter() - started,
                "test_accuracy": run.metrics["test"]["accuracy"]}  # fmt: skip

    def frozen_pass() -> dict:
        items = [*crops.items("train"), *crops.items("val"), *crops.items("test")]
        network = backbone.to(device)
        embed = lambda folder: EmbeddingCache(folder).embed(network, items, batch_size=256)  # noqa: E731
        synchronize(device)
        started = time.perf_counter()
        embed(root / f"embed-{strategy}")
        synchronize(device)
        seconds = time.perf_counter() - started
        return {"images_per_second": len(items) / seconds, "profile": device_profiled(lambda: embed(root / f"embed-profiled-{strategy}"), device)}

    if stage == "main":
        part("bare", lambda: bare_amp(name, crops, batch_size, pretrained, batchnorm, device))
        for on in ("device", "cpu"):
            part(f"loader_only_{on}", lambda on=on: loader_only(crops, backbone.preprocessing, batch_size, cache, on, device))
            part(f"loop_{on}", lambda on=on: training_epoch(name, crops, batch_size, cache, on, device, profile=True, **model))
        for on in ("auto", "cpu"):
            part(f"fit_augment_on_{on}", lambda on=on: whole_fit(on))
        part("frozen_pass", frozen_pass)
    else:
        part(f"bare_{stage}", lambda: bare_amp(name, crops, batch_size, pretrained, batchnorm, device, variants=(stage,)))
    if stage == "compile":
        part("loop_device_compiled", lambda: compiled_epoch(name, crops, batch_size, cache, device, **model))
    bare = row.get("bare", {}).get("train_images_per_second")
    for key in ("fit_augment_on_auto", "fit_augment_on_cpu", "loop_device", "loop_cpu", "loop_device_compiled"):
        figure = row.get(key, {})
        speed = figure.get("train_images_per_second", figure.get("images_per_second"))
        if bare and speed:
            row[f"{key}_over_bare"] = speed / bare
    forward = row.get("bare", {}).get(f"inference_{'bf16' if device == 'cuda' else 'fp32'}_images_per_second")
    if forward and "images_per_second" in row.get("frozen_pass", {}):
        row["frozen_pass_over_bare_forward"] = row["frozen_pass"]["images_per_second"] / forward
    return row


def compiled_epoch(name: str, data, batch_size: int, cache: Path, device: str, *, pretrained: bool, batchnorm: str) -> dict:
    """fit's training loop with ``torch_compile`` (the ``--torch-compile`` option), device augmentation: compile time and images per second."""
    from headstart.data import make_loader
    from headstart.freezing import set_batchnorm, unfreeze
    from headstart.model import TransferModel
    from headstart.training.loop import default_precision, fit_model
    from headstart.training.state import TrainSettings

    torch.manual_seed(0)
    model = TransferModel.from_backbone(name, data.classes, pretrained=pretrained).to(device).fast_layout()
    unfreeze(model)
    set_batchnorm(model, batchnorm)
    items = train_items(data, model.preprocessing, cache)
    settings = TrainSettings(epochs=1, lr=1e-4, patience=None, precision=default_precision(torch.device(device))[0], torch_compile=True)
    times = []
    for _ in range(2):  # the first epoch compiles
        started = time.perf_counter()
        fit_model(model, make_loader(items, data.labels("train"), model.preprocessing, batch_size=batch_size, train=True, augment="light", augment_on="device"),
                  None, settings)  # fmt: skip
        synchronize(device)
        times.append(time.perf_counter() - started)
    return {"first_epoch_seconds": times[0], "images_per_second": len(items) / times[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["p1", "p1text", "p2", "p3", "fold", "kernels", "decode", "p5"])
    parser.add_argument("data", choices=["hymenoptera", "elpv", "sms_spam"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--textbook-epochs", type=int)
    parser.add_argument("--n", type=int, default=6000, help="p5: images made from DATA's training split")
    parser.add_argument("--batch-size", type=int, default=128, help="p5: both sides' batch size")
    parser.add_argument("--models", default="efficientnet_lite0,timm:resnet50", help="p5: backbones (efficientnet_lite*: fine-tuned from the embedded weights; others: scratch)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="p5: cpu only checks that the script runs (tiny --n, timm:test_efficientnet)")
    parser.add_argument("--variants", default="", help="p5: also measure these, comma-separated: compile (torch.compile), graphs (CUDA graphs, bare step)")
    parser.add_argument("--augment-on", default="auto", choices=["auto", "cpu", "device"], help="p2: where fit augments (issue 28)")
    parser.add_argument("--data-root", type=Path, default=SHARED, help="folder holding DATA (default ../shared/datasets; on a device machine, a carried copy)")
    parser.add_argument("--budget", type=float, default=480.0, help="p5: seconds after which the remaining parts are skipped (and listed)")
    parser.add_argument("--profile", action="store_true", help="then run headstart's side once more under the torch profiler: top operators in the row")
    args = parser.parse_args()
    if args.kind == "p5" and args.device == "cuda" and not torch.cuda.is_available():
        parser.error("p5 measures GPU throughput and needs a CUDA GPU; this machine has none (--device cpu runs it on the CPU to check the script, not to measure)")
    epochs = args.epochs or {"p1": 30, "p1text": 0, "p2": 2, "p3": 10, "fold": 0, "kernels": 0, "decode": 2, "p5": 2}[args.kind]
    if args.kind == "p1text":
        return finish({"bench": "p1text", "data": args.data, **p1_text(SHARED / args.data / "data.csv")})
    data = dataset(args.data, args.data_root)
    row: dict = {"bench": args.kind, "data": args.data, "epochs": epochs, "n": {s: len(data.items(s)) for s in data.splits}}
    if args.kind == "fold":
        row["fold"] = folded_forward(data)
        return finish(row)
    if args.kind == "kernels":
        row["kernels"] = kernels(data)
        return finish(row)
    if args.kind == "p5":
        row["p5"] = gpu_throughput(data, args.n, args.batch_size, epochs, args.models.split(","), device=args.device,
                                   variants=tuple(v for v in args.variants.split(",") if v), budget=args.budget)  # fmt: skip
        return finish(row)
    if args.kind == "decode":
        row["decode"] = decode_cache(data, epochs)
        return finish(row)
    if args.kind == "p2":
        row["augment_on"] = args.augment_on
        row["headstart"] = full_throughput(data, epochs, args.augment_on)
        row["bare"] = bare_loop(data, batches=min(20, len(data.items("train")) // 32))
        row["ratio"] = row["headstart"]["images_per_second"] / row["bare"]["images_per_second"]
        if args.profile:
            row["profile"] = profiled(lambda: full_throughput(data, epochs))
        return finish(row)
    row["plain_forward"] = plain_forward(data)  # first: it also brings every file into the OS page cache for both sides
    if args.kind == "p1":  # how much of headstart's lead over a plain pass is layout and BatchNorm folding, not caching
        row["plain_forward_variants"] = {layout: plain_forward(data, layout) for layout in ("contiguous", "channels_last", "channels_last_folded")}
    row["headstart"] = ours(args.kind, data, epochs)
    row["headstart_over_forward"] = row["headstart"]["seconds"] / row["plain_forward"]["seconds"]
    for layout, side in row.get("plain_forward_variants", {}).items():
        row[f"headstart_over_forward_{layout}"] = row["headstart"]["seconds"] / side["seconds"]
    ran = args.textbook_epochs or epochs
    row["textbook"] = textbook(args.kind, data, ran)
    scale = epochs / ran
    row["textbook"]["seconds_for_epochs"] = row["textbook"]["seconds"] * scale
    row["textbook"]["extrapolated"] = ran != epochs
    row["speedup"] = row["textbook"]["seconds_for_epochs"] / row["headstart"]["seconds"]
    if args.kind == "p1":  # the tutorial's loop with model and batches channels-last
        row["textbook_channels_last"] = textbook(args.kind, data, ran, channels_last=True)
        row["textbook_channels_last"]["seconds_for_epochs"] = row["textbook_channels_last"]["seconds"] * scale
        row["speedup_over_channels_last_textbook"] = row["textbook_channels_last"]["seconds_for_epochs"] / row["headstart"]["seconds"]
    if args.profile:
        row["profile"] = profiled(lambda: ours(args.kind, data, epochs))
    finish(row)


def finish(row: dict) -> None:
    row["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"
    row["load_average"] = os.getloadavg()
    row["malloc_env"] = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k in ("LD_PRELOAD", "HEADSTART_MALLOC")}
    row["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    print(json.dumps(row, indent=1), flush=True)
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
