"""Preprocessing that travels with the weights.

timm keeps mean/std/input size beside each checkpoint as data (``pretrained_cfg``); so do we. A
saved run stores these objects in its ``config.json`` and reloads them, so predictions after a
reload see exactly the pixels, tokens, waveforms or spectrograms the model was trained on.

Why this module is long: each input kind's preprocessing (images, spectrograms, texts, audio) is
saved with a run and reloaded by the same registry, so they live side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.config import AUGMENT_PRESETS, LONG_TEXT_MODES
from headstart.data.audio import augment_waveform, fix_length, load_audio, log_mel, mask_spectrogram


def _transforms() -> Any:
    """torchvision's transforms, imported on first use: a text or audio run never pays torchvision's import
    (seconds of CPU, ``torch._dynamo`` included), nor does a fresh joblib worker of a text estimator."""
    from torchvision import transforms

    return transforms


def interpolation_mode(name: str) -> Any:
    """torchvision's interpolation mode named ``name`` (``bicubic``, ``bilinear``, ``nearest``)."""
    return _transforms().InterpolationMode[name.upper()]



def _turns(k: int, flip: bool) -> Any:
    return lambda x: torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))


TTA_VIEWS: dict[str, list[Any]] = {
    "none": [lambda x: x],
    "flip": [lambda x: x, lambda x: x.flip(-1)],
    "dihedral": [_turns(k, flip) for flip in (False, True) for k in range(4)],
}
"""Test-time augmentation: predictions averaged over these views of each image. ``flip`` matches
the horizontal flips of every training preset; ``dihedral`` the eight symmetries of the square
that ``augment="dihedral"`` trains with."""


