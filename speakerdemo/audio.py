"""Audio loading and validation, and a fast voice activity detector (VAD).

Every way audio enters speakerdemo (a file path, the bytes of an upload, Gradio's
``(sample_rate, array)`` tuple) goes through :func:`load_audio`, so the models always get the
same thing: float32 mono at 16 kHz with enough speech in it. Bad input raises
:class:`AudioError` with a message that is shown to the user as-is, so it says in plain words
what is wrong instead of surfacing a decoder's traceback.

The VAD (:func:`detect_speech`) combines frame energy with spectral flatness and is written in
vectorised numpy. The project chose it over silero-vad for latency: silero runs an LSTM chunk by
chunk from Python, about 100-300 ms per 10 s of audio, which alone would exceed the 300 ms
verification target, whereas this detector needs a few milliseconds for a minute of audio.
Kaldi's x-vector recipes also use an energy VAD: for speaker embeddings the VAD only has to drop
silence and stationary noise, not to be a perfect speech classifier. Its frames line up with
the mel front end (10 ms hop, frames centred on multiples of the hop), so the mask can select
mel frames directly.
"""

import functools
import io
import math
import numbers
import os
import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
import torch
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16000
HOP_SECONDS = 0.01
MIN_SPEECH_SECONDS = 0.5
MAX_SECONDS = 60.0
# What a folder source (train.data) and the command line's `embed` look for: formats load_audio decodes.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")
MAX_BYTES = 50 * 2**20

MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 192000
SILENCE_PEAK = 1e-3
"""Peak amplitude below which a clip counts as silent (-60 dBFS): nothing usable is recorded."""
MAX_CHANNELS_FIRST = 8
"""A (rows, columns) array with at most this many rows, fewer than its columns, is channels-first."""

FRAME_SECONDS = 0.025
"""VAD analysis window: the usual 25 ms speech frame, long enough to resolve a 100 Hz pitch."""
ANALYSIS_BAND_HZ = (100.0, 4000.0)
"""Energy and flatness are measured in this band. It holds most of the energy of speech and
leaves out DC, mains hum and the empty top of band-limited audio (telephone, low-bitrate mp3),
whose missing highs would otherwise make any noise look tonal."""
ABSOLUTE_FLOOR_DB = -55.0
"""No frame quieter than this (band power, dB re full scale; a full-scale sine reads -3 dB) is speech."""
NOISE_PERCENTILE = 10.0
"""The quietest 10 % of frames estimate the background noise level of the clip."""
NOISE_MARGIN_DB = 12.0
"""Speech must stand this far above the background noise estimate."""
NOISE_THRESHOLD_CAP_DB = 20.0
"""The noise-based threshold never rises above peak - 20 dB: in a clip that is speech throughout,
the 10th percentile is quiet speech, not noise, and must not push the threshold up to the peak."""
DYNAMIC_RANGE_DB = 45.0
"""Frames more than 45 dB below the loudest frame are not speech, whatever the noise estimate."""
MAX_FLATNESS = 0.4
"""Spectral flatness (geometric / arithmetic mean of the power spectrum) of speech frames stays
below this. Per 25 ms frame, white noise measures 0.57 in the median and 0.45 at its 1st
percentile; on speechocean762, frames within 20 dB of their clip's peak measure 0.01 in the
median and 0.13 at the 95th percentile (the rest are unvoiced sounds, bridged by smoothing)."""
MEDIAN_FRAMES = 5
"""Majority vote over 50 ms flips isolated frames, which are measurement noise, not speech."""
MIN_GAP_SECONDS = 0.2
"""Pauses shorter than this (stop closures, unvoiced fricatives) are bridged into the speech."""
MIN_RUN_SECONDS = 0.1
"""Speech runs shorter than this (clicks, bumps) are dropped: no syllable is that short."""
PHONE_BAND_HZ = (300.0, 3400.0)
"""The band a phone line keeps: :func:`high_band_db` measures the band above it against it."""
HIGH_BAND_HZ = (4300.0, 7600.0)
"""The band above a phone line's cut-off, empty in a clip that went through one."""
BAND_FRAME = 512
"""Samples per FFT frame of :func:`high_band_db`: 32 ms at 16 kHz, bins of 31 Hz, fine enough
to keep the two bands apart."""


class AudioError(ValueError):
    """Bad audio input, with a message a person understands (shown as-is in the web UI)."""


AudioSource = str | os.PathLike | bytes | bytearray | memoryview | tuple[int, np.ndarray]

