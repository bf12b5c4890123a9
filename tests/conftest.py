"""Shared fixtures: real embedded models and small real data, built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub lookup must fail fast, never retry
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one test per core; two intra-op threads per worker would spin against each other
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by torch at import, and by the CLI processes tests start
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # a two_threads test's idle thread sleeps instead of spinning on the other worker's core

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def photo(seed: int = 0, size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A small random RGB picture (generated, so nothing is committed)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def class_folder(root: Path, per_class: int = 4, classes: tuple[str, ...] = ("cats", "dogs"), *, seed: int = 0) -> Path:
    """``root/<class>/<i>.jpg`` with distinct generated pictures (another ``seed`` gives other pictures)."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            photo(seed * 1000 + 10 * c + i).save(root / name / f"{i}.jpg")
    return root


def shared_dataset(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"../shared/datasets/{name} is absent (it lies beside the repository in CI); this test reads it")
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "report: the test reads report.html or interpretation.json of a fit it runs itself")


@pytest.fixture(autouse=True)
def _fits_write_no_report(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit run in a test's own process skips report.html and interpretation.json unless the test is marked
    ``report``: the page's matplotlib figures cost ~1.5 s of CPU per fit, more than a small fit itself.
    Fixtures shared by a module or the session (``fe_run``, ``text_run``, ...) are built before this and keep
    both, as do fits in subprocesses (the CLI tests); tests/test_report.py and test_interpretation.py test them."""
    if request.node.get_closest_marker("report"):
        return
    import headstart.api

    save_run = headstart.api._save_run
    monkeypatch.setattr(headstart.api, "_save_run", lambda *args, **kwargs: save_run(*args, **{**kwargs, "report": False}))
    monkeypatch.setattr(headstart.api, "interpret_held_out", lambda *args, **kwargs: None)


SHARED_FITS = ("fe_run", "text_run")  # session fixtures that train a model: their tests share one worker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup`` each fixture that trains or starts something runs once, not once per
    worker: the tests of ``SHARED_FITS`` share a worker, as do the tests of a module that share a fixture built
    for the module (a fit, a browser, a server) or a session fixture the module defines."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = [d for defs in info.name2fixturedefs.values() for d in defs[-1:] if d.scope in ("module", "session")]
        if any(name in info.names_closure for name in SHARED_FITS):
            item.add_marker(pytest.mark.xdist_group("shared-fits"))
        elif any(d.scope == "module" or Path(str(d.baseid or ".")).name.startswith("test_") for d in shared):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture
def two_threads():
    """Two intra-op threads for a test that compares results across batch sizes: with one thread,
    oneDNN's 1x1 convolutions round differently by batch size (by ~7e-7), with two they do not."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("headstart-cache")
    os.environ["HEADSTART_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def lite0():
    from headstart.backbones import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def minilm():
    from headstart.backbones import create_backbone

    return create_backbone("minilm")


@pytest.fixture(scope="session")
def elpv_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny class-folder dataset of real ELPV solar-cell images (24 per class, not committed)."""
    from headstart.data import load_elpv

    data = load_elpv(task="binary", limit=160, seed=0)
    root = tmp_path_factory.mktemp("elpv")
    counts: dict[str, int] = {}
    for split in ("train", "val", "test"):
        for path, label in zip(data.items(split), data.labels(split)):
            name = data.classes[label]
            if counts.get(name, 0) >= 24:
                continue
            counts[name] = counts.get(name, 0) + 1
            (root / name).mkdir(exist_ok=True)
            shutil.copy(path, root / name / path.name)
    return root


@pytest.fixture(scope="session")
def topics_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real text-classification table: chatterbot-corpus utterances labelled by topic."""
    import csv

    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    rows = []
    for topic in ("food", "sports", "computers"):
        conversations = yaml.safe_load((root / f"{topic}.yml").read_text(encoding="utf-8"))["conversations"]
        texts = sorted({str(t).strip() for conv in conversations for t in conv if str(t).strip()})
        rows += [(t, topic) for t in texts[:30]]
    path = tmp_path_factory.mktemp("topics") / "topics.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def fe_run(elpv_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """A saved feature-extraction run on the tiny ELPV folder."""
    from headstart.api import fit

    return fit(elpv_folder, strategy="feature-extraction", out=tmp_path_factory.mktemp("runs") / "fe", quiet=True, epochs=30)


@pytest.fixture(scope="session")
def text_run(topics_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """A saved minilm run on the topics table whose strategy the advisor chose (its report has a rationale and a profile)."""
    from headstart.api import fit

    return fit(topics_csv, backbone="minilm", strategy="auto", out=tmp_path_factory.mktemp("runs") / "topics", quiet=True)


@pytest.fixture(scope="session")
def tiny_text_backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``hf:DIR`` of a 2-layer, 32-wide BERT with random (seeded) weights and MiniLM's tokenizer: a text backbone
    for contract tests that must be fast (MiniLM's vocabulary, so real texts tokenize as they would)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: I001

    from headstart.backbones.embedded import _minilm_dir  # first: headstart's torchvision fix precedes transformers' model imports

    folder = tmp_path_factory.mktemp("tiny-text")
    tokenizer = AutoTokenizer.from_pretrained(str(_minilm_dir()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return f"hf:{folder}"
