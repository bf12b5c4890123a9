"""Texts longer than the encoder's window: counted and said, a wider window (--max-length), or read in windows (--long-text chunk)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headstart.cli import main


@pytest.fixture(scope="module")
def tiny(tiny_text_backbone):
    from headstart.backbones import create_backbone

    return create_backbone(tiny_text_backbone)


def test_chunked_embedding_of_a_short_text_is_the_truncated_one_and_long_texts_use_every_window(tiny):
    from headstart.caches.embeddings import compute_embeddings
    from headstart.data.preprocessing import TextPreprocessing

    short = ["a short text", "fits in one window"]
    long_text = " ".join(f"word{i}" for i in range(200))
    truncated = compute_embeddings(tiny, short + [long_text])
    tokenizer = tiny.preprocessing.tokenizer
    tiny.preprocessing = TextPreprocessing(tokenizer, max_length=32, long_text="chunk")
    try:
        chunked = compute_embeddings(tiny, short + [long_text])
        windows = tiny.preprocessing([long_text])
        n = len(windows["window_of"])
        tiny.preprocessing = TextPreprocessing(tokenizer, max_length=32)
        first = compute_embeddings(tiny, [long_text])
    finally:
        tiny.preprocessing = TextPreprocessing(tokenizer, max_length=256)
    np.testing.assert_allclose(chunked[:2], truncated[:2], atol=1e-5)
    assert n > 5 and not np.allclose(chunked[2], first[0], atol=1e-3)  # the other windows count too


@pytest.mark.report
def test_truncation_is_counted_and_max_length_saved_and_reused(topics_csv, tiny_text_backbone, tmp_path, capsys):
    import csv

    from headstart.inference import from_pretrained

    out = tmp_path / "run"
    assert main(["fit", str(topics_csv), "--backbone", tiny_text_backbone, "--max-length", "10", "--epochs", "3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    counts = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["text_lengths"]
    texts = [row["text"] for row in csv.DictReader(topics_csv.open(encoding="utf-8"))]
    model = from_pretrained(out)
    assert model.preprocessing.max_length == 10  # saved with the run, used at predict
    lengths = [len(ids) for ids in model.preprocessing.tokenizer(texts)["input_ids"]]
    assert counts["longer"] == sum(n > 10 for n in lengths) > 0 and counts["tokens_lost"] == sum(max(n - 10, 0) for n in lengths)
    assert f"{counts['longer']} of {len(texts)} texts" in " ".join(err.split()) and f"{counts['tokens_lost']} of {counts['tokens']} tokens" in " ".join(err.split())
    assert "longer than the 10-token window" in (out / "report.html").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="feature-extraction"):
        from headstart.config import FitConfig

        FitConfig(long_text="chunk").validate("fine-tune")


def test_advise_says_how_many_texts_the_window_cuts(topics_csv, tiny):
    """advise counts the texts longer than the backbone's window on every split and says what fit will do with them."""
    import csv

    from headstart.analysis.advisor import advise
    from headstart.data.preprocessing import TextPreprocessing

    tokenizer = tiny.preprocessing.tokenizer
    texts = [row["text"] for row in csv.DictReader(topics_csv.open(encoding="utf-8"))]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    tiny.preprocessing = TextPreprocessing(tokenizer, max_length=10)
    try:
        advice = advise(topics_csv, backbone=tiny, limit=30)
    finally:
        tiny.preprocessing = TextPreprocessing(tokenizer, max_length=256)
    counts = advice.measurements["text_lengths"]
    longer, lost = sum(n > 10 for n in lengths), sum(max(n - 10, 0) for n in lengths)
    assert counts["examples"] == len(texts) and counts["longer"] == longer > 0 and counts["tokens_lost"] == lost
    line = next(line for line in advice.rationale if line.startswith("long texts:"))
    assert f"{longer} of {len(texts)} texts" in line and f"{lost} of {sum(lengths)} tokens" in line and "10-token window" in line
    assert "--long-text chunk" in line and "--max-length" in line