class RandomQuarterTurn(torch.nn.Module):
    """Rotate a tensor image by 0, 90, 180 or 270 degrees, each equally likely (exact, no interpolation)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.rot90(image, int(torch.randint(0, 4, ()).item()), dims=(-2, -1))


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image becomes the tensor the backbone expects (resize, center crop, normalise)."""

    input_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    tta: str = "none"  # test-time views averaged by predict/evaluate: see TTA_VIEWS

    modality = "image"

    def views(self) -> list[Any]:
        """Functions of a batch tensor whose predictions are averaged at test time (the identity alone without TTA)."""
        return TTA_VIEWS[self.tta]

    @property
    def resize_size(self) -> int:
        return int(round(self.input_size / self.crop_pct))

    def eval_transform(self) -> Any:
        T = _transforms()
        return T.Compose(
            [
                T.Resize(self.resize_size, interpolation=interpolation_mode(self.interpolation)),
                T.CenterCrop(self.input_size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def train_transform(self, augment: str = "light") -> Any:
        """Training-time transform; ``augment`` is one of :data:`AUGMENT_PRESETS`.

        ``light`` crops at least 75% of the image (fastai's usual ``min_scale=0.75``) and flips: a
        small object or defect stays in view, so the label stays true. ``strong`` crops down to 8%
        (torchvision's default) and jitters colour. ``dihedral`` is ``light`` plus vertical flips and
        quarter turns, for images whose orientation carries no meaning.
        """
        _check_augment(augment)
        if augment == "none":
            return self.eval_transform()
        T = _transforms()
        interpolation = interpolation_mode(self.interpolation)
        steps: list[Any] = [
            T.RandomResizedCrop(self.input_size, scale=(0.08 if augment == "strong" else 0.75, 1.0), interpolation=interpolation),
            T.RandomHorizontalFlip(),
        ]
        if augment == "strong":
            steps.append(T.ColorJitter(0.3, 0.3, 0.3))
        steps += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        if augment == "dihedral":
            steps += [T.RandomVerticalFlip(), RandomQuarterTurn()]
        return T.Compose(steps)

    def presized_train_transform(self, augment: str = "light") -> PresizedAugment:
        """:meth:`train_transform` for presized 8-bit pixels (the decoded-image cache), in torch ops.

        Same presets and random crop parameters; the crop is a slice of the cached array and the
        resize runs on 8-bit pixels (about 0.6 ms per image against 1.8 ms for PIL's, measured on
        one thread), so the loop can augment in the training process without loader workers
        competing with the step for a small machine's cores. Yields uint8 ``(3, size, size)``;
        :meth:`collate` stacks and normalises a batch at once.
        """
        _check_augment(augment)
        if augment == "none":
            raise ValueError("presized_train_transform is for augmenting presets; augment='none' is eval_transform")
        return PresizedAugment(self, augment)

    def collate(self, batch: list[tuple[Any, ...]]) -> tuple[torch.Tensor, ...]:
        """Stack uint8 images and normalise the whole batch in one pass (mean/std as for ``ToTensor`` + ``Normalize``);
        a third field (per-example loss weights) is stacked too."""
        images, labels, *weights = zip(*batch)
        pixels = torch.stack(images)
        # one pass converts to float and to the channels-last layout the backbone runs in (fast_layout)
        x = torch.empty(pixels.shape, dtype=torch.float32, memory_format=torch.channels_last).copy_(pixels)
        scale = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1) * 255
        x.sub_(torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1) * 255).div_(scale)
        return (x, torch.as_tensor(np.asarray(labels)), *(torch.as_tensor(np.asarray(w)) for w in weights))  # class indices, numbers or 0/1 rows (multilabel)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "image", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagePreprocessing:
        fields = {k: v for k, v in data.items() if k != "kind"}
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        return cls(**fields)


@dataclass(frozen=True)
class AugmentDraw:
    """The random parameters of one example's augmentation, drawn by :meth:`PresizedAugment.draw`.

    ``box``: the crop (top, left, height, width) in the cached pixels; ``jitter``: ColorJitter's
    order and brightness, contrast and saturation factors (``strong``); ``vflip``/``turns``: the
    vertical flip and quarter turns of ``dihedral``. Applied on the CPU by :class:`PresizedAugment`,
    or to a whole batch on the device by :mod:`headstart.data.device_augment`.
    """

    box: tuple[int, int, int, int]
    hflip: bool
    jitter: tuple[tuple[int, ...], float, float, float] | None = None
    vflip: bool = False
    turns: int = 0


@dataclass(frozen=True)
class PresizedAugment:
    """Random resized crop, flips (and colour jitter for ``strong``) of a presized ``(h, w, 3)`` uint8 array.

    The random draws come from torch's generator, as torchvision's transforms draw theirs, so
    ``seed`` and DataLoader worker seeding govern them; a class so that loader workers can pickle it.
    """

    preprocessing: ImagePreprocessing
    augment: str

    def draw(self, height: int, width: int) -> AugmentDraw:
        """One example's random parameters, in the order (and so with the values) torchvision's transforms draw them."""
        T = _transforms()
        shape = torch.empty(1, 1, 1).expand(3, height, width)  # the image's dimensions, for torchvision's sampler
        scale = (0.08 if self.augment == "strong" else 0.75, 1.0)
        box = tuple(int(v) for v in T.RandomResizedCrop.get_params(shape, scale, (3 / 4, 4 / 3)))
        hflip = bool(torch.rand(1) < 0.5)
        jitter = None
        if self.augment == "strong":
            order, b, c, s, _ = T.ColorJitter.get_params([0.7, 1.3], [0.7, 1.3], [0.7, 1.3], None)  # ColorJitter(0.3, 0.3, 0.3)'s ranges
            jitter = (tuple(int(i) for i in order), float(b), float(c), float(s))  # type: ignore[arg-type]
        vflip, turns = False, 0
        if self.augment == "dihedral":
            vflip = bool(torch.rand(1) < 0.5)
            turns = int(torch.randint(0, 4, ()).item())  # RandomQuarterTurn's draw
        return AugmentDraw(box, hflip, jitter, vflip, turns)  # type: ignore[arg-type]

    def crop(self, array: np.ndarray) -> tuple[np.ndarray, AugmentDraw]:
        """The crop box's pixels (a view of the cached array, ``(h, w, 3)``) and the draw they came from."""
        draw = self.draw(*array.shape[:2])
        top, left, height, width = draw.box
        return np.asarray(array)[top : top + height, left : left + width], draw

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        size = self.preprocessing.input_size
        pixels, draw = self.crop(array)
        x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # copies only the crop
        if x.shape[1:] != (size, size):
            mode = self.preprocessing.interpolation  # bicubic, bilinear or nearest: torch's names too
            x = torch.nn.functional.interpolate(x[None], size=(size, size), mode=mode, antialias=mode != "nearest")[0]
        if draw.hflip:
            x = x.flip(-1)
        if draw.jitter is not None:  # ColorJitter.forward with the drawn parameters
            order, *factors = draw.jitter
            adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
            for op in order:
                if op < 3:
                    x = adjust[op](x, factors[op])
        if self.augment == "dihedral":
            if draw.vflip:
                x = x.flip(-2)
            x = torch.rot90(x, draw.turns, dims=(-2, -1))
        return x


AUDIO_AUGMENT_PRESETS = ("none", "light", "strong")


def _check_augment(augment: str, presets: tuple[str, ...] = AUGMENT_PRESETS) -> None:
    if augment not in presets:
        raise ValueError(f"augment={augment!r} is not one of {presets}" + (" for audio" if presets == AUDIO_AUGMENT_PRESETS else ""))


def _rng() -> np.random.Generator:
    """A generator drawn from torch's RNG, so that ``seed`` and DataLoader worker seeding govern audio augmentation too."""
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))


