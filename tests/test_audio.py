"""Audio: decoding any rate/channels/format, bad clips skipped and counted, spectrogram and HF audio backbones."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import shared_dataset


def tone(freq: float, seconds: float = 0.5, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A test signal (a decaying tone with a little noise), never passed off as recorded audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-3 * t) + 0.01 * rng.standard_normal(len(t))
    return np.stack([wave * (0.5 + 0.5 * c) for c in range(channels)], axis=1) if channels > 1 else wave


@pytest.fixture(scope="module")
def tone_folder(tmp_path_factory) -> Path:
    """Two classes of tones at mixed rates, channel counts and formats, plus every kind of bad file."""
    root = tmp_path_factory.mktemp("tones")
    formats = [("wav", 8000, 1), ("flac", 22050, 2), ("ogg", 44100, 2), ("mp3", 16000, 1)]
    for name, freq in (("low", 300.0), ("high", 2500.0)):
        (root / name).mkdir()
        for i in range(8):
            ext, rate, channels = formats[i % len(formats)]
            sf.write(root / name / f"{i}.{ext}", tone(freq * (1 + 0.03 * i), 0.3 + 0.05 * i, rate, channels, seed=i), rate)
    full = (root / "low" / "0.wav").read_bytes()
    (root / "low" / "empty.wav").write_bytes(b"")
    (root / "low" / "header-only.wav").write_bytes(full[:30])
    (root / "low" / "cut.wav").write_bytes(full[: len(full) // 2])  # cut inside its samples: what is there is used
    (root / "low" / "notes.wav").write_text("not audio at all")
    sf.write(root / "high" / "silent.wav", np.zeros(4000), 8000)
    (root / "high" / "readme.txt").write_text("not a clip")
    return root


def test_load_audio_mixes_down_and_resamples_every_format(tone_folder):
    from headstart.data.audio import load_audio

    for path in sorted((tone_folder / "low").glob("[0-3].*")):
        info = sf.info(str(path))
        waveform = load_audio(path, 16000)
        assert waveform.dtype == np.float32 and waveform.ndim == 1
        assert abs(len(waveform) - info.frames * 16000 / info.samplerate) <= 1100  # MP3 frames may pad the ends
    stereo = load_audio(tone_folder / "low" / "1.flac", 22050)
    data, _ = sf.read(str(tone_folder / "low" / "1.flac"), dtype="float32")
    np.testing.assert_allclose(stereo, data.mean(axis=1), atol=1e-6)


def test_audio_folder_skips_and_counts_bad_clips(tone_folder):
    from headstart.data import load_dataset

    dataset = load_dataset(tone_folder)
    assert dataset.modality == "audio" and dataset.classes == ["high", "low"]
    assert sum(len(dataset.items(s)) for s in ("train", "val", "test")) == 17
    reasons = {Path(f).name: r for f, r in dataset.skipped}
    assert reasons == {
        "empty.wav": "empty file",
        "header-only.wav": "cannot decode audio (Error in WAV file. No 'data' chunk marker.)",
        "notes.wav": "not an audio file (format not recognised)",
        "silent.wav": "silent (peak below -80 dBFS)",
        "readme.txt": "not an audio file (.txt)",
    }
    assert dataset.summary()["skipped"] == 5


def test_index_listing_with_split_column(tone_folder, tmp_path):
    from headstart.data import load_dataset

    rows = [{"path": f"{name}/{i}.{ext}", "label": name, "split": "test" if i < 2 else "train"} for name in ("low", "high") for i, ext in enumerate(["wav", "flac", "ogg", "mp3"] * 2)]
    rows += [{"path": "low/empty.wav", "label": "low", "split": "train"}, {"path": "low/missing.wav", "label": "low", "split": "train"}, {"path": "", "label": "low", "split": "train"}]
    with open(tone_folder / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    try:
        dataset = load_dataset(tone_folder)  # a folder with index.csv is read through it
    finally:
        (tone_folder / "index.csv").unlink()
    assert dataset.modality == "audio" and len(dataset.items("test")) == 4
    assert {r for _, r in dataset.skipped} == {"empty file", "no such file (or a broken or looping symbolic link)", "missing path"}


def test_spectrogram_augmentation_presets():
    from headstart.data.preprocessing import ImagePreprocessing, SpectrogramPreprocessing

    prep = SpectrogramPreprocessing(ImagePreprocessing(input_size=48), sample_rate=8000, clip_seconds=0.5)
    clip = tone(700, 0.4, 8000).astype(np.float32)
    clean = prep.eval_transform()(clip)
    assert clean.shape == (3, 48, 48) and torch.equal(clean, prep.eval_transform()(clip))
    for preset in ("light", "strong"):
        torch.manual_seed(0)
        first = prep.train_transform(preset)(clip)
        torch.manual_seed(0)
        assert torch.equal(first, prep.train_transform(preset)(clip))  # seeded: a run repeats
        assert not torch.equal(first, clean)
    with pytest.raises(ValueError, match="not one of"):
        prep.train_transform("heavy")
    with pytest.raises(ValueError, match="for audio"):  # quarter turns would swap time and frequency
        prep.train_transform("dihedral")


@pytest.fixture(scope="module")
def fsdd_subset(tmp_path_factory) -> Path:
    """Three digits, two speakers, a few takes each: a listing of real FSDD clips (nothing copied)."""
    root = shared_dataset("fsdd")
    listing = tmp_path_factory.mktemp("fsdd") / "subset.csv"
    with open(root / "index.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] in "036" and r["speaker"] in ("george", "jackson") and int(r["take"]) < 12]
    with open(listing, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows([str(root / r["path"]), r["label"], "test" if int(r["take"]) < 3 else "train"] for r in rows)
    return listing


@pytest.fixture(scope="module")
def fsdd_run(fsdd_subset, tmp_path_factory):
    import headstart

    out = tmp_path_factory.mktemp("fsdd-run") / "run"
    return headstart.fit(fsdd_subset, backbone="efficientnet_lite0", image_size=96, out=out, quiet=True)


def test_fsdd_fit_and_predict_reproduce_spectrogram_settings(fsdd_run, fsdd_subset):
    import headstart
    from headstart.data.preprocessing import SpectrogramPreprocessing

    run, run_dir = fsdd_run, fsdd_run.directory
    prep = run.model.preprocessing
    assert isinstance(prep, SpectrogramPreprocessing)
    assert (prep.sample_rate, prep.input_size) == (8000, 96) and 0.25 <= prep.clip_seconds <= 1.5  # FSDD is 8 kHz
    assert run.metrics["test"]["accuracy"] > 0.5  # 3 digits, 18 test clips: chance is 1/3
    saved = json.loads((run_dir / "config.json").read_text())["preprocessing"]
    assert saved["kind"] == "spectrogram" and saved["sample_rate"] == 8000 and saved["image"]["input_size"] == 96
    again = headstart.from_pretrained(run_dir)
    assert again.preprocessing == prep
    clips = [line.split(",")[0] for line in fsdd_subset.read_text().splitlines()[1:4]]
    before = headstart.predict_proba(run.model, [Path(c) for c in clips])
    np.testing.assert_allclose(headstart.predict_proba(run_dir, [Path(c) for c in clips]), before, atol=1e-5)
    assert [p.label for p in headstart.predict(run_dir, clips)] == [str(k) for k in np.asarray(run.model.classes)[before.argmax(1)]]


def test_predict_rejects_a_bad_clip(fsdd_run, tone_folder):
    import headstart

    with pytest.raises(ValueError, match=r"empty\.wav: empty file; pass audio files"):
        headstart.predict(fsdd_run.directory, [tone_folder / "low" / "empty.wav"])


def _tiny_wav2vec2(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
        conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(folder)
    return folder


def test_hf_audio_encoder_fits_audio_folder(tone_folder, tmp_path):
    """A small random wav2vec2 saved locally: the hf: audio path from files to a reloaded run's predictions."""
    import headstart
    from headstart.data.preprocessing import AudioPreprocessing

    model_dir = _tiny_wav2vec2(tmp_path / "tiny-wav2vec2")
    for strategy in ("feature-extraction", "fine-tune"):
        run = headstart.fit(tone_folder, backbone=f"hf:{model_dir}", strategy=strategy, epochs=2, out=tmp_path / strategy, quiet=True)
        assert run.model.modality == "audio" and isinstance(run.model.preprocessing, AudioPreprocessing)
        assert run.model.preprocessing.clip_seconds == 0.75  # 95% of the clips (0.3-0.65 s), rounded up to a quarter second
        clips = sorted((tone_folder / "high").glob("[0-3].*"))
        np.testing.assert_allclose(headstart.predict_proba(tmp_path / strategy, clips), headstart.predict_proba(run.model, clips), atol=1e-5)


