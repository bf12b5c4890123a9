"""Grad-CAM and the report's interpretation tables on tiny random-weight models (no run needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from headstart.backbones import create_backbone
from headstart.model import TransferModel
from headstart.report.insights import confused_section, overlay
from headstart.report.interpret import _cam_block, grad_cam, heat_maps


def _reference_cam(model: TransferModel, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM the textbook way: a hook on the block, one backward pass through the whole model."""
    block = list(model.backbone.stages.values())[_cam_block(model.backbone)]
    seen: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        seen["maps"] = output

    handle = block.register_forward_hook(keep)
    try:
        logits = model(x.clone().requires_grad_(True))
        logits[torch.arange(len(targets)), torch.tensor(targets)].sum().backward()
    finally:
        handle.remove()
    maps, grads = seen["maps"].detach(), seen["maps"].grad
    if maps.ndim == 3:
        side = int((maps.shape[1] - 1) ** 0.5)
        maps, grads = (t[:, 1:].transpose(1, 2).reshape(len(t), -1, side, side) for t in (maps, grads))
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * maps).sum(1))
    return (cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).numpy()


@pytest.mark.parametrize("arch, grid", [("timm:test_efficientnet", 2), ("timm:test_vit", 4)])
def test_grad_cam_matches_the_hooked_backward_pass(arch, grid):
    torch.manual_seed(0)
    model = TransferModel.from_backbone(create_backbone(arch, pretrained=False), ["a", "b", "c"]).eval()
    for p in model.backbone.parameters():  # as after feature extraction: a frozen body
        p.requires_grad_(False)
    x = torch.randn(3, 3, 64, 64)
    targets = [0, 2, 1]
    maps = grad_cam(model, x, targets)
    assert maps.shape == (3, grid, grid) and maps.dtype == np.float32
    peaks = maps.max(axis=(1, 2))
    assert maps.min() >= 0 and np.all(np.isclose(peaks, 1.0) | (peaks == 0)) and peaks.max() == 1  # each map scaled to a peak of 1 (all-zero: no evidence)
    assert all(p.grad is None for p in model.parameters()) and not model.training  # nothing left behind
    np.testing.assert_allclose(maps, _reference_cam(model, x, targets), atol=1e-5)
    other = grad_cam(model, x, [1, 1, 1])
    assert not np.allclose(other, maps)  # the map depends on the class asked about


def test_heat_maps_of_image_files_and_overlay(tmp_path):
    from conftest import photo
    from PIL import Image

    model = TransferModel.from_backbone(create_backbone("timm:test_efficientnet", pretrained=False), ["a", "b"])
    model.backbone.preprocessing = dataclasses.replace(model.backbone.preprocessing, input_size=64)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        photo(i, (50, 40)).save(paths[-1])
    maps = heat_maps(model, paths, [0, 1, 0], batch_size=2)  # two batches
    assert maps.shape == (3, 2, 2)
    picture = Image.new("RGB", (40, 30), (128, 128, 128))
    hot = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    blended = np.asarray(overlay(picture, hot)).astype(int)
    assert blended.shape == (30, 40, 3)
    assert blended[0, 0, 0] > blended[0, 0, 2] and blended[-1, -1, 2] > blended[-1, -1, 0]  # jet: red where the map is hot, blue where cold


def test_most_confused_pairs_are_ranked_by_count():
    metrics = {"classes": ["ant", "bee", "wasp"], "split": "test", "confusion_matrix": [[5, 2, 0], [3, 4, 1], [0, 0, 6]]}
    section = confused_section(metrics)
    assert [(r["true"], r["predicted"], r["count"]) for r in section["rows"]] == [("bee", "ant", 3), ("ant", "bee", 2), ("bee", "wasp", 1)]
    assert section["rows"][0]["share"] == pytest.approx(3 / 8) and section["wrong"] == 6 and section["n"] == 21
    perfect = confused_section({**metrics, "confusion_matrix": [[5, 0, 0], [0, 4, 0], [0, 0, 6]]})
    assert perfect["rows"] == [] and perfect["wrong"] == 0