def clip_waveform(item: Any, sample_rate: int, clip_seconds: float | None, augment: str = "none") -> np.ndarray:
    """A file (decoded and resampled) or an in-memory waveform, cut to ``clip_seconds`` and augmented."""
    waveform = load_audio(item, sample_rate) if isinstance(item, (str, Path)) else np.asarray(item, dtype=np.float32).reshape(-1)
    if clip_seconds is None:
        return waveform
    length = int(round(clip_seconds * sample_rate))
    return augment_waveform(waveform, length, augment, _rng()) if augment != "none" else fix_length(waveform, length)


@dataclass(frozen=True)
class SpectrogramPreprocessing:
    """How a clip becomes an image for an ImageNet CNN: fixed-length waveform, log-mel, resized, normalised.

    The route of Palanisamy et al. (2020), "Rethinking CNN models for audio classification": the
    mel spectrogram in decibels, scaled to [0, 1] from ``top_db`` below the clip's peak to the peak,
    low frequencies at the bottom, resized to the network's square input and copied to its three
    channels. Every setting is saved with the run, so ``predict`` rebuilds the same images.

    Parameters
    ----------
    image : ImagePreprocessing
        The network's input size, mean and std.
    sample_rate : int, default=16000
    clip_seconds : float, default=1.0
        Clips are cropped around their middle or zero-padded to this length.
    n_mels : int, default=64
    window_ms, hop_ms : float, default=25, 10
        Analysis window and hop (the FFT length is the next power of two of the window).
    fmin : float, default=20
    top_db : float, default=80
    """

    image: ImagePreprocessing = ImagePreprocessing()
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    n_mels: int = 64
    window_ms: float = 25.0
    hop_ms: float = 10.0
    fmin: float = 20.0
    top_db: float = 80.0

    modality = "audio"

    @property
    def input_size(self) -> int:
        return self.image.input_size

    def log_mel(self, waveform: np.ndarray) -> np.ndarray:
        """``(n_mels, frames)`` in [0, 1], highest frequency in the first row."""
        frame_length = int(round(self.window_ms * self.sample_rate / 1000))
        spec = log_mel(
            waveform, sample_rate=self.sample_rate, n_mels=self.n_mels, frame_length=frame_length,
            hop_length=int(round(self.hop_ms * self.sample_rate / 1000)), n_fft=1 << (frame_length - 1).bit_length(),
            fmin=self.fmin, top_db=self.top_db,
        )  # fmt: skip
        return spec[::-1]

    def to_image(self, spec: np.ndarray) -> torch.Tensor:
        """A ``(3, size, size)`` normalised tensor from a [0, 1] spectrogram."""
        tensor = torch.from_numpy(np.ascontiguousarray(spec))[None, None]
        size = self.image.input_size
        tensor = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0].expand(3, size, size)
        mean = torch.tensor(self.image.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.image.std, dtype=torch.float32).view(3, 1, 1)
        return (tensor - mean) / std

    def eval_transform(self) -> _SpectrogramTransform:
        return _SpectrogramTransform(self, "none")

    def train_transform(self, augment: str = "light") -> _SpectrogramTransform:
        """``light``: shift up to 10%, noise at 30-40 dB SNR half the time, one frequency and one time mask of
        up to 10%; ``strong``: 20%, 10-30 dB, two masks each of up to 15% (see :data:`headstart.data.audio.AUDIO_AUGMENT`)."""
        _check_augment(augment, AUDIO_AUGMENT_PRESETS)
        return _SpectrogramTransform(self, augment)

    def to_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        return {"kind": "spectrogram", **fields, "image": self.image.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpectrogramPreprocessing:
        fields = {k: v for k, v in data.items() if k != "kind"}
        return cls(**{**fields, "image": ImagePreprocessing.from_dict(fields["image"])})


@dataclass(frozen=True)
class _SpectrogramTransform:
    """Clip (path or waveform) -> image tensor, with ``augment`` applied (a class, so DataLoader workers can pickle it)."""

    preprocessing: SpectrogramPreprocessing
    augment: str

    def __call__(self, item: Any) -> torch.Tensor:
        prep = self.preprocessing
        spec = prep.log_mel(clip_waveform(item, prep.sample_rate, prep.clip_seconds, self.augment))
        if self.augment != "none":
            spec = mask_spectrogram(spec, self.augment, _rng())
        return prep.to_image(spec)


class TextPreprocessing:
    """Tokenisation for a Hugging Face text encoder; the tokenizer files are saved with the run.

    ``long_text="chunk"``: a text longer than ``max_length`` tokens is split into overlapping windows
    of ``max_length`` tokens (``stride`` shared between neighbours; a quarter of the window by default);
    the batch then holds every window and ``window_of`` (the text each window belongs to), and the
    backbone mean-pools the windows' embeddings per text. A text that fits is one window, as when truncating.
    """

    modality = "text"

    def __init__(self, tokenizer: Any, max_length: int = 256, long_text: str = "truncate", stride: int | None = None) -> None:
        if long_text not in LONG_TEXT_MODES:
            raise ValueError(f"long_text={long_text!r}; choose one of {list(LONG_TEXT_MODES)}")
        if long_text == "chunk" and not getattr(tokenizer, "is_fast", False):
            raise ValueError("--long-text chunk needs a fast (Rust) tokenizer, which this backbone does not have; use --long-text truncate")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.long_text = long_text
        self.stride = (max_length // 4 if stride is None else stride) if long_text == "chunk" else None

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.long_text == "chunk":
            batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, stride=self.stride,
                                   return_overflowing_tokens=True, return_tensors="pt")  # fmt: skip
            windows = dict(batch)
            windows["window_of"] = windows.pop("overflow_to_sample_mapping")
            return windows
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return dict(batch)

    def length_report(self, texts: Sequence[str]) -> dict[str, Any]:
        """How many ``texts`` are longer than the window and how many of their tokens it drops (none when chunking)."""
        lengths = np.array([len(ids) for ids in self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]], dtype=np.int64)
        over = np.maximum(lengths - self.max_length, 0)
        return {"max_length": self.max_length, "long_text": self.long_text, "examples": int(len(lengths)), "longer": int((over > 0).sum()),
                "tokens": int(lengths.sum()), "tokens_lost": int(over.sum()) if self.long_text == "truncate" else 0,
                "longest": int(lengths.max()) if len(lengths) else 0}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        chunked = {"long_text": self.long_text, "stride": self.stride} if self.long_text == "chunk" else {}  # truncation keeps its old record (and cache key)
        return {"kind": "text", "max_length": self.max_length, **chunked}

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: Path, data: dict[str, Any]) -> TextPreprocessing:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(directory)), max_length=int(data["max_length"]), long_text=data.get("long_text", "truncate"),
                   stride=data.get("stride"))  # fmt: skip


