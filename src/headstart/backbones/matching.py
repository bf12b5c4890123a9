"""Readying a backbone for a dataset: its modality, input size and test-time views."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from headstart.backbones.base import Backbone
from headstart.backbones.timm import TimmBackbone
from headstart.data.audio import audio_defaults
from headstart.data.preprocessing import AudioPreprocessing, ImagePreprocessing, SpectrogramPreprocessing, TextPreprocessing

if TYPE_CHECKING:  # only the type: headstart.data itself does not depend on backbones
    from headstart.data import Dataset


def match_data(backbone: Backbone, dataset: Dataset, *, image_size: int | None = None, tta: str | None = None, max_length: int | None = None,
               long_text: str | None = None) -> Backbone:  # fmt: skip
    """Ready ``backbone`` (in place) for ``dataset``'s modality, or raise naming the mismatch.

    An image CNN given audio gets :class:`~headstart.data.preprocessing.SpectrogramPreprocessing` (the
    ImageNet-CNN-on-log-mel route); an audio backbone without a clip length gets one. Sample rate
    and clip length come from the training clips' headers (:func:`headstart.data.audio.audio_defaults`).
    ``image_size`` replaces the input size of an image or spectrogram backbone; ``tta`` sets an
    image backbone's test-time views (:data:`headstart.data.preprocessing.TTA_VIEWS`); ``max_length`` and
    ``long_text`` set a text encoder's token window and what becomes of longer texts.
    """
    prep = backbone.preprocessing
    clips = [p for p in dataset.items("train") if isinstance(p, Path)] if dataset.modality == "audio" else []
    if dataset.modality == "audio" and isinstance(prep, ImagePreprocessing) and isinstance(backbone, TimmBackbone):
        sample_rate, clip_seconds = audio_defaults(clips)
        prep = backbone.preprocessing = SpectrogramPreprocessing(image=prep, sample_rate=sample_rate, clip_seconds=clip_seconds)
    elif isinstance(prep, AudioPreprocessing) and dataset.modality == "audio" and prep.clip_seconds is None:
        prep.clip_seconds = audio_defaults(clips, sample_rate=prep.sampling_rate)[1]
    if prep.modality != dataset.modality:
        article = "an" if prep.modality[0] in "aeiou" else "a"
        raise ValueError(f"{backbone.spec.name!r} is {article} {prep.modality} backbone but {dataset.source} holds {dataset.modality} data; see `headstart list`")
    if image_size is not None:
        if isinstance(prep, ImagePreprocessing):
            backbone.preprocessing = replace(prep, input_size=int(image_size))
        elif isinstance(prep, SpectrogramPreprocessing):
            backbone.preprocessing = replace(prep, image=replace(prep.image, input_size=int(image_size)))
        else:
            raise ValueError("--image-size applies to image backbones (and image backbones reading spectrograms) only")
        if isinstance(backbone, TimmBackbone):
            backbone._feature_dim = None
    if tta not in (None, "none"):
        from headstart.data.preprocessing import TTA_VIEWS

        if not isinstance(backbone.preprocessing, ImagePreprocessing):
            raise ValueError(f"--tta applies to image data; {dataset.source} holds {dataset.modality} data")
        if tta not in TTA_VIEWS:
            raise ValueError(f"tta={tta!r} is not one of {list(TTA_VIEWS)}")
        backbone.preprocessing = replace(backbone.preprocessing, tta=tta)
    if max_length is not None or long_text not in (None, "truncate"):
        if not isinstance(prep, TextPreprocessing):
            raise ValueError(f"--max-length/--long-text apply to text data; {dataset.source} holds {dataset.modality} data")
        limit = getattr(getattr(getattr(backbone, "model", None), "config", None), "max_position_embeddings", None)  # the encoder's position limit
        if max_length is not None and limit is not None and max_length > limit:
            raise ValueError(f"--max-length {max_length}: {backbone.spec.name} reads at most {limit} tokens; use --long-text chunk for longer texts")
        backbone.preprocessing = TextPreprocessing(prep.tokenizer, max_length=max_length or prep.max_length, long_text=long_text or "truncate")
    return backbone
