"""Audio clips: decoding, checking, fixed-length waveforms, log-mel spectrograms and augmentation.

Decoding is libsndfile's (``soundfile``: WAV, FLAC, OGG/Vorbis/Opus, MP3 from libsndfile 1.1),
resampling scipy's polyphase filter and the mel filterbank and spectrogram those of
``transformers.audio_utils`` (the code behind Whisper's and AST's feature extractors); this module is
the glue. Every clip goes through :func:`load_audio` once per use: mixed down to mono and resampled
to one rate, so every backbone sees the same waveform whatever the file's rate and channels.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
SILENCE = 1e-4  # peak amplitude (-80 dBFS) below which a clip holds nothing to classify
MAX_CLIP_SECONDS = 10.0


def _soundfile():  # noqa: ANN202 - the module
    try:
        import soundfile
    except ImportError:
        raise ImportError("audio data needs the package `soundfile` (libsndfile): pip install soundfile") from None
    return soundfile


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode ``path`` to a mono float32 waveform at ``sample_rate`` (channels averaged, polyphase resampling)."""
    from scipy.signal import resample_poly

    data, native = _soundfile().read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if native != sample_rate:
        g = math.gcd(int(native), int(sample_rate))
        mono = resample_poly(mono, sample_rate // g, int(native) // g).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_audio(path: Path) -> str | None:
    """Fully decode ``path``; return why it is unusable (empty, undecodable, silent), or None."""
    if not path.exists():
        return "no such file (or a broken or looping symbolic link)"
    sf = _soundfile()
    try:
        if path.stat().st_size == 0:
            return "empty file"
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, EOFError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        text = text.split("': ", 1)[-1]  # libsndfile repeats the path: "Error opening 'x.wav': <why>"
        if "recognised" in text or "recognized" in text:
            return "not an audio file (format not recognised)"
        return f"cannot decode audio ({text[:80]})"
    if data.size == 0:
        return "no audio samples"
    if not np.isfinite(data).all():
        return "audio holds NaN or infinite samples"
    if float(np.abs(data).max()) < SILENCE:
        return "silent (peak below -80 dBFS)"
    return None


def audio_defaults(paths: Sequence[Path], *, sample_rate: int | None = None, clip_seconds: float | None = None) -> tuple[int, float]:
    """Sample rate and clip length for a set of clips, read from file headers (nothing decoded).

    The rate is the most common one, at most 16 kHz (speech models' rate; a digit said at 8 kHz gains
    nothing from upsampling). The length covers 95% of the clips, rounded up to a quarter second and at
    most :data:`MAX_CLIP_SECONDS`: longer clips are cropped around their middle, shorter ones padded.
    """
    if sample_rate is not None and clip_seconds is not None:
        return int(sample_rate), float(clip_seconds)
    sf = _soundfile()
    rates, durations = [], []
    for path in paths:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError):
            continue
        rates.append(int(info.samplerate))
        durations.append(info.frames / max(info.samplerate, 1))
    if sample_rate is None:
        sample_rate = min(16000, Counter(rates).most_common(1)[0][0]) if rates else 16000
    if clip_seconds is None:
        longest = float(np.percentile(durations, 95)) if durations else 1.0
        clip_seconds = min(MAX_CLIP_SECONDS, max(0.25, math.ceil(longest * 4) / 4))
    return int(sample_rate), float(clip_seconds)


def fix_length(waveform: np.ndarray, length: int, *, offset: int | None = None) -> np.ndarray:
    """Crop or zero-pad ``waveform`` to ``length`` samples, centred unless ``offset`` shifts it.

    ``offset`` (in samples) moves the window over a long clip, or the clip inside the window of a
    short one: the time-shift augmentation.
    """
    out = np.zeros(length, dtype=np.float32)
    start = (len(waveform) - length) // 2 + (offset or 0)  # where the window starts in the clip (negative: padding first)
    src0, dst0 = max(start, 0), max(-start, 0)
    n = min(len(waveform) - src0, length - dst0)
    if n > 0:
        out[dst0 : dst0 + n] = waveform[src0 : src0 + n]
    return out


# Augmentation presets: (largest time shift as a fraction of the clip, noise SNR range in dB or None,
# frequency masks, time masks, largest mask as a fraction of the axis). SpecAugment (Park et al., 2019)
# masks a few bands and frame ranges; "light" keeps the word intact, "strong" may hide part of it.
AUDIO_AUGMENT = {
    "light": (0.1, (30.0, 40.0), 1, 1, 0.1),
    "strong": (0.2, (10.0, 30.0), 2, 2, 0.15),
}


def augment_waveform(waveform: np.ndarray, length: int, augment: str, rng: np.random.Generator) -> np.ndarray:
    """Fixed-length waveform with a random time shift and (half of the time) white noise at a random SNR."""
    if augment == "none":
        return fix_length(waveform, length)
    shift, snr, *_ = AUDIO_AUGMENT[augment]
    limit = int(shift * length) + max(len(waveform) - length, 0) // 2
    clip = fix_length(waveform, length, offset=int(rng.integers(-limit, limit + 1)))
    if snr is not None and rng.random() < 0.5:
        power = float(np.mean(clip**2))
        if power > 0:
            db = rng.uniform(*snr)
            clip = clip + rng.standard_normal(length).astype(np.float32) * np.float32(math.sqrt(power / 10 ** (db / 10)))
    return clip


def mask_spectrogram(image: np.ndarray, augment: str, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment-style masking of a ``(mels, frames)`` array scaled to [0, 1]: masked cells become silence (0)."""
    if augment == "none":
        return image
    *_, n_freq, n_time, width = AUDIO_AUGMENT[augment]
    image = image.copy()
    for axis, count in ((0, n_freq), (1, n_time)):
        size = image.shape[axis]
        for _ in range(count):
            span = int(rng.integers(0, max(1, int(width * size)) + 1))
            start = int(rng.integers(0, max(size - span, 0) + 1))
            if axis == 0:
                image[start : start + span] = 0.0
            else:
                image[:, start : start + span] = 0.0
    return image


@lru_cache(maxsize=8)
def _mel_filters(n_fft: int, n_mels: int, fmin: float, fmax: float, sample_rate: int) -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=fmin, max_frequency=fmax,
        sampling_rate=sample_rate, norm="slaney", mel_scale="slaney",
    ).astype(np.float32)  # fmt: skip


@lru_cache(maxsize=8)
def _window(frame_length: int) -> np.ndarray:
    from transformers.audio_utils import window_function

    return window_function(frame_length, "hann").astype(np.float32)


def log_mel(waveform: np.ndarray, *, sample_rate: int, n_mels: int, frame_length: int, hop_length: int, n_fft: int, fmin: float, top_db: float) -> np.ndarray:
    """Log-mel power spectrogram ``(n_mels, frames)`` scaled to [0, 1]: 1 is the clip's loudest cell, 0 is ``top_db`` below.

    Scaling to the clip's own peak makes the image independent of recording level, as a photo's
    pixels are of exposure after normalisation.
    """
    from transformers.audio_utils import power_to_db, spectrogram

    mel = spectrogram(
        waveform, _window(frame_length), frame_length=frame_length, hop_length=hop_length, fft_length=n_fft, power=2.0,
        mel_filters=_mel_filters(n_fft, n_mels, float(fmin), sample_rate / 2, sample_rate), mel_floor=1e-10,
    )  # fmt: skip
    db = power_to_db(mel, reference=max(float(mel.max()), 1e-10), min_value=1e-10, db_range=top_db)
    return ((db + top_db) / top_db).astype(np.float32)