class AudioPreprocessing:
    """Waveforms (1-D float arrays at the extractor's sampling rate) to a Hugging Face audio encoder's inputs.

    Files are decoded and resampled to the extractor's rate by :meth:`waveform_transform`, cut to
    ``clip_seconds`` (set from the training data by ``fit`` and saved with the run). Augmentation is
    on the waveform only (shift, noise): wav2vec2-style encoders mask their own features in training
    (``mask_time_prob`` in their config), the SpecAugment of those models.
    """

    modality = "audio"

    def __init__(self, feature_extractor: Any, clip_seconds: float | None = None) -> None:
        self.feature_extractor = feature_extractor
        self.clip_seconds = clip_seconds

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def sample_rate(self) -> int:
        return self.sampling_rate

    def waveform_transform(self, augment: str = "none") -> _WaveformTransform:
        _check_augment(augment, AUDIO_AUGMENT_PRESETS)
        return _WaveformTransform(self.sampling_rate, self.clip_seconds, augment)

    def __call__(self, waveforms: list[Any]) -> dict[str, torch.Tensor]:
        batch = self.feature_extractor(
            [np.asarray(w, dtype=np.float32) for w in waveforms],
            sampling_rate=self.sampling_rate,
            padding=True,
            return_tensors="pt",
        )
        return dict(batch)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "audio", "sampling_rate": self.sampling_rate, "clip_seconds": self.clip_seconds}

    def save(self, directory: Path) -> None:
        self.feature_extractor.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: Path, data: dict[str, Any]) -> AudioPreprocessing:
        from transformers import AutoFeatureExtractor

        return cls(AutoFeatureExtractor.from_pretrained(str(directory)), clip_seconds=data.get("clip_seconds"))


