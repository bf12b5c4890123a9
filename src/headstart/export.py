"""Export a run's model to where models run: ONNX (any runtime) or TorchScript (C++/mobile, no Python).

The exported graph maps the network's *tensor* inputs to class logits; it holds no image decoding,
resizing or tokenisation. What turns a file or a string into those tensors is written beside it,
as data, in ``preprocessing.json`` (resize, crop, mean/std for images; the tokenizer files and the
maximum length for texts), together with the class names, so a runtime in any language can
reproduce exactly what :func:`headstart.predict` does:

* image: decode as RGB, resize the shorter side to ``resize_size`` (``interpolation``), center-crop
  ``input_size``, scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel; layout NCHW
  float32, input ``pixel_values``.
* text: the tokenizer saved in ``tokenizer/`` (Hugging Face ``tokenizer.json``, loadable by the
  ``tokenizers`` library in Rust, Python or JS) with ``truncation`` at ``max_length`` and padding
  to the longest text of the batch; inputs ``input_ids`` and ``attention_mask`` (and
  ``token_type_ids`` when the tokenizer makes them), int64 of shape ``(batch, length)``. The
  tokenizer stays outside the graph: ONNX has no standard operator for WordPiece/BPE.

Softmax is left to the caller (``logits`` out), as in ``transformers``' ONNX exports. A regression model's graph
returns ``value`` in target units (the de-standardisation is in the graph); a multi-label one returns
``probabilities`` (sigmoid in the graph), with the per-label thresholds in ``preprocessing.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.data.preprocessing import ImagePreprocessing, TextPreprocessing
from headstart.io import atomic_path, atomic_write_text
from headstart.model import TransferModel

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
PREPROCESSING_NAME = "preprocessing.json"
EXPORT_DIR = "export"
ONNX_OPSET = 18


@dataclass
class Export:
    """Where an export was written and what its graph expects."""

    format: str
    model: Path
    preprocessing: Path
    inputs: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "model": str(self.model), "preprocessing": str(self.preprocessing), "inputs": self.inputs}


class _ImageLogits(nn.Module):
    """``pixel_values -> logits``: the graph an image model exports."""

    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.task.export_output(self.model(pixel_values), self.model.target)


class _TextLogits(nn.Module):
    """``input_ids, attention_mask[, token_type_ids] -> logits``: tensors in, as exporters need them."""

    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return self.model.task.export_output(self.model(batch), self.model.target)


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def example_inputs(model: TransferModel, texts: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of the kind the exported graph takes (real tokenised text for text models)."""
    preprocessing = model.preprocessing
    if isinstance(preprocessing, ImagePreprocessing):
        size = preprocessing.input_size
        return {"pixel_values": torch.rand(2, 3, size, size)}
    if isinstance(preprocessing, TextPreprocessing):
        batch = preprocessing(texts or ["a short example", "a somewhat longer example sentence for the exporter"])
        return {k: batch[k] for k in TEXT_INPUTS if k in batch}
    raise ValueError(f"export supports image and text models; this run holds an {model.modality} model (audio export is not supported yet)")


def export_model(run: str | Path, *, format: str = "onnx", out: str | Path | None = None, overwrite: bool = False) -> Export:
    """Write the model of ``run`` as ONNX or TorchScript, with ``preprocessing.json`` beside it.

    Parameters
    ----------
    run : path
        A run directory written by :func:`headstart.fit`.
    format : {"onnx", "torchscript"}, default="onnx"
    out : path, optional
        Output directory; default ``run/export``. Files in it are replaced only with ``overwrite``.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; choose one of {list(FORMATS)}")
    run = Path(run)
    model = TransferModel.from_pretrained(run).cpu().eval()
    model.to(memory_format=torch.contiguous_format)  # exporters trace plain NCHW
    directory = Path(out) if out is not None else run / EXPORT_DIR
    target = directory / FORMATS[format]
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it or choose another --out")
    if getattr(model.preprocessing, "long_text", "truncate") == "chunk":
        raise ValueError(f"{run}: the run reads long texts in windows (--long-text chunk), which an exported graph of one window does not do; "
                         "refit with --long-text truncate to export")  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(model)
    names = list(inputs)
    wrapper = (_ImageLogits(model) if model.modality == "image" else _TextLogits(model)).eval()
    args = tuple(inputs.values())
    # The exporters print progress and warn about tracing internals of torch and transformers:
    # nothing the user can act on, and it would corrupt `--json` output.
    with atomic_path(target) as tmp, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if format == "onnx":
            _to_onnx(wrapper, args, names, tmp, model.task.export_name)
        else:
            with torch.no_grad():
                traced = torch.jit.trace(wrapper, args, check_trace=False)
            traced.save(str(tmp))
    spec = preprocessing_spec(model, names)
    if isinstance(model.preprocessing, TextPreprocessing):
        model.preprocessing.save(directory / "tokenizer")
    atomic_write_text(directory / PREPROCESSING_NAME, json.dumps(spec, indent=2))
    return Export(format, target, directory / PREPROCESSING_NAME, names)


def _to_onnx(wrapper: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], path: Path, output: str = "logits") -> None:
    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("length", min=2, max=4096)
    shapes = {name: {0: batch} if name == "pixel_values" else {0: batch, 1: length} for name in names}
    program = torch.onnx.export(
        wrapper, args, input_names=names, output_names=[output], dynamic_shapes=shapes, opset_version=ONNX_OPSET, dynamo=True, verbose=False
    )
    program.save(str(path))


def preprocessing_spec(model: TransferModel, inputs: list[str]) -> dict[str, Any]:
    """What turns raw inputs into the graph's tensors, as data (see the module docstring)."""
    spec: dict[str, Any] = {"modality": model.modality, "classes": model.classes, "inputs": inputs, "outputs": [model.task.export_name], "task": model.task.name}
    if model.task.name == "regression":
        spec["value"] = f"in target units ({model.classes[0]}): the head's output times the training std ({model.target['std']:.6g}) plus its mean ({model.target['mean']:.6g}), inside the graph"
    elif model.task.name == "multilabel":
        spec["sigmoid"] = "applied inside the graph: one probability per label"
        spec["thresholds"] = model.thresholds if model.thresholds is not None else [0.5] * len(model.classes)
    else:
        spec["softmax"] = "not applied: logits out"
    preprocessing = model.preprocessing
    if isinstance(preprocessing, ImagePreprocessing):
        spec["image"] = {
            **preprocessing.to_dict(),
            "resize_size": preprocessing.resize_size,
            "steps": [
                "decode as RGB",
                f"resize the shorter side to {preprocessing.resize_size} ({preprocessing.interpolation})",
                f"center crop {preprocessing.input_size}x{preprocessing.input_size}",
                "scale to [0, 1] (divide by 255)",
                "subtract mean, divide by std (per channel, RGB order)",
                "layout NCHW, float32",
            ],
        }
    else:
        spec["text"] = {**preprocessing.to_dict(), "tokenizer": "tokenizer/", "padding": "longest in batch", "truncation": True, "dtype": "int64"}
    return spec
