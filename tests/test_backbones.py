"""Embedded backbones load real weights, map them correctly and expose one block addressing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from headstart.backbones import create_backbone, list_backbones, map_efficientnet_lite_weights

IMAGENET_PALACE, IMAGENET_DAISY = 698, 985


def _imagenet_top5(variant: int, name: str) -> list[int]:
    import timm

    from headstart.backbones.embedded import _lite_weights_file
    from headstart.backbones.weights import load_state_dict

    model = timm.create_model(f"tf_efficientnet_lite{variant}")
    model.load_state_dict(map_efficientnet_lite_weights(load_state_dict(_lite_weights_file(variant)), model), strict=True)
    backbone = create_backbone(f"efficientnet_lite{variant}")
    x = backbone.preprocessing.eval_transform()(Image.fromarray(load_sample_image(name)))[None]
    with torch.inference_mode():
        return model.eval()(x).topk(5).indices[0].tolist()


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_weights_predict_imagenet_classes(variant):
    # china.jpg shows a Chinese temple: ImageNet's "palace" is the sensible top-1 for all three.
    assert _imagenet_top5(variant, "china.jpg")[0] == IMAGENET_PALACE


def test_lite0_flower_is_a_daisy():
    assert _imagenet_top5(0, "flower.jpg")[0] == IMAGENET_DAISY


def test_lite0_blocks_and_cut(lite0):
    assert lite0.blocks.names() == ["stem"] + [f"stage{i}" for i in range(7)] + ["head"]
    assert lite0.feature_dim == 1280
    assert lite0.preprocessing.input_size == 224 and lite0.preprocessing.mean == (0.5, 0.5, 0.5)
    cut = lite0.cut("stage4")
    assert cut.blocks.names()[-1] == "stage4" and cut.feature_dim == 112
    assert lite0.cut(-1).feature_dim == 1280
    with torch.inference_mode():
        assert cut.eval()(torch.zeros(2, 3, 224, 224)).shape == (2, 112)
    # the cut shares weights with the original
    assert cut.blocks["stem"].module is lite0.blocks["stem"].module


def test_tf_same_padding_is_worked_out_once_with_equal_outputs():
    import copy

    from timm.layers import Conv2dSame

    from headstart.backbones.base import Backbone
    from headstart.backbones.timm import StaticSameConv2d

    dynamic = create_backbone("efficientnet_lite0").eval()
    Backbone.fast_layout(dynamic)  # channels-last only: timm's padding, computed at every call
    static = copy.deepcopy(dynamic).fast_layout()
    assert sum(isinstance(m, Conv2dSame) for m in dynamic.modules()) == 5
    assert sum(isinstance(m, StaticSameConv2d) for m in static.modules()) == 5 and not any(type(m) is Conv2dSame for m in static.modules())
    assert list(static.state_dict()) == list(dynamic.state_dict())
    assert static.stages["stem"][0] is static._source[0].conv_stem  # replaced wherever the model holds it
    torch.manual_seed(0)
    for size in (224, 225):  # 224: asymmetric padding; 225: symmetric, handed to the convolution
        x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            assert torch.equal(static(x), dynamic(x))


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    from headstart.backbones.embedded import _minilm_dir

    texts = ["The cat sat on the mat.", "Transfer learning reuses features."]
    reference = SentenceTransformer(str(_minilm_dir()), device="cpu").encode(texts, convert_to_tensor=True)
    with torch.inference_mode():
        ours = torch.nn.functional.normalize(minilm.eval()(minilm.preprocessing(texts)), dim=-1)
    assert torch.allclose(ours, reference, atol=1e-4)
    assert minilm.blocks.names() == ["embeddings"] + [f"layer{i}" for i in range(6)]
    assert minilm.cut("layer2").blocks.names()[-1] == "layer2"
    assert len(minilm.blocks) == 7  # cutting made a copy; the original keeps its six layers


def test_list_backbones_offline():
    names = {s.name for s in list_backbones()}
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "minilm"} <= names


def test_unknown_backbone_suggests_names():
    with pytest.raises(ValueError, match="did you mean.*efficientnet_lite0"):
        create_backbone("efficientnet_lite")


def test_timm_hub_offline_fails_fast_with_hint():
    with pytest.raises(OSError, match="--weights FILE"):
        create_backbone("timm:resnet18")


def test_hf_hub_offline_fails_fast_with_hint():
    with pytest.raises(OSError, match="local folder"):
        create_backbone("hf:some-user/not-a-local-model")


def test_timm_model_from_local_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    backbone = create_backbone("timm:resnet18", weights=tmp_path / "r18.safetensors")
    assert backbone.blocks.names() == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert torch.equal(backbone.blocks["stem"].module[0].weight, source.conv1.weight)
    assert backbone.feature_dim == 512


def test_hf_local_folder_text_and_vit(tmp_path, minilm):
    """hf: accepts a local folder; a small randomly initialised ViT proves the image path."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path / "tiny-vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    vit = create_backbone(f"hf:{folder}")
    assert vit.spec.modality == "image" and vit.blocks.names() == ["embeddings", "layer0", "layer1", "norm"]
    with torch.inference_mode():
        assert vit.eval()({"pixel_values": torch.zeros(1, 3, 32, 32)}).shape == (1, 32)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "convnext_atto", "vit_tiny_patch16_224", "mobilevit_xxs"])