_INTEGER_SCALING = {
    np.dtype(np.int8): (0, 2**7),
    np.dtype(np.uint8): (2**7, 2**7),
    np.dtype(np.int16): (0, 2**15),
    np.dtype(np.int32): (0, 2**31),
}
"""(offset, scale) mapping each integer sample format onto [-1, 1)."""
_FLOAT_FORMATS = (np.dtype(np.float32), np.dtype(np.float64))


def load_audio(
    source: AudioSource,
    target_sr: int = SAMPLE_RATE,
    *,
    max_seconds: float | None = MAX_SECONDS,
    min_speech_seconds: float = MIN_SPEECH_SECONDS,
    max_bytes: int | None = MAX_BYTES,
) -> np.ndarray:
    """Read, validate and resample audio for the models.

    ``source`` is a path (wav, flac, ogg/opus, mp3; anything libsndfile or, failing that, librosa
    reads), the encoded bytes of such a file, or Gradio's ``(sample_rate, array)`` tuple. Arrays
    may be int8, uint8, int16, int32, float32 or float64, shaped (samples,), (samples, channels)
    or (channels, samples). Integers are scaled to [-1, 1); float input whose peak exceeds 1.0 is
    divided by its peak, because some recorders hand over unnormalised floats and speaker
    embeddings do not depend on gain anyway. Channels are averaged to mono.

    Limits are checked as early as possible so that bad input costs little: the encoded size
    (``max_bytes``) before decoding, the duration from the file header before decoding, and
    the amount of detected speech last. ``None`` disables a limit, as does
    ``min_speech_seconds <= 0``.

    Returns float32 mono samples at ``target_sr``, C-contiguous.
    Raises AudioError, with a message meant for the user, for any input that cannot be used.
    """
    _check_sample_rate(target_sr)
    samples, sample_rate = _read_source(source, max_seconds, max_bytes)
    wav = _to_valid_mono(samples, sample_rate, max_seconds)
    if sample_rate != target_sr:
        wav = soxr.resample(wav, sample_rate, target_sr, quality="HQ")
    if min_speech_seconds > 0:
        require_speech(detect_speech(wav, target_sr), min_speech_seconds)
    return np.ascontiguousarray(wav, dtype=np.float32)


def detect_speech(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Boolean speech mask of a mono signal, one entry per 10 ms hop.

    The mask has ``1 + len(wav) // hop`` entries (hop = sample_rate * HOP_SECONDS, rounded) and
    entry i describes the frame centred at sample ``i * hop``: exactly the frame layout of
    ``torchaudio.transforms.MelSpectrogram(hop_length=hop, center=True)``, so the mask selects
    mel frames directly. A frame is speech when its band energy clears an adaptive threshold
    (see :func:`_energy_threshold`) and its spectrum is peaky rather than noise-like
    (flatness below MAX_FLATNESS); the decisions are then smoothed over time.
    """
    return analyse_speech(wav, sample_rate)[0]


def analyse_speech(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """(:func:`detect_speech`'s mask, the clip's level range) from one pass over the frames: the
    encoder needs both for every clip, and they share the frame energies.

    The level range says how far the clip's loud frames stand above its quiet ones: the 95th less
    the 5th percentile of the VAD's frame energies (0.1-4 kHz, 10 ms hop), in dB. Speech with
    pauses in a quiet room spans a wide range; speech buried in noise or reverberation fills the
    pauses and spans little, so that the app can tell such clips apart. Measured on real speech in
    ../shared/data: clean 3-s LibriSpeech segments 30-75 dB (5th-95th percentile of clips), the
    same in a simulated noisy room (5-15 dB SNR) 15-43 dB, speechocean762 32-56 dB, wake-word
    recordings on consumer microphones 43-89 dB.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"detect_speech expects a mono 1-D signal, got shape {wav.shape}")
    energy_db, flatness = _frame_features(wav, sample_rate, round(sample_rate * HOP_SECONDS))
    raw = (energy_db > _energy_threshold(energy_db)) & (flatness < MAX_FLATNESS)
    return _smooth(raw), float(np.percentile(energy_db, 95) - np.percentile(energy_db, 5))


