"""Tests of speakerdemo.audio: loading, validation, resampling and the VAD.

Signals are synthesised with numpy; files are written with soundfile into tmp_path. The
speech stand-in is conftest's ``voiced`` signal (120 Hz harmonics under a formant, modulated at a
4 Hz syllable rate): the VAD must accept it and reject white noise.
"""

import csv
import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import voiced
from hypothesis import given
from hypothesis import strategies as st

from speakerdemo.audio import (
    SAMPLE_RATE,
    AudioError,
    analyse_speech,
    detect_speech,
    high_band_db,
    load_audio,
    speech_regions,
    speech_seconds,
)

SR = SAMPLE_RATE


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


def white_noise(seconds: float, rms: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(round(seconds * SR)) * rms).astype(np.float32)


def speech_in_silence() -> np.ndarray:
    """1 s silence, 1 s voiced, 1 s silence."""
    return np.concatenate([silence(1), voiced(1), silence(1)])


def wav_bytes(signal: np.ndarray, sample_rate: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def best_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation, so codec delay (mp3, opus) does not matter."""
    n = len(a) + len(b)
    xcorr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    return float(xcorr.max() / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- bad input: every case is an AudioError with a message a person understands ---


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ((SR, np.zeros(0, dtype=np.float32)), "The audio is empty."),
        ((SR, np.zeros((0, 2), dtype=np.int16)), "The audio is empty."),
        (b"", "The audio file is empty."),
        ((SR, silence(3)), "The audio is silent (digital silence"),
        ((SR, voiced(3, peak=1e-5)), "The audio is silent (peak level -100 dBFS"),
        ((SR, np.concatenate([voiced(2), [np.nan]]).astype(np.float32)), "NaN or infinite"),
        ((SR, np.concatenate([voiced(2), [np.inf]]).astype(np.float64)), "NaN or infinite"),
        (np.random.default_rng(1).bytes(4096), "Could not read the audio data as audio"),
        (wav_bytes(voiced(1))[:30], "Could not read the audio data as audio"),
        ((1000, voiced(2)), "Unsupported sample rate 1000 Hz (supported: 4–192 kHz)."),
        ((400000, voiced(2)), "Unsupported sample rate 400000 Hz"),
        ((SR, voiced(2).astype(np.int64)), "Unsupported sample format int64"),
        ((SR, voiced(2).astype(np.complex64)), "Unsupported sample format complex64"),
        ((SR, voiced(2).reshape(1, 2, -1)), "Expected audio shaped (samples,) or (samples, channels)"),
        ((voiced(2), SR), "Expected audio as a (sample_rate, numpy array) pair."),
        ((SR, voiced(2).tolist()), "Expected audio as a (sample_rate, numpy array) pair."),
        (voiced(2), "pass (sample_rate, array) instead"),
        (42, "Unsupported audio input of type int."),
        (None, "Unsupported audio input of type NoneType."),
        ([SR, voiced(2)], "Unsupported audio input of type list."),
    ],
    ids=[
        "empty-array",
        "empty-stereo",
        "empty-bytes",
        "all-zero",
        "very-quiet",
        "nan",
        "inf",
        "random-bytes",
        "truncated-wav-header",
        "rate-too-low",
        "rate-too-high",
        "int64",
        "complex",
        "3d-array",
        "reversed-tuple",
        "list-in-tuple",
        "bare-array",
        "int",
        "none",
        "list",
    ],
)
def test_bad_input_is_refused_with_a_clear_message(source: object, message: str) -> None:
    with pytest.raises(AudioError, match=re.escape(message)):
        load_audio(source)


def test_text_file_is_not_audio(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("This is a shopping list, not a recording.\n" * 20)
    expected = "Could not read 'notes.txt' as audio: Format not recognised."
    with pytest.raises(AudioError, match=re.escape(expected)):
        load_audio(notes)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=re.escape("Audio file 'missing.wav' does not exist")):
        load_audio(str(tmp_path / "missing.wav"))


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=re.escape("The audio file is empty.")):
        load_audio(empty)


def test_too_long_clip_is_refused() -> None:
    clip = np.concatenate([silence(1), voiced(2)])
    with pytest.raises(AudioError, match=re.escape("The clip is 3.0 s long; the limit is 2 s.")):
        load_audio((SR, clip), max_seconds=2)
    assert len(load_audio((SR, clip), max_seconds=None)) == 3 * SR


def test_long_file_is_refused_quickly(tmp_path: Path) -> None:
    long_file = tmp_path / "five_minutes.wav"
    sf.write(long_file, np.tile(voiced(1), 300), SR, subtype="PCM_16")
    start = time.perf_counter()
    with pytest.raises(AudioError, match=re.escape("The clip is 300.0 s long; the limit is 60 s.")):
        load_audio(long_file, max_seconds=60)
    assert time.perf_counter() - start < 0.5


def test_long_file_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    """A FLAC cut after 64 kB still declares 300 s in its header but no longer decodes, so
    only a check of the header can produce the length message."""
    whole = tmp_path / "whole.flac"
    sf.write(whole, np.tile(voiced(1), 300), SR)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: 64 * 1024])
    with pytest.raises(AudioError, match=re.escape("The clip is 300.0 s long; the limit is 60 s.")):
        load_audio(cut, max_seconds=60)
    with pytest.raises(AudioError, match=re.escape("Could not read 'cut.flac' as audio")):
        load_audio(cut, max_seconds=None)


def test_oversize_input_is_refused_before_decoding(tmp_path: Path) -> None:
    data = wav_bytes(np.tile(voiced(1), 66))  # 66 s of 16-bit mono: 2.0 MB
    path = tmp_path / "big.wav"
    path.write_bytes(data)
    with pytest.raises(AudioError, match=re.escape("The audio file is 2.0 MB; the limit is 1 MB.")):
        load_audio(data, max_bytes=2**20, max_seconds=None)
    with pytest.raises(AudioError, match=re.escape("'big.wav' is 2.0 MB; the limit is 1 MB.")):
        load_audio(path, max_bytes=2**20, max_seconds=None)
    assert len(load_audio(path, max_seconds=None)) == 66 * SR


def test_too_little_speech_is_refused() -> None:
    clip = np.concatenate([silence(1), voiced(0.3), silence(1.7)])
    with pytest.raises(AudioError, match=r"Only 0\.[23]\d s of speech detected; at least 0\.5 s is needed"):
        load_audio((SR, clip))
    assert len(load_audio((SR, clip), min_speech_seconds=0)) == 3 * SR


def test_white_noise_is_not_speech() -> None:
    with pytest.raises(AudioError, match=re.escape("Only 0.00 s of speech detected")):
        load_audio((SR, white_noise(3, rms=0.1)))


def test_unsupported_target_rate() -> None:
    with pytest.raises(AudioError, match=re.escape("Unsupported sample rate 500000 Hz")):
        load_audio((SR, voiced(2)), target_sr=500000)


# --- good input ---


def test_float32_at_16k_passes_through_unchanged() -> None:
    clip = speech_in_silence()
    out = load_audio((SR, clip))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, clip)


def test_int16_is_scaled_by_32768() -> None:
    samples = (voiced(2) * 32767).astype(np.int16)
    samples[:3] = [16384, -32768, -8192]
    out = load_audio((SR, samples))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:3], [0.5, -1.0, -0.25])
    np.testing.assert_array_equal(out, samples / 32768)


def test_int32_is_scaled_by_2_to_the_31() -> None:
    samples = (voiced(2).astype(np.float64) * 2**31).astype(np.int32)
    samples[:2] = [2**30, -(2**31)]
    out = load_audio((SR, samples))
    np.testing.assert_array_equal(out[:2], [0.5, -1.0])
    np.testing.assert_allclose(out, samples / 2**31, rtol=1e-7)


def test_uint8_is_centred_on_128() -> None:
    samples = np.round(voiced(2) * 127 + 128).astype(np.uint8)
    samples[:3] = [0, 128, 192]
    out = load_audio((SR, samples))
    np.testing.assert_array_equal(out[:3], [-1.0, 0.0, 0.5])
    np.testing.assert_array_equal(out, (samples.astype(np.float64) - 128) / 128)


def test_int8_is_scaled_by_128() -> None:
    samples = np.round(voiced(2) * 127).astype(np.int8)
    samples[:2] = [64, -128]
    out = load_audio((SR, samples))
    np.testing.assert_array_equal(out[:2], [0.5, -1.0])


def test_float64_becomes_float32() -> None:
    clip = speech_in_silence().astype(np.float64)
    out = load_audio((SR, clip))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, clip.astype(np.float32))


def test_unnormalised_float_is_divided_by_its_peak() -> None:
    clip = speech_in_silence() * 4  # peak 2.0
    out = load_audio((SR, clip))
    assert np.abs(out).max() == 1.0
    np.testing.assert_allclose(out, clip / 2, rtol=1e-6)


def test_stereo_is_averaged_in_either_orientation() -> None:
    left = speech_in_silence()
    stereo = np.stack([left, 0.5 * left], axis=1)
    expected = 0.75 * left
    np.testing.assert_allclose(load_audio((SR, stereo)), expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(load_audio((SR, stereo.T)), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampled_to_16k_with_length_and_pitch_kept(rate: int) -> None:
    n_in = round(2.3456 * rate)
    tone = (0.5 * np.sin(2 * np.pi * 200 * np.arange(n_in) / rate)).astype(np.float32)
    out = load_audio((rate, tone), min_speech_seconds=0)
    assert abs(len(out) - n_in * SR / rate) <= 1
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * SR / len(out)
    assert abs(peak_hz - 200) < 1


@pytest.mark.parametrize(
    ("name", "options", "lossless"),
    [
        ("clip.wav", {"subtype": "PCM_16"}, True),
        ("clip.flac", {}, True),
        ("clip.ogg", {"format": "OGG", "subtype": "VORBIS"}, False),
        ("clip.opus", {"format": "OGG", "subtype": "OPUS"}, False),
        ("clip.mp3", {"format": "MP3"}, False),
    ],
)
def test_file_round_trip(tmp_path: Path, name: str, options: dict, lossless: bool) -> None:
    clip = speech_in_silence()
    path = tmp_path / name
    sf.write(path, clip, SR, **options)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags.c_contiguous
    assert abs(len(out) - len(clip)) <= SR // 10
    if lossless:
        np.testing.assert_allclose(out, clip, atol=1e-4)
    else:
        assert best_correlation(out, clip) > 0.95


def test_stereo_file_at_44k_is_mono_16k(tmp_path: Path) -> None:
    clip = voiced(2, sample_rate=44100)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([clip, clip], axis=1), 44100)
    out = load_audio(str(path))
    assert out.ndim == 1 and abs(len(out) - 2 * SR) <= 1


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_bytes_round_trip(tmp_path: Path, wrap: type) -> None:
    data = wav_bytes(speech_in_silence())
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_audio(wrap(data)), load_audio(path))


# --- VAD ---


@pytest.mark.parametrize(("rate", "hop"), [(16000, 160), (8000, 80)])
@pytest.mark.parametrize("length", [0, 1, 159, 160, 161, 399, 12345, 16000, 48001])
def test_mask_has_one_entry_per_hop(rate: int, hop: int, length: int) -> None:
    wav = np.resize(voiced(1, sample_rate=rate), length)
    mask = detect_speech(wav, rate)
    assert mask.dtype == bool and mask.shape == (1 + length // hop,)


@given(st.integers(min_value=0, max_value=5000))
def test_mask_length_property(length: int) -> None:
    assert len(detect_speech(np.ones(length, dtype=np.float32) * 0.1)) == 1 + length // 160


@pytest.mark.parametrize("length", [400, 12345, 16000, 16159, 16160])
def test_mask_lines_up_with_torchaudio_mel_frames(length: int) -> None:
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SR, n_fft=400, hop_length=160, n_mels=40, center=True)
    n_frames = mel(torch.zeros(length)).shape[-1]
    assert len(detect_speech(np.zeros(length, dtype=np.float32))) == n_frames


def assert_one_second_of_speech_at_1s(wav: np.ndarray) -> None:
    mask = detect_speech(wav)
    regions = speech_regions(mask)
    assert len(regions) == 1
    (start, end) = regions[0]
    assert abs(start - 1.0) < 0.05 and abs(end - 2.0) < 0.05
    assert abs(speech_seconds(mask) - 1.0) < 0.05


def test_speech_between_silences() -> None:
    assert_one_second_of_speech_at_1s(speech_in_silence())


def test_low_background_noise_is_not_speech() -> None:
    noisy = speech_in_silence() + white_noise(3, rms=10 ** (-50 / 20))
    assert_one_second_of_speech_at_1s(noisy)


def test_low_background_hum_is_not_speech() -> None:
    """A steady tone is as peaky as speech, so only the energy thresholds can reject it."""
    t = np.arange(3 * SR) / SR
    hum = 10 ** (-50 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 300 * t)
    assert_one_second_of_speech_at_1s(speech_in_silence() + hum.astype(np.float32))


@pytest.mark.parametrize("rms", [10 ** (-50 / 20), 0.01, 0.1, 0.3])
def test_white_noise_alone_is_never_speech(rms: float) -> None:
    assert not detect_speech(white_noise(10, rms=rms)).any()


def test_voiced_signal_throughout_is_speech() -> None:
    assert speech_seconds(detect_speech(voiced(3))) > 2.9


def test_short_pause_is_bridged_and_long_pause_splits() -> None:
    short_pause = np.concatenate([silence(1), voiced(1), silence(0.1), voiced(1), silence(1)])
    [(start, end)] = speech_regions(detect_speech(short_pause))
    assert abs(start - 1.0) < 0.05 and abs(end - 3.1) < 0.05
    long_pause = np.concatenate([silence(1), voiced(1), silence(0.5), voiced(1), silence(1)])
    assert len(speech_regions(detect_speech(long_pause))) == 2


def test_short_burst_is_dropped() -> None:
    assert not detect_speech(np.concatenate([silence(1), voiced(0.05), silence(1)])).any()


def test_speech_regions_of_a_hand_made_mask() -> None:
    mask = np.array([False, True, True, False, False, True])
    np.testing.assert_allclose(speech_regions(mask), [(0.005, 0.025), (0.045, 0.055)])
    assert speech_seconds(mask) == pytest.approx(0.03)
    np.testing.assert_allclose(speech_regions(np.array([True, True, False]), hop_seconds=0.02), [(0.0, 0.03)])
    assert speech_regions(np.zeros(5, dtype=bool)) == []
    assert speech_seconds(np.zeros(0, dtype=bool)) == 0


@given(st.lists(st.booleans(), max_size=200))
def test_speech_seconds_counts_frames(frames: list[bool]) -> None:
    """Each frame is one hop long, except that the first is cut in half at time 0."""
    mask = np.array(frames, dtype=bool)
    expected = 0.01 * (mask.sum() - 0.5 * (len(frames) > 0 and frames[0]))
    assert speech_seconds(mask) == pytest.approx(expected)


def test_sixty_seconds_is_fast() -> None:
    wav = np.tile(np.concatenate([voiced(1), silence(0.5)]), 40)[: 60 * SR]
    detect_speech(wav)
    start = time.perf_counter()
    mask = detect_speech(wav)
    assert time.perf_counter() - start < 0.5
    assert 35 < speech_seconds(mask) < 45


# --- real data ---


def test_every_speechocean762_utterance_loads(shared_data: Path) -> None:
    """Every file decodes to sane audio. A handful of recordings (at most 0.1 %) may be refused
    for holding under 0.5 s of speech: some children said almost nothing (so6902/069020075 has
    0.44 s of speech above a -60 dB background in 3.8 s), and refusing those is the point."""
    corpus = shared_data / "speechocean762"
    listing = corpus / "utterances.csv"
    if not listing.is_file():
        pytest.skip(f"{listing} not found: speechocean762 test skipped")
    with listing.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fractions, too_little_speech, problems = [], [], []
    start = time.perf_counter()
    for row in rows:
        try:
            wav = load_audio(corpus / row["path"])
        except AudioError as error:
            quiet = str(error).startswith("Only ")
            (too_little_speech if quiet else problems).append(f"{row['path']}: {error}")
            continue
        seconds = len(wav) / SR
        speech = speech_seconds(detect_speech(wav))
        if not (wav.dtype == np.float32 and wav.ndim == 1 and np.isfinite(wav).all()):
            problems.append(f"{row['path']}: not finite float32 mono")
        if abs(seconds - float(row["duration_s"])) > 0.05 or speech <= 0.5:
            problems.append(f"{row['path']}: {seconds:.2f} s long, {speech:.2f} s of speech")
        fractions.append(speech / seconds)
    per_file = (time.perf_counter() - start) / len(rows)
    fractions = np.array(fractions)
    plausible = np.mean((fractions >= 0.2) & (fractions <= 1.0))
    print(
        f"\nspeechocean762: {len(rows)} files, {per_file * 1000:.1f} ms per file, "
        f"median speech fraction {np.median(fractions):.2f}, {plausible:.1%} within 20-100 %, "
        f"refused for too little speech: {too_little_speech}"
    )
    assert not problems, f"{len(problems)} problems, e.g. {problems[:5]}"
    assert len(too_little_speech) <= len(rows) / 1000
    assert plausible >= 0.95


# ---------------------------------------------------------------------- band (phone line or not)
def test_high_band_db_of_white_noise_is_flat_and_a_phone_line_removes_it():
    """White noise has the same power per Hz in every band: about 0 dB. Through an 8 kHz phone line
    (train.augment.telephone) nothing is left above 4 kHz: far below the app's -60 dB mark."""
    from speakerdemo.conditions import PHONE_BAND_DB
    from train.augment import telephone

    noise = white_noise(3.0, 0.1)
    everywhere = np.ones(len(noise) // 160 + 1, dtype=bool)
    assert high_band_db(noise, SR, everywhere) == pytest.approx(0.0, abs=0.5)
    for mu_law in (False, True):
        assert high_band_db(telephone(noise, SR, mu_law=mu_law), SR, everywhere) < PHONE_BAND_DB - 10


def test_high_band_db_measures_the_speech_frames_only():
    """A 1 kHz tone (marked speech) then white noise (not speech): only the tone is measured, and a
    tone has no power above 4 kHz; with every frame marked, the noise brings it back near 0 dB."""
    t = np.arange(2 * SR) / SR
    clip = np.concatenate([0.1 * np.sin(2 * np.pi * 1000 * t), white_noise(2.0, 0.1)]).astype(np.float32)
    mask = np.zeros(len(clip) // 160 + 1, dtype=bool)
    mask[: 2 * SR // 160 - 10] = True
    assert high_band_db(clip, SR, mask) < -80
    assert high_band_db(clip, SR, np.ones_like(mask)) > -10
    assert high_band_db(clip, SR, np.zeros_like(mask)) > -10  # no speech found: every frame counts


def test_high_band_db_below_the_band():
    assert high_band_db(white_noise(1.0, 0.1), 8000, np.ones(101, dtype=bool)) == -np.inf


def test_level_range_of_steady_noise_is_small_and_of_words_with_pauses_large():
    """White noise at one level: frame energies within a few dB. A tone in bursts with digital
    silence between: the bursts (0.1 RMS, -20 dB) against the silent frames' floor (-120 dB)."""
    assert analyse_speech(white_noise(3.0, 0.1), SR)[1] < 3.0
    t = np.arange(SR // 2) / SR
    burst = (0.1 * np.sqrt(2) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    words = np.concatenate([burst, silence(0.5)] * 3)
    assert analyse_speech(words, SR)[1] == pytest.approx(100.0, abs=1.0)
