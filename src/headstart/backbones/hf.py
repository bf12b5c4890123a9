"""Hugging Face encoders as backbones: text, ViT-style image and wav2vec2/AST-style audio encoders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import OFFLINE_HINT, Backbone, BackboneSpec
from headstart.blocks import Block, BlockList
from headstart.data.preprocessing import AudioPreprocessing, ImagePreprocessing, Preprocessing, TextPreprocessing
from headstart.errors import Unavailable

_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for path in _LAYER_PATHS:
        layers = _get_path(model, path)
        if isinstance(layers, nn.ModuleList):
            return path, layers
    raise ValueError(
        f"Cannot find the transformer layers of {type(model).__name__} (looked for {', '.join(_LAYER_PATHS)}); "
        "headstart supports BERT/RoBERTa/DistilBERT/MPNet/ViT-style encoders"
    )


def _with_layers(model: nn.Module, layer_path: str, keep: int) -> nn.Module:
    """A shallow copy of ``model`` whose layer list holds only the first ``keep`` layers (weights shared)."""
    parent_path, _, attr = layer_path.rpartition(".")
    clone = copy.copy(model)
    clone._modules = dict(model._modules)
    clone.config = copy.deepcopy(model.config)
    parent = clone
    if parent_path:
        original_parent = _get_path(model, parent_path)
        parent = copy.copy(original_parent)
        parent._modules = dict(original_parent._modules)
        clone._modules[parent_path.split(".")[0]] = parent  # single-level parents (encoder/transformer)
    parent._modules[attr] = nn.ModuleList(list(getattr(parent if parent_path else model, attr))[:keep])
    for key in ("num_hidden_layers", "n_layers"):
        if hasattr(clone.config, key):
            setattr(clone.config, key, keep)
    return clone


def _average_windows(pooled: torch.Tensor, window_of: torch.Tensor) -> torch.Tensor:
    """Mean of the window embeddings ``(windows, dim)`` of each text; ``window_of[w]`` is window ``w``'s text (0..n-1)."""
    index = window_of.to(pooled.device).long()
    texts = int(index.max()) + 1 if index.numel() else 0
    sums = torch.zeros(texts, pooled.shape[1], dtype=pooled.dtype, device=pooled.device).index_add_(0, index, pooled)
    counts = torch.bincount(index, minlength=texts).clamp(min=1).to(pooled.dtype)
    return sums / counts.unsqueeze(1)


class _Parameters(nn.Module):
    """A view holding parameters that belong to no layer, so that a block can freeze them (never registered in the model)."""

    def __init__(self, parameters: dict[str, nn.Parameter]) -> None:
        super().__init__()
        for name, parameter in parameters.items():
            self.register_parameter(name.replace(".", "_"), parameter)


