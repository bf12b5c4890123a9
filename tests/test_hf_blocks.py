"""Hugging Face encoders as blocks (issue 23): BERT, RoBERTa, DistilBERT, MPNet, ViT and wav2vec2 from tiny configs."""

from __future__ import annotations

import pytest
import torch

from headstart.backbones import BackboneSpec
from headstart.backbones.hf import HFBackbone
from headstart.freezing import freeze

SMALL = {"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32}


def encoder(kind: str) -> tuple[HFBackbone, dict[str, torch.Tensor]]:
    import transformers as tf

    text = {"vocab_size": 64, "max_position_embeddings": 40}
    configs = {
        "bert": lambda: tf.BertConfig(**SMALL, **text),
        "roberta": lambda: tf.RobertaConfig(**SMALL, **text),
        "distilbert": lambda: tf.DistilBertConfig(vocab_size=64, dim=16, n_layers=3, n_heads=2, hidden_dim=32, max_position_embeddings=40),
        "mpnet": lambda: tf.MPNetConfig(**SMALL, **text),
        "vit": lambda: tf.ViTConfig(**SMALL, image_size=32, patch_size=8),
        "wav2vec2": lambda: tf.Wav2Vec2Config(**SMALL, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                              num_conv_pos_embedding_groups=2),
    }  # fmt: skip
    torch.manual_seed(0)
    model = tf.AutoModel.from_config(configs[kind]())
    modality = {"vit": "image", "wav2vec2": "audio"}.get(kind, "text")
    backbone = HFBackbone(model, BackboneSpec(f"hf:tiny-{kind}", modality, "hf", kind), None, pooling="cls" if kind == "vit" else "mean").eval()  # type: ignore[arg-type]
    if modality == "image":
        return backbone, {"pixel_values": torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)}
    if modality == "audio":
        return backbone, {"input_values": torch.sin(torch.arange(2 * 1600.0).reshape(2, 1600) / 7)}
    ids = torch.tensor([[2, 5, 9, 11, 3, 1], [2, 7, 8, 3, 1, 1]])
    return backbone, {"input_ids": ids, "attention_mask": (ids != 1).long()}


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "mpnet", "vit", "wav2vec2"])
def test_hf_encoder_blocks_are_exact_freezable_and_cuttable(kind):
    backbone, batch = encoder(kind)
    blocks = backbone.blocks
    assert len(blocks) >= 3 and backbone.splittable
    in_blocks = {id(p) for b in blocks for p in b.module.parameters()}
    assert all(id(p) in in_blocks for p in backbone.parameters())  # shared tensors (MPNet's relative bias) freeze with the input stage
    names = blocks.names()
    with torch.no_grad():
        full = backbone(batch)
        per_block = backbone.forward_blocks(batch, names)  # the model's own hidden states, pooled
        assert torch.allclose(per_block[names[-1]], full, atol=1e-5)
        middle = names[len(names) // 2]
        cut = backbone.cut(middle).eval()  # the layers up to ``middle`` run on their own
        features = cut(batch)
        assert features.shape == (2, backbone.model.config.hidden_size) == (2, cut.feature_dim)
        assert torch.allclose(features, per_block[middle], atol=1e-5)
    freeze(backbone, blocks[:-2])
    top = {id(p) for b in blocks[-2:] for p in b.module.parameters()}
    assert {id(p) for p in backbone.parameters() if p.requires_grad} == top