def high_band_db(wav: np.ndarray, sample_rate: int, speech_mask: np.ndarray) -> float:
    """Power per Hz above a phone line's cut-off (4.3-7.6 kHz) relative to the phone band
    (0.3-3.4 kHz), in dB, over the frames the VAD calls speech (all frames when it found none).

    It tells a clip that went through a phone line or an 8 kHz file, whatever its sample rate is
    now, from a wideband one, so that the app can say what its threshold means for such clips.
    Measured on 40 random clips of each corpus in ../shared/data: wideband speech -15 to -38 dB
    (LibriSpeech, speechocean762, wake words); the same clips through an 8 kHz line (with or
    without mu-law) -94 dB and below. Clips sampled below 15.2 kHz have no such band: -inf.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if sample_rate < 2 * HIGH_BAND_HZ[1]:
        return -math.inf
    n = BAND_FRAME
    frames = np.pad(wav, (0, -len(wav) % n)).reshape(-1, n)
    hop = round(sample_rate * HOP_SECONDS)
    centres = np.minimum((np.arange(len(frames)) * n + n // 2) // hop, len(speech_mask) - 1)
    speech = np.asarray(speech_mask, dtype=bool)[centres]
    if speech.any():
        frames = frames[speech]
    with torch.inference_mode():  # torch's FFT uses the cores it is given; numpy's one
        spectra = torch.fft.rfft(torch.from_numpy(frames) * _hann(n, periodic=False), dim=1)
        power = spectra.abs().double().square().mean(dim=0).numpy()
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    high = power[(freqs >= HIGH_BAND_HZ[0]) & (freqs <= HIGH_BAND_HZ[1])].mean()
    phone = power[(freqs >= PHONE_BAND_HZ[0]) & (freqs <= PHONE_BAND_HZ[1])].mean()
    tiny = 1e-20  # digital silence in a band: a very low level, not a division by zero
    return float(10.0 * np.log10((high + tiny) / (phone + tiny)))


def speech_regions(mask: np.ndarray, hop_seconds: float = HOP_SECONDS) -> list[tuple[float, float]]:
    """(start_s, end_s) of each run of True in a speech mask.

    Frame i is centred at ``i * hop_seconds`` and so stands for the half-hop either side of it;
    a region starts half a hop before its first frame (never before 0) and ends half a hop after
    its last one.
    """
    starts, ends = _runs(np.asarray(mask, dtype=bool))
    return [
        (max(0.0, (start - 0.5) * hop_seconds), (end - 0.5) * hop_seconds)
        for start, end in zip(starts.tolist(), ends.tolist())
    ]


def speech_seconds(mask: np.ndarray, hop_seconds: float = HOP_SECONDS) -> float:
    """Total duration of speech in a mask: the summed length of its :func:`speech_regions`.

    The one definition of "seconds of speech": the minimum-speech gate (:func:`require_speech`),
    the embedding's warnings and the plots all count with it, so they never disagree at the gate.
    """
    return sum((end - start for start, end in speech_regions(mask, hop_seconds)), 0.0)


def require_speech(mask: np.ndarray, min_speech_seconds: float) -> None:
    """Refuse a clip whose speech mask (from :func:`detect_speech`) holds too little speech for a
    reliable speaker embedding.

    Separate from :func:`load_audio` so that a caller that needs the mask anyway (the encoder)
    runs the VAD once and checks its own mask, with the same message.
    """
    found = speech_seconds(mask)
    if found < min_speech_seconds:
        raise AudioError(
            f"Only {found:.2f} s of speech detected; at least {min_speech_seconds:g} s is needed. "
            "Record a longer sample, speaking clearly and close to the microphone."
        )


def _read_source(source: AudioSource, max_seconds: float | None, max_bytes: int | None) -> tuple[np.ndarray, float]:
    """Decode any accepted source into (samples as (frames, channels), sample rate)."""
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source), max_seconds, max_bytes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_bytes(bytes(source), max_seconds, max_bytes)
    if isinstance(source, tuple):
        return _read_tuple(source)
    if isinstance(source, np.ndarray):
        raise AudioError("An array alone has no sample rate: pass (sample_rate, array) instead.")
    raise AudioError(f"Unsupported audio input of type {type(source).__name__}.")


def _read_path(path: Path, max_seconds: float | None, max_bytes: int | None) -> tuple[np.ndarray, float]:
    """Decode an audio file, refusing oversized files before touching their contents."""
    if not path.is_file():
        raise AudioError(f"Audio file '{path.name}' does not exist or is not a file.")
    _check_size(path.stat().st_size, max_bytes, f"'{path.name}'")
    return _decode(path, f"'{path.name}'", max_seconds)


def _read_bytes(data: bytes, max_seconds: float | None, max_bytes: int | None) -> tuple[np.ndarray, float]:
    """Decode the bytes of an uploaded file, refusing oversized uploads before decoding."""
    _check_size(len(data), max_bytes, "The audio file")
    return _decode(data, "the audio data", max_seconds)


def _read_tuple(source: tuple) -> tuple[np.ndarray, float]:
    """Unpack Gradio's (sample_rate, array), accepting either channel orientation."""
    if len(source) != 2 or not _is_number(source[0]) or not isinstance(source[1], np.ndarray):
        raise AudioError("Expected audio as a (sample_rate, numpy array) pair.")
    sample_rate, samples = source
    if samples.ndim == 1:
        return samples[:, np.newaxis], float(sample_rate)
    if samples.ndim != 2:
        raise AudioError(f"Expected audio shaped (samples,) or (samples, channels), got {samples.shape}.")
    rows, columns = samples.shape
    channels_first = rows <= MAX_CHANNELS_FIRST and rows < columns
    return (samples.T if channels_first else samples), float(sample_rate)