def test_hf_audio_profile_addresses_speech_blocks(tone_folder, tmp_path):
    import headstart

    result = headstart.profile(tone_folder, backbone=f"hf:{_tiny_wav2vec2(tmp_path / 'w2v')}", folds=2, quiet=True)
    assert [row.block for row in result.rows] == ["feature_encoder", "projection", "position", "layer0", "layer1"]


def test_hf_audio_id_offline_error_is_clear():
    from headstart.backbones import create_backbone

    with pytest.raises(OSError, match=r"Cannot load hf:facebook/wav2vec2-base .*no network or hub access; use a local copy"):
        create_backbone("hf:facebook/wav2vec2-base")


def test_image_backbone_refuses_text_and_audio_backbone_refuses_images(tmp_path):
    from conftest import class_folder

    import headstart

    with pytest.raises(ValueError, match="is an audio backbone but .* holds image data"):
        headstart.fit(class_folder(tmp_path / "pics"), backbone=f"hf:{_tiny_wav2vec2(tmp_path / 'w2v')}", save=False, quiet=True)


def test_pretrain_on_some_speakers_then_transfer_to_another(fsdd_subset, tmp_path):
    """The develop-model approach for audio: a source trained on one speaker, its spectrogram settings travel with it."""
    import headstart
    from headstart.data.preprocessing import SpectrogramPreprocessing

    rows = fsdd_subset.read_text().splitlines()
    for speaker in ("george", "jackson"):
        (tmp_path / f"{speaker}.csv").write_text("\n".join([rows[0], *[r for r in rows[1:] if f"_{speaker}_" in r]]) + "\n")
    source = headstart.pretrain(tmp_path / "george.csv", arch="efficientnet_lite0", image_size=64, epochs=2, out=tmp_path / "source", quiet=True)
    prep = source.model.preprocessing
    assert isinstance(prep, SpectrogramPreprocessing) and prep.input_size == 64
    target = headstart.fit(tmp_path / "jackson.csv", backbone=str(tmp_path / "source"), out=tmp_path / "target", quiet=True)
    assert target.model.preprocessing == prep  # the source's rate, clip length and 64 px, not re-derived from the new clips
    assert target.metrics["test"]["n"] == sum("_jackson_" in r and r.endswith(",test") for r in rows)
    clip = Path(next(r for r in rows[1:] if "_jackson_" in r).split(",")[0])
    assert headstart.predict(tmp_path / "target", [clip])[0].label in {"0", "3", "6"}