@dataclass(frozen=True)
class _WaveformTransform:
    sample_rate: int
    clip_seconds: float | None
    augment: str

    def __call__(self, item: Any) -> np.ndarray:
        return clip_waveform(item, self.sample_rate, self.clip_seconds, self.augment)


Preprocessing = ImagePreprocessing | SpectrogramPreprocessing | TextPreprocessing | AudioPreprocessing


def load_preprocessing(data: dict[str, Any], assets: Path) -> Preprocessing:
    """Inverse of ``to_dict`` (+ ``save`` for tokenizers and feature extractors)."""
    if data["kind"] == "text":
        return TextPreprocessing.load(assets, data)
    if data["kind"] == "audio":
        return AudioPreprocessing.load(assets, data)
    if data["kind"] == "spectrogram":
        return SpectrogramPreprocessing.from_dict(data)
    return ImagePreprocessing.from_dict(data)


def text_length_note(counts: dict[str, Any]) -> str | None:
    """The log line for :meth:`TextPreprocessing.length_report`'s counts: a warning when truncation drops tokens, a note when chunks read them."""
    if not counts["longer"]:
        return None
    share = counts["longer"] / max(counts["examples"], 1)
    if counts["long_text"] == "chunk":
        return (f"text: {counts['longer']} of {counts['examples']} examples ({share:.0%}) are longer than the {counts['max_length']}-token window "
                f"(longest {counts['longest']}); each is read in overlapping windows whose embeddings are averaged (--long-text chunk)")  # fmt: skip
    return (f"warning: {counts['longer']} of {counts['examples']} texts ({share:.0%}) are longer than the {counts['max_length']}-token window "
            f"(longest {counts['longest']}): {counts['tokens_lost']} of {counts['tokens']} tokens ({counts['tokens_lost'] / max(counts['tokens'], 1):.0%}) "
            "are cut off; --max-length widens the window (up to the encoder's limit), --long-text chunk reads every token")  # fmt: skip