def _is_number(value: object) -> bool:
    """True for real numbers, numpy scalars included; bool is excluded as it is surely a mistake."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_size(n_bytes: int, max_bytes: int | None, label: str) -> None:
    """Refuse empty and oversized encoded input before spending time decoding it."""
    if n_bytes == 0:
        raise AudioError("The audio file is empty.")
    if max_bytes is not None and n_bytes > max_bytes:
        raise AudioError(f"{label} is {n_bytes / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB.")


def _decode(data: Path | bytes, label: str, max_seconds: float | None) -> tuple[np.ndarray, float]:
    """Decode with libsndfile, refusing too-long clips from their header before decoding them."""
    header_seconds = _header_seconds(data)
    if header_seconds is not None:
        _check_duration(header_seconds, max_seconds)
    try:
        samples, sample_rate = sf.read(_as_file(data), dtype="float32", always_2d=True)
    except Exception as error:
        if isinstance(data, Path):
            return _decode_with_librosa(data, label, error)
        raise _unreadable(label, error) from error
    return samples, float(sample_rate)


def _header_seconds(data: Path | bytes) -> float | None:
    """Duration stated by the file header, or None when libsndfile cannot parse the header."""
    try:
        return sf.info(_as_file(data)).duration
    except Exception:
        return None


def _as_file(data: Path | bytes) -> Path | io.BytesIO:
    """Something soundfile can open: the path itself, or a fresh in-memory file over the bytes."""
    return data if isinstance(data, Path) else io.BytesIO(data)


def _decode_with_librosa(path: Path, label: str, soundfile_error: Exception) -> tuple[np.ndarray, float]:
    """Second chance for formats libsndfile lacks (librosa falls back to audioread/ffmpeg).

    Its warnings about the fallback are silenced because failure is reported as an AudioError,
    with libsndfile's reason, which says more than audioread's.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            samples, sample_rate = librosa.load(path, sr=None, mono=False)
    except Exception as error:
        raise _unreadable(label, soundfile_error) from error
    return np.atleast_2d(samples).T, float(sample_rate)


def _unreadable(label: str, error: Exception) -> AudioError:
    """The error for undecodable input, with the decoder's short reason rather than its traceback."""
    reason = getattr(error, "error_string", None) or str(error) or type(error).__name__
    return AudioError(f"Could not read {label} as audio: {reason.rstrip('.')}.")


def _to_valid_mono(samples: np.ndarray, sample_rate: float, max_seconds: float | None) -> np.ndarray:
    """Validate decoded (frames, channels) samples and average them to float32 mono."""
    _check_sample_rate(sample_rate)
    if samples.size == 0:
        raise AudioError("The audio is empty.")
    _check_duration(samples.shape[0] / sample_rate, max_seconds)
    mono = _to_float32(samples).mean(axis=1)
    _check_level(mono)
    return mono


