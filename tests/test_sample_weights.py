"""Per-example loss weights (scikit-learn's ``sample_weight``) in the end-to-end strategies: each weight
travels with its example through the loaders, so an example of weight 0 counts for nothing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import photo

from headstart.data import Dataset, make_loader, tensor_loader
from headstart.data.preprocessing import ImagePreprocessing


@pytest.fixture(scope="module")
def tiny_bert_without_dropout(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide random BERT with no dropout: a batch's masks would otherwise depend on its size."""
    from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: I001

    from headstart.backbones.embedded import _minilm_dir

    folder = tmp_path_factory.mktemp("tiny-bert-nodrop")
    tokenizer = AutoTokenizer.from_pretrained(str(_minilm_dir()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return f"hf:{folder}"


@pytest.fixture(scope="module")
def tiny_efficientnet(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Seeded random weights for timm's test_efficientnet (nothing is downloaded offline)."""
    import timm

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-effnet") / "weights.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    return str(path)


def _text_sets() -> tuple[list[str], list[int], list[str], list[int]]:
    kept = [f"the match ended {i} goals to nil" for i in range(4)] + [f"bake the bread for {i} minutes" for i in range(4)]
    noise = ["bake a cake with two eggs", "the striker scored twice tonight", "a long paragraph about ovens and flour and sugar", "goal"]
    return kept, [0, 0, 0, 0, 1, 1, 1, 1], noise, [0, 1, 0, 1]  # the noise examples carry the wrong topic


def _image_sets() -> tuple[list, list[int], list, list[int]]:
    kept = [photo(seed=i, size=(36, 36)) for i in range(8)]
    noise = [photo(seed=100 + i, size=(36, 36)) for i in range(4)]
    return kept, [0, 1] * 4, noise, [1, 1, 0, 0]


def _weighted_fits(modality: str, backbone: str, strategy: str, weights_file: str) -> list[dict[str, torch.Tensor]]:
    """The fitted weights of one model trained three ways: on the kept examples alone, then with the noise
    examples interleaved at weight 0 and at weight 1. The model is built once and copied (loading is most of a fit's time)."""
    from headstart.backbones import match_data
    from headstart.caches.embeddings import EmbeddingCache
    from headstart.model import TransferModel
    from headstart.progress import Progress
    from headstart.strategies import FitContext, make_strategy
    from headstart.training.loop import seed_everything

    kept, kept_y, noise, noise_y = _text_sets() if modality == "text" else _image_sets()
    val = (kept[:2] + noise[:2], [kept_y[0], kept_y[1], noise_y[0], noise_y[1]])
    built = TransferModel.from_backbone(backbone, ["a", "b"], weights=weights_file if modality == "image" else None)
    results = []
    for noise_weight in (None, 0.0, 1.0):
        items, labels, weights = list(kept), list(kept_y), [1.0] * len(kept)
        if noise_weight is not None:
            for k, (x, y) in enumerate(zip(noise, noise_y)):  # interleaved, so shuffling must keep each weight with its example
                items.insert(2 * k + 1, x)
                labels.insert(2 * k + 1, y)
                weights.insert(2 * k + 1, noise_weight)
        data = Dataset(modality, ["a", "b"], {"train": (items, labels), "val": val, "test": ([], [])},
                       weights=None if noise_weight is None else {"train": np.asarray(weights, np.float32)})  # fmt: skip
        model = copy.deepcopy(built)
        match_data(model.backbone, data, image_size=32 if modality == "image" else None)
        seed_everything(0)
        chosen = make_strategy(strategy, epochs=2, head_warmup=False, **({"trainable_blocks": 1} if modality == "image" else {}))  # the warm-up's weights: test_estimator
        with Progress(quiet=True) as progress:
            chosen.run(model, data, FitContext(progress=progress, cache=EmbeddingCache(None), batch_size=64, augment="none"))
        results.append({k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()})
    return results


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("case", ["text-full", "image-fine-tune"])
def test_zero_weight_examples_count_for_nothing(case, tiny_bert_without_dropout, tiny_efficientnet):
    """Weight 0 on wrongly labelled examples gives the fit without them (one batch an epoch, no dropout, so only summation order differs);
    weight 1 on them moves it, so weights that were ignored or shuffled away from their examples fail it. Text trains through the tokenizing loader, the image fine-tune through cached frozen-bottom activations."""
    modality, backbone, strategy = ("text", tiny_bert_without_dropout, "full") if case == "text-full" else ("image", "timm:test_efficientnet", "fine-tune")
    without, zero, counted = _weighted_fits(modality, backbone, strategy, tiny_efficientnet)
    assert _largest_difference(zero, without) < 1e-6  # float rounding (summation order): 2e-8 measured
    assert _largest_difference(counted, without) > 1e-3  # counted, the wrong labels move the fit: 4e-3 measured


def test_weights_stay_with_their_examples_through_shuffling():
    """Every loader that can carry weights yields each example's own weight, whatever the shuffle."""
    class Numbers:  # a text-style preprocessing: the batch's inputs as a tensor
        def __call__(self, texts):
            return torch.tensor([float(t) for t in texts])

    items = [str(i) for i in range(10)]
    weights = np.arange(10, dtype=np.float32) / 10
    for loader in (make_loader(items, list(range(10)), Numbers(), batch_size=3, train=True, seed=1, weights=weights),
                   tensor_loader(np.arange(10, dtype=np.float32), list(range(10)), batch_size=3, shuffle=True, seed=1, weights=weights)):  # fmt: skip
        seen = []
        for x, y, w in loader:
            assert w.dtype == torch.float32 and x.tolist() == y.float().tolist()
            np.testing.assert_allclose(w.numpy(), y.numpy() / 10)
            seen += y.tolist()
        assert sorted(seen) == list(range(10)) and seen != list(range(10))  # all of them, shuffled
    pixels = [(torch.zeros(3, 4, 4, dtype=torch.uint8), i, np.float32(i / 10)) for i in range(3)]
    x, y, w = ImagePreprocessing(input_size=4).collate(pixels)  # the decoded-image cache's augmenting loader stacks the weights too
    assert x.shape == (3, 3, 4, 4) and w.tolist() == pytest.approx([0.0, 0.1, 0.2])
