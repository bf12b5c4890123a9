"""Checks on the real shared datasets (skipped with a reason when ../shared is absent)."""

from __future__ import annotations

import torch
from conftest import shared_dataset

from headstart.data import load_dataset, load_image


def test_hymenoptera_layout_and_bad_file():
    data = load_dataset(shared_dataset("hymenoptera"))
    assert data.classes == ["ants", "bees"]
    assert len(data.items("test")) == 153 and len(data.items("train")) + len(data.items("val")) == 245
    # The placeholder GIF is a valid image file, so it is kept; nothing else in the set is broken.
    assert data.skipped == []


def test_imagenet_backbone_sees_ants_and_bees(lite0):
    """Sanity of the weight mapping on real photos: most val images get an insect-like ImageNet class."""
    import timm

    from headstart.backbones import map_efficientnet_lite_weights
    from headstart.backbones.embedded import _lite_weights_file
    from headstart.backbones.weights import load_state_dict

    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(map_efficientnet_lite_weights(load_state_dict(_lite_weights_file(0)), model))
    root = shared_dataset("hymenoptera") / "val"
    transform = lite0.preprocessing.eval_transform()
    hits = 0
    files = sorted((root / "bees").glob("*.jpg"))[:20]
    with torch.inference_mode():
        for path in files:
            top5 = model.eval()(transform(load_image(path))[None]).topk(5).indices[0].tolist()
            hits += 309 in top5  # ImageNet class 309 is "bee"
    assert hits >= 14, hits