def _check_sample_rate(sample_rate: float) -> None:
    """Refuse rates soxr and the models have no business with (typos, ultrasonic recorders)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"Unsupported sample rate {sample_rate:g} Hz (supported: 4–192 kHz).")


def _check_duration(seconds: float, max_seconds: float | None) -> None:
    """Refuse clips longer than the limit, which bounds the time and memory one request takes."""
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"The clip is {seconds:.1f} s long; the limit is {max_seconds:g} s.")


def _to_float32(samples: np.ndarray) -> np.ndarray:
    """Scale any accepted sample format to float32 in [-1, 1]."""
    if samples.dtype in _INTEGER_SCALING:
        offset, scale = _INTEGER_SCALING[samples.dtype]
        return (samples.astype(np.float32) - offset) / np.float32(scale)
    if samples.dtype not in _FLOAT_FORMATS:
        raise AudioError(
            f"Unsupported sample format {samples.dtype} (supported: int8, uint8, int16, int32, float32, float64)."
        )
    if not np.isfinite(samples).all():
        raise AudioError("The audio contains NaN or infinite values; the recording or file is corrupt.")
    peak = np.abs(samples).max()
    return (samples / peak if peak > 1.0 else samples).astype(np.float32)


def _check_level(wav: np.ndarray) -> None:
    """Refuse silent clips, which usually mean a muted or unplugged microphone."""
    peak = float(np.abs(wav).max())
    if peak < SILENCE_PEAK:
        level = "digital silence" if peak == 0 else f"peak level {20 * math.log10(peak):.0f} dBFS"
        raise AudioError(
            f"The audio is silent ({level}; at least -60 dBFS is needed). "
            "Check that the microphone is connected and not muted."
        )


def _frame_features(wav: np.ndarray, sample_rate: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Band energy (dB re full scale) and spectral flatness of every centred frame, all at once.

    In torch, whose FFT uses every core given to it: 60 s of audio in 10 ms rather than numpy's
    27 ms on two cores, and this runs for every clip the app embeds.
    """
    frame_length = round(sample_rate * FRAME_SECONDS)
    n_fft = 1 << (frame_length - 1).bit_length()
    window = _hann(frame_length, periodic=True)
    n_frames = 1 + len(wav) // hop
    left = frame_length // 2
    right = max(0, (n_frames - 1) * hop + frame_length - left - len(wav))
    with torch.inference_mode():
        padded = torch.nn.functional.pad(torch.from_numpy(wav), (left, right))
        frames = padded.unfold(0, frame_length, hop)[:n_frames]
        frames = (frames - frames.mean(dim=1, keepdim=True)) * window
        spec = torch.fft.rfft(frames, n=n_fft)
        low, high = (round(hz * n_fft / sample_rate) for hz in ANALYSIS_BAND_HZ)
        band = spec[:, low : high + 1].abs().double().square() + 1e-20
        # Parseval: doubled one-sided power over n_fft * sum(window^2) is the band's mean square.
        energy_db = 10 * torch.log10(2 * band.sum(dim=1) / (n_fft * window.double().square().sum()) + 1e-12)
        flatness = torch.exp(torch.log(band).mean(dim=1)) / band.mean(dim=1)
    return energy_db.numpy(), flatness.numpy()


@functools.cache
def _hann(length: int, periodic: bool) -> torch.Tensor:
    """A float32 Hann window, made once per length: every clip uses the same two."""
    return torch.hann_window(length, periodic=periodic, dtype=torch.float64).float()


def _energy_threshold(energy_db: np.ndarray) -> float:
    """Adaptive speech threshold: clear the absolute floor, the noise floor and the peak's range."""
    peak = float(energy_db.max())
    noise_floor = float(np.percentile(energy_db, NOISE_PERCENTILE))
    above_noise = min(noise_floor + NOISE_MARGIN_DB, peak - NOISE_THRESHOLD_CAP_DB)
    return max(ABSOLUTE_FLOOR_DB, above_noise, peak - DYNAMIC_RANGE_DB)


def _smooth(raw: np.ndarray) -> np.ndarray:
    """Turn noisy per-frame decisions into plausible speech segments."""
    voted = _majority_vote(raw, MEDIAN_FRAMES)
    bridged = _fill_short_gaps(voted, round(MIN_GAP_SECONDS / HOP_SECONDS))
    return _drop_short_runs(bridged, round(MIN_RUN_SECONDS / HOP_SECONDS))


def _majority_vote(mask: np.ndarray, width: int) -> np.ndarray:
    """Median filter of a boolean mask (odd width), treating frames beyond the ends as non-speech."""
    votes = sliding_window_view(np.pad(mask, width // 2), width).sum(axis=1)
    return votes > width // 2


def _fill_short_gaps(mask: np.ndarray, min_gap: int) -> np.ndarray:
    """Merge speech runs separated by fewer than min_gap frames."""
    starts, ends = _runs(mask)
    kept = starts[1:] - ends[:-1] >= min_gap
    merged_starts = np.concatenate([starts[:1], starts[1:][kept]])
    merged_ends = np.concatenate([ends[:-1][kept], ends[-1:]])
    return _mask_from_runs(merged_starts, merged_ends, len(mask))


def _drop_short_runs(mask: np.ndarray, min_run: int) -> np.ndarray:
    """Remove speech runs shorter than min_run frames."""
    starts, ends = _runs(mask)
    long_enough = ends - starts >= min_run
    return _mask_from_runs(starts[long_enough], ends[long_enough], len(mask))


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and exclusive end indices of the runs of True in a boolean mask."""
    edges = np.diff(mask.astype(np.int8), prepend=0, append=0)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _mask_from_runs(starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Boolean mask of the given length that is True exactly on [start, end) of each run."""
    delta = np.zeros(length + 1, dtype=np.int32)
    delta[starts] += 1
    delta[ends] -= 1
    return np.cumsum(delta[:-1]) > 0
