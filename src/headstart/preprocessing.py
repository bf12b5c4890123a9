"""Preprocessing that travels with the weights.

timm keeps mean/std/input size beside each checkpoint as data (``pretrained_cfg``); so do we. A
saved run stores these objects in its ``config.json`` and reloads them, so predictions after a
reload see exactly the pixels or tokens the model was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart._torchvision import import_torchvision

_tv = import_torchvision()
from torchvision import transforms as T  # noqa: E402  (needs the import above first)

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}

AUGMENT_PRESETS = ("none", "light", "strong")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image becomes the tensor the backbone expects (resize, center crop, normalise)."""

    input_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    @property
    def resize_size(self) -> int:
        return int(round(self.input_size / self.crop_pct))

    def eval_transform(self) -> T.Compose:
        return T.Compose(
            [
                T.Resize(self.resize_size, interpolation=_INTERPOLATION[self.interpolation]),
                T.CenterCrop(self.input_size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def train_transform(self, augment: str = "light") -> T.Compose:
        """Training-time transform; ``augment`` is one of :data:`AUGMENT_PRESETS`.

        ``light`` crops at least 75% of the image (fastai's usual ``min_scale=0.75``) and flips: a
        small object or defect stays in view, so the label stays true. ``strong`` crops down to 8%
        (torchvision's default) and jitters colour.
        """
        if augment not in AUGMENT_PRESETS:
            raise ValueError(f"augment={augment!r} is not one of {AUGMENT_PRESETS}")
        if augment == "none":
            return self.eval_transform()
        interpolation = _INTERPOLATION[self.interpolation]
        steps: list[Any] = [
            T.RandomResizedCrop(self.input_size, scale=(0.75 if augment == "light" else 0.08, 1.0), interpolation=interpolation),
            T.RandomHorizontalFlip(),
        ]
        if augment == "strong":
            steps.append(T.ColorJitter(0.3, 0.3, 0.3))
        steps += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(steps)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "image", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagePreprocessing:
        fields = {k: v for k, v in data.items() if k != "kind"}
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        return cls(**fields)


class TextPreprocessing:
    """Tokenisation for a Hugging Face text encoder; the tokenizer files are saved with the run."""

    def __init__(self, tokenizer: Any, max_length: int = 256) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return dict(batch)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "text", "max_length": self.max_length}

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: Path, data: dict[str, Any]) -> TextPreprocessing:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(directory)), max_length=int(data["max_length"]))


class AudioPreprocessing:
    """Waveforms (1-D float arrays at the extractor's sampling rate) to a Hugging Face audio encoder's inputs."""

    def __init__(self, feature_extractor: Any) -> None:
        self.feature_extractor = feature_extractor

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def __call__(self, waveforms: list[Any]) -> dict[str, torch.Tensor]:
        batch = self.feature_extractor(
            [np.asarray(w, dtype=np.float32) for w in waveforms],
            sampling_rate=self.sampling_rate,
            padding=True,
            return_tensors="pt",
        )
        return dict(batch)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "audio", "sampling_rate": self.sampling_rate}

    def save(self, directory: Path) -> None:
        self.feature_extractor.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: Path, data: dict[str, Any]) -> AudioPreprocessing:
        from transformers import AutoFeatureExtractor

        return cls(AutoFeatureExtractor.from_pretrained(str(directory)))


Preprocessing = ImagePreprocessing | TextPreprocessing | AudioPreprocessing


def load_preprocessing(data: dict[str, Any], assets: Path) -> Preprocessing:
    """Inverse of ``to_dict`` (+ ``save`` for tokenizers and feature extractors)."""
    if data["kind"] == "text":
        return TextPreprocessing.load(assets, data)
    if data["kind"] == "audio":
        return AudioPreprocessing.load(assets, data)
    return ImagePreprocessing.from_dict(data)
