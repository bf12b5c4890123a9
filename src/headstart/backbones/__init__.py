"""Pretrained backbones as an ordered list of named blocks.

A backbone is a pretrained network body that maps a batch of inputs to pooled features
``(batch, feature_dim)``. Whatever its origin, it is seen the same way: a sequence of named blocks
from input to output (``stem``, ``stage0`` ... ``head`` for CNNs; ``embeddings``, ``layer0`` ... for
transformers). Freezing, cutting and profiling all address these names, so
``freeze(model, model.blocks[:-3])`` means the same thing on an EfficientNet and on a BERT.

One entry point, :func:`create_backbone`, over a registry (the timm habit). The names it accepts:

* an embedded default (``efficientnet_lite0/1/2``, ``minilm``): weights shipped by a pip package,
  no network needed (:mod:`~headstart.backbones.embedded`);
* ``timm:ARCH`` - any timm model, weights from ``weights=FILE`` or the Hugging Face hub
  (:mod:`~headstart.backbones.timm`);
* ``hf:ID_OR_DIR`` - a Hugging Face text, image or audio encoder, from a local folder or the hub
  (:mod:`~headstart.backbones.hf`);
* a headstart run directory - the (fine-tuned) backbone of an earlier run (:mod:`~headstart.backbones.runs`).

:func:`match_data` readies a backbone for a dataset: an image CNN given audio reads log-mel
spectrograms (:class:`~headstart.data.preprocessing.SpectrogramPreprocessing`). LoRA adapters are
layers added to a backbone (:func:`add_lora`).
"""

from headstart.backbones.base import OFFLINE_HINT, Backbone, BackboneSpec, source_probabilities
from headstart.backbones.embedded import map_efficientnet_lite_weights  # importing it registers the embedded backbones
from headstart.backbones.hf import HFBackbone
from headstart.backbones.lora import add_lora
from headstart.backbones.matching import match_data
from headstart.backbones.registry import create_backbone, list_backbones, register_backbone
from headstart.backbones.runs import backbone_from_config
from headstart.backbones.timm import TimmBackbone

__all__ = [
    "OFFLINE_HINT",
    "Backbone",
    "BackboneSpec",
    "HFBackbone",
    "TimmBackbone",
    "add_lora",
    "backbone_from_config",
    "create_backbone",
    "list_backbones",
    "map_efficientnet_lite_weights",
    "match_data",
    "register_backbone",
    "source_probabilities",
]