def test_blocks_reproduce_timm_pooled_features(arch):
    """Splitting into blocks must not change the features: ours == timm's forward_head(pre_logits=True)."""
    import timm

    from headstart.backbones import BackboneSpec, TimmBackbone
    from headstart.backbones.timm import _timm_preprocessing

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    backbone = TimmBackbone(model, BackboneSpec(arch, "image", "timm", arch), _timm_preprocessing(model)).eval()
    size = 224 if "vit_" in arch else 96
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(backbone(x), expected, atol=1e-5)


def test_scratch_ignores_pretrained_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    scratch = create_backbone("timm:resnet18", weights=tmp_path / "r18.safetensors", pretrained=False)
    assert not torch.equal(scratch.blocks["stem"].module[0].weight, source.conv1.weight)


def test_hf_vit_run_reloads(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from headstart.model import TransferModel

    folder = tmp_path / "tiny-vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    model = TransferModel.from_backbone(f"hf:{folder}", ["a", "b"]).eval()
    assert model.blocks.names() == ["embeddings", "layer0", "layer1", "norm", "classifier"]
    model.save_pretrained(tmp_path / "run")
    again = TransferModel.from_pretrained(tmp_path / "run")
    x = {"pixel_values": torch.randn(2, 3, 32, 32)}
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))


@pytest.mark.parametrize("family", ["wav2vec2", "ast"])
def test_hf_audio_encoder_from_local_folder(tmp_path, family):
    """No audio weights are available offline: a small random model saved locally proves the hf: audio path."""
    import numpy as np
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from headstart.freezing import freeze
    from headstart.model import TransferModel

    folder = tmp_path / family
    if family == "wav2vec2":
        config = Wav2Vec2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
            conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        )
        Wav2Vec2Model(config).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(folder)
        expected = ["feature_encoder", "projection", "position", "layer0", "layer1"]
    else:
        ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=128, num_mel_bins=32)).save_pretrained(folder)
        ASTFeatureExtractor(num_mel_bins=32, max_length=128).save_pretrained(folder)
        expected = ["embeddings", "layer0", "layer1", "norm"]
    model = TransferModel.from_backbone(f"hf:{folder}", ["yes", "no"]).eval()
    assert model.modality == "audio" and model.backbone.blocks.names() == expected
    rng = np.random.default_rng(0)
    batch = model.preprocessing([rng.standard_normal(16000).astype("float32"), rng.standard_normal(9000).astype("float32")])
    with torch.inference_mode():
        logits = model(batch)
    assert logits.shape == (2, 2)
    report = freeze(model, model.blocks[:-2])
    assert report.frozen_blocks == expected[:-1]
    model.save_pretrained(tmp_path / "run")
    again = TransferModel.from_pretrained(tmp_path / "run")
    with torch.inference_mode():
        assert torch.allclose(again(batch), logits, atol=1e-6)
    cut = TransferModel(model.backbone.cut("layer0"), model.head, model.classes)
    assert cut.backbone.blocks.names()[-1] == "layer0"
    cut.save_pretrained(tmp_path / "cut")
    with torch.inference_mode():
        assert torch.allclose(TransferModel.from_pretrained(tmp_path / "cut")(batch), cut.eval()(batch), atol=1e-6)