AUDIO_MODEL_TYPES = frozenset(
    {"wav2vec2", "wav2vec2-conformer", "wav2vec2-bert", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d", "audio-spectrogram-transformer"}
)


class HFBackbone(Backbone):
    """A Hugging Face encoder: its input stage(s), then ``layer0..layerN-1``; mean- or CLS-pooled.

    The input stage is ``embeddings`` for text and ViT/AST-style encoders; for wav2vec2-style
    speech encoders it is ``feature_encoder`` (the convolutional front end), ``projection`` and
    ``position`` (the convolutional position embedding and its norm).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: BackboneSpec,
        preprocessing: Preprocessing,
        *,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        self.spec = spec
        self.preprocessing = preprocessing
        self.pooling = pooling
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # unused by mean/CLS pooling of the last hidden state; keep it out of blocks
        self._layer_path, _ = _find_layers(model)
        self.model = model

    @property
    def blocks(self) -> BlockList:
        _, layers = _find_layers(self.model)
        named = self._input_blocks() + [(f"layer{i}", layer) for i, layer in enumerate(layers)]
        final_norm = getattr(self.model, "layernorm", None)  # ViT-style encoders normalise after the last layer
        if isinstance(final_norm, nn.Module) and not isinstance(final_norm, nn.Identity):
            named.append(("norm", final_norm))
        inside = {id(p) for _, module in named for p in module.parameters()}
        shared = {name: p for name, p in self.model.named_parameters() if id(p) not in inside}
        if shared:  # MPNet's relative position bias, wav2vec2's mask embedding: inputs to every layer, frozen with the input stage
            named[0] = (named[0][0], nn.ModuleList([named[0][1], _Parameters(shared)]))
        return BlockList([Block(i, n, m) for i, (n, m) in enumerate(named)])

    def _input_blocks(self) -> list[tuple[str, nn.Module]]:
        model = self.model
        if getattr(model, "embeddings", None) is not None:
            return [("embeddings", model.embeddings)]
        if getattr(model, "feature_extractor", None) is not None:  # wav2vec2 family
            position = [m for m in (getattr(model.encoder, "pos_conv_embed", None), getattr(model.encoder, "layer_norm", None)) if m is not None]
            return [("feature_encoder", model.feature_extractor), ("projection", model.feature_projection), ("position", nn.ModuleList(position))]
        raise ValueError(f"Cannot find the input stage of {type(model).__name__}; headstart supports BERT/ViT/AST/wav2vec2-style encoders")

    @property
    def feature_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def block_widths(self) -> dict[str, int]:
        return {block.name: self.feature_dim for block in self.blocks}  # a cut anywhere pools hidden states

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.spec.modality == "image":
            batch = {"pixel_values": batch["pixel_values"] if isinstance(batch, dict) else batch}
        if "window_of" in batch:  # long texts read in windows (TextPreprocessing, long_text="chunk")
            windows = {k: v for k, v in batch.items() if k != "window_of"}
            return _average_windows(self._pool(self.model(**windows).last_hidden_state, windows), batch["window_of"])
        return self._pool(self.model(**batch).last_hidden_state, batch)

    def _pool(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pool token (or frame) states ``(batch, length, dim)`` to ``(batch, dim)``: mask-weighted mean or CLS."""
        if self.spec.modality == "audio":
            mask = batch.get("attention_mask")
            if mask is not None and hasattr(self.model, "_get_feature_vector_attention_mask"):
                frames = self.model._get_feature_vector_attention_mask(hidden.shape[1], mask).unsqueeze(-1).to(hidden.dtype)
                return (hidden * frames).sum(dim=1) / frames.sum(dim=1).clamp(min=1.0)
            return hidden.mean(dim=1)
        if self.spec.modality == "image":
            return hidden[:, 0] if self.pooling == "cls" else hidden[:, 1:].mean(dim=1)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def _layers_kept(self, at: int | str) -> int:
        """How many transformer layers a cut after block ``at`` keeps (the input stage keeps none)."""
        n_input = len(self._input_blocks())
        return min(max(self.blocks.index_of(at) - n_input + 1, 0), len(_find_layers(self.model)[1]))

    def forward_blocks(self, x: Any, names: list[str]) -> dict[str, torch.Tensor]:
        if self.spec.modality == "audio":  # the speech front end's stages are not hidden states: one cut each
            return super().forward_blocks(x, names)
        batch = {"pixel_values": x["pixel_values"] if isinstance(x, dict) else x} if self.spec.modality == "image" else x
        window_of = batch.get("window_of") if isinstance(batch, dict) else None
        if window_of is not None:
            batch = {k: v for k, v in batch.items() if k != "window_of"}
        result = self.model(**batch, output_hidden_states=True)
        depth = len(_find_layers(self.model)[1])
        out = {}
        for name in names:
            kept = self._layers_kept(name)  # hidden_states[k] is the output of k layers, before any final norm
            pooled = self._pool(result.last_hidden_state if kept == depth else result.hidden_states[kept], batch)
            out[name] = pooled if window_of is None else _average_windows(pooled, window_of)
        return out

    def cut(self, at: int | str) -> HFBackbone:
        stop = self._layers_kept(at)  # "norm" keeps all layers
        clone = HFBackbone.__new__(HFBackbone)
        nn.Module.__init__(clone)
        clone.spec, clone.preprocessing, clone.pooling, clone._layer_path = self.spec, self.preprocessing, self.pooling, self._layer_path
        clone.model = _with_layers(self.model, self._layer_path, stop)
        if stop < len(_find_layers(self.model)[1]) and isinstance(getattr(clone.model, "layernorm", None), nn.Module):
            clone.model._modules["layernorm"] = nn.Identity()  # the final norm belongs to the last layer's output
        return clone

    def architecture_config(self) -> dict[str, Any]:
        return {
            "family": "hf",
            "modality": self.spec.modality,
            "architecture": self.spec.architecture,
            "name": self.spec.name,
            "description": self.spec.description,
            "pooling": self.pooling,
            "cut": self.blocks[-1].name,
            "final_norm": not isinstance(getattr(self.model, "layernorm", nn.Identity()), nn.Identity),
        }

    def save_assets(self, directory: Path) -> None:
        self.model.config.save_pretrained(str(directory))
        if isinstance(self.preprocessing, (TextPreprocessing, AudioPreprocessing)):
            self.preprocessing.save(directory)


def _hf_backbone(id_or_dir: str, *, pretrained: bool, name: str, pooling: str | None = None) -> HFBackbone:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # headstart shows its own progress; a bar per weight load is noise

    try:
        config = AutoConfig.from_pretrained(id_or_dir)
    except OSError as error:
        if Path(id_or_dir).exists():
            raise ValueError(f"{id_or_dir}: not a Hugging Face model folder (no readable config.json)") from None
        raise Unavailable(f"Cannot load hf:{id_or_dir} ({str(error).splitlines()[0]}); {OFFLINE_HINT}") from None
    model = _pretrained_model(id_or_dir) if pretrained else AutoModel.from_config(config)
    modality = "audio" if config.model_type in AUDIO_MODEL_TYPES else "image" if hasattr(config, "image_size") else "text"
    preprocessing: Preprocessing
    if modality == "audio":
        from transformers import AutoFeatureExtractor

        preprocessing = AudioPreprocessing(AutoFeatureExtractor.from_pretrained(id_or_dir))
    elif modality == "text":
        from transformers import AutoTokenizer

        preprocessing = TextPreprocessing(AutoTokenizer.from_pretrained(id_or_dir), max_length=min(256, getattr(config, "max_position_embeddings", 512)))
    else:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(id_or_dir)
        size = processor.size.get("height") or processor.size.get("shortest_edge") or config.image_size
        preprocessing = ImagePreprocessing(int(size), tuple(processor.image_mean), tuple(processor.image_std), "bilinear", 1.0)
    spec = BackboneSpec(name, modality, "hf", config.model_type, f"Hugging Face {config.model_type} from {id_or_dir}")
    return HFBackbone(model, spec, preprocessing, pooling=pooling or ("cls" if modality == "image" else "mean"))


def _pretrained_model(id_or_dir: str) -> nn.Module:
    """``AutoModel.from_pretrained``, with a weights file that is pickled code (refused by ``weights_only``) or damaged as a one-line error."""
    import pickle
    import warnings

    from safetensors import SafetensorError
    from transformers import AutoModel

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return AutoModel.from_pretrained(id_or_dir)
    except (pickle.UnpicklingError, SafetensorError) as error:
        folder = Path(id_or_dir)
        files = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".safetensors", ".pt", ".pth")) if folder.is_dir() else []
        where = f"{folder / files[0]}" if len(files) == 1 else f"{id_or_dir} ({', '.join(files) or 'weights'})"
        reason = "refused by torch.load(weights_only=True)" if isinstance(error, pickle.UnpicklingError) else str(error).strip().splitlines()[0]
        raise ValueError(
            f"{where}: not a plain weights file ({reason}); headstart only loads tensors, never pickled code: "
            "save the model as safetensors (model.save_pretrained(FOLDER)) or load it from a source you trust"
        ) from None


def _hf_from_config(config: dict[str, Any], assets: Path, prep: Preprocessing) -> HFBackbone:
    """The Hugging Face half of :func:`~headstart.backbones.runs.backbone_from_config` (random weights, HF config from ``assets``)."""
    from transformers import AutoConfig, AutoModel

    model = AutoModel.from_config(AutoConfig.from_pretrained(str(assets)))
    if not config.get("final_norm", True) and isinstance(getattr(model, "layernorm", None), nn.Module):
        model.layernorm = nn.Identity()
    spec = BackboneSpec(config["name"], config["modality"], "hf", config["architecture"], config.get("description", ""))
    return HFBackbone(model, spec, prep, pooling=config["pooling"])
