"""The freeze-boundary activation cache trains the same model as recomputing the frozen bottom."""

from __future__ import annotations

import copy

import numpy as np
import torch

from headstart import fit
from headstart.caches.activations import TopModel, boundary_activations, plan_boundary
from headstart.data import load_dataset
from headstart.freezing import freeze_bottom
from headstart.model import TransferModel

KWARGS = dict(strategy="fine-tune", trainable_blocks=2, epochs=2, batch_size=8, augment="none", image_size=64, quiet=True)


def test_cached_activations_train_the_same_model(elpv_folder, tmp_path, monkeypatch):
    cached = fit(elpv_folder, out=tmp_path / "cached", **KWARGS)
    monkeypatch.setenv("HEADSTART_ACTIVATION_BUDGET", "0")  # no room: the frozen blocks run every epoch
    recomputed = fit(elpv_folder, out=tmp_path / "recomputed", **KWARGS)
    log = (tmp_path / "cached" / "log.txt").read_text()
    assert "activation cache: blocks up to stage5 are frozen" in log
    assert "head warm-up: pooled features of train and val from the activations after stage5 (the bottom runs once)" in log
    assert log.count("embeddings (from the frozen bottom's activations)") == 2 and " computed, " not in log  # no separate embedding pass
    recomputed_log = (tmp_path / "recomputed" / "log.txt").read_text()
    assert "activation cache: not used" in recomputed_log
    assert "images at short side 73 (" in recomputed_log  # the recomputing path decodes each image once (64 px / 0.875)
    a = cached.model.state_dict()
    b = recomputed.model.state_dict()
    for name in a:  # the two paths' features differ by float rounding; the head's L-BFGS line search carries that to ~3e-5
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4, msg=name)
    assert abs(cached.metrics["test"]["accuracy"] - recomputed.metrics["test"]["accuracy"]) < 1e-9
    # the frozen bottom really stayed frozen
    before = TransferModel.from_backbone("efficientnet_lite0", ["a", "b"]).state_dict()
    for name, tensor in a.items():
        if name.startswith("backbone.stages.stem") or name.startswith("backbone.stages.stage0"):
            assert torch.equal(tensor, before[name]), name


def test_pooled_features_from_the_bottom_equal_the_embeddings(lite0, elpv_folder):
    from headstart.caches.activations import pooled_features
    from headstart.caches.embeddings import compute_embeddings

    data = load_dataset(elpv_folder)
    model = TransferModel.from_backbone(copy.deepcopy(lite0), data.classes)
    items = data.items("train")[:6]
    pooled = pooled_features(model, boundary_activations(model, items, 7), 7, batch_size=4)
    np.testing.assert_allclose(pooled, compute_embeddings(model.backbone, items), rtol=1e-4, atol=1e-5)


def test_top_model_equals_the_whole_model(lite0, elpv_folder):
    data = load_dataset(elpv_folder)
    model = TransferModel.from_backbone(copy.deepcopy(lite0), data.classes, cut="stage4")  # frozen below: never the shared fixture
    freeze_bottom(model, 2)  # stage4 and the new head train
    plan = plan_boundary(model, 10, augment="none")
    assert plan.use and plan.start == 5 and plan.bytes_per_example > 0
    items = data.items("train")[:4]
    activations = boundary_activations(model, items, plan.start)
    model.eval()
    with torch.inference_mode():
        from headstart.data import make_loader

        inputs, _ = next(iter(make_loader(items, None, model.preprocessing, batch_size=4)))
        whole = model(inputs)
        top = TopModel(model, plan.start)(activations)
    torch.testing.assert_close(top, whole, rtol=1e-4, atol=1e-4)


def test_plan_says_why_it_recomputes(lite0, elpv_folder):
    data = load_dataset(elpv_folder)
    model = TransferModel.from_backbone(copy.deepcopy(lite0), data.classes)
    freeze_bottom(model, 3)
    assert "changes the inputs every epoch" in plan_boundary(model, 10, augment="light").reason
    assert "> budget" in plan_boundary(model, 10, augment="none", budget=1).reason
    freeze_bottom(model, 1)  # only the new head: feature extraction's job
    assert "whole body is frozen" in plan_boundary(model, 10, augment="none").reason


# --- decoded-image cache ------------------------------------------------------------------------


def test_decoded_images_give_identical_eval_tensors(lite0, elpv_folder, tmp_path):
    from headstart.caches.images import DecodedImageCache
    from headstart.data import make_loader
    from headstart.data.images import CachedImage

    items = load_dataset(elpv_folder).items("train")[:6]
    cache = DecodedImageCache(tmp_path)
    cached, line = cache.prepare(items, lite0.preprocessing)
    assert "6 decoded now" in line and all(isinstance(c, CachedImage) for c in cached)
    assert cached[0].shape[:2] == (256, 256)  # 300-px cells presized to the 256 short side (224 / 0.875)
    direct, _ = next(iter(make_loader(items, None, lite0.preprocessing, batch_size=6)))
    again, _ = next(iter(make_loader(cached, None, lite0.preprocessing, batch_size=6)))
    assert torch.equal(direct, again)
    _, line = DecodedImageCache(tmp_path).prepare(items, lite0.preprocessing)
    assert "0 decoded now, 6 from" in line


def test_augmenting_cached_pixels_matches_the_pil_path(lite0, elpv_folder, tmp_path):
    """The torch-op augmentation of cached pixels draws the same crops and flips as the PIL transforms."""
    from headstart.caches.images import DecodedImageCache
    from headstart.data import make_loader

    dataset = load_dataset(elpv_folder)
    items, labels = dataset.items("train")[:6], dataset.labels("train")[:6]
    cached, _ = DecodedImageCache(tmp_path).prepare(items, lite0.preprocessing)
    fast = make_loader(cached, labels, lite0.preprocessing, batch_size=6, train=True, augment="light", seed=3)
    assert fast.num_workers == 0  # on a CPU the training process augments: no workers taking cores from the step
    slow = make_loader([c.to_pil() for c in cached], labels, lite0.preprocessing, batch_size=6, train=True, augment="light", seed=3, workers=0)
    for _ in range(2):  # two epochs: different draws, the same in both paths
        torch.manual_seed(0)
        x, y = next(iter(fast))
        torch.manual_seed(0)
        x_pil, y_pil = next(iter(slow))
        assert x.dtype == torch.float32 and x.shape == x_pil.shape == (6, 3, 224, 224) and torch.equal(y, y_pil)
        assert (x - x_pil).abs().mean() < 0.005  # only the resampling differs (torch's antialiased bicubic against PIL's): measured 0.0002
    torch.manual_seed(0)
    different, _ = next(iter(make_loader(cached, labels, lite0.preprocessing, batch_size=6, train=True, augment="light", seed=4)))
    assert (different - x).abs().mean() > 0.1  # another seed, other crops: the check above can fail
    for preset in ("strong", "dihedral"):
        batch, _ = next(iter(make_loader(cached, labels, lite0.preprocessing, batch_size=6, train=True, augment=preset)))
        assert batch.shape == (6, 3, 224, 224) and batch.dtype == torch.float32 and torch.isfinite(batch).all()


def test_damaged_decoded_shard_is_rebuilt(lite0, elpv_folder, tmp_path):
    from headstart.caches.images import DecodedImageCache

    items = load_dataset(elpv_folder).items("train")[:3]
    DecodedImageCache(tmp_path).prepare(items, lite0.preprocessing)
    (shard,) = tmp_path.rglob("part-*.npy")
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated by a crash or a full disk
    _, line = DecodedImageCache(tmp_path).prepare(items, lite0.preprocessing)
    assert "3 decoded now" in line


def test_decoding_leaves_the_global_random_state_alone(lite0, elpv_folder, tmp_path):
    """Augmentation draws from torch's global generator: a cold cache must not shift it, or a seeded run
    would depend on what an earlier run left in the cache."""
    from headstart.caches.images import DecodedImageCache

    items = load_dataset(elpv_folder).items("train")[:5]
    torch.manual_seed(0)
    _, line = DecodedImageCache(tmp_path).prepare(items, lite0.preprocessing)
    assert "5 decoded now" in line and torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())


def test_decoded_cache_can_be_turned_off(monkeypatch, tmp_path):
    from headstart.caches.images import DecodedImageCache, image_cache

    assert isinstance(image_cache(tmp_path), DecodedImageCache)
    monkeypatch.setenv("HEADSTART_IMAGE_CACHE", "0")
    assert image_cache(tmp_path) is None


def test_embeddings_are_stored_chunk_by_chunk(lite0, elpv_folder, tmp_path, monkeypatch):
    """A long embedding run writes a shard per chunk: memory holds one chunk, an interruption keeps the rest."""
    import numpy as np

    from headstart.caches import embeddings as features
    from headstart.caches.embeddings import EmbeddingCache, compute_embeddings

    items = load_dataset(elpv_folder).items("train")[:10]
    cut = lite0.cut("stage1")
    monkeypatch.setattr(features, "SHARD_ROWS", 4)
    got, computed = EmbeddingCache(tmp_path).embed(cut, items, batch_size=4)
    assert computed == 10 and len(list(tmp_path.rglob("part-*.npy"))) == 3  # 4 + 4 + 2
    np.testing.assert_allclose(got, compute_embeddings(cut, items), rtol=1e-4, atol=1e-5)  # batches of 4 ran with BatchNorm folded: float rounding


def test_gradual_shares_its_first_stages_bottom_with_the_warm_up(elpv_folder, tmp_path):
    fit(elpv_folder, out=tmp_path / "g", strategy="gradual", unfreeze_blocks=2, epochs=1, batch_size=8, augment="none", image_size=64, quiet=True)
    log = (tmp_path / "g" / "log.txt").read_text()
    assert "head warm-up: pooled features of train and val from the activations after stage6 (the bottom runs once)" in log
    assert "activation cache: blocks up to stage6 are frozen" in log and "activation cache: blocks up to stage5 are frozen" in log  # stage 2 plans anew
