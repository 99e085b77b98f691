"""Bad audio, generated at scale: hypothesis feeds random arrays and random or damaged files to
``load_audio``, ``SpeakerEncoder.embed`` and the app's handlers (``Demo.inspect``, ``Demo.verify``).

Every case must end in a result or in the one documented refusal (``AudioError``; ``gr.Error`` in
the app) with a message: never another exception, never a hang (each call runs under a hard
alarm, each example under hypothesis' deadline), never a NaN in a vector or a score.

Arrays: lengths 0 to 10 minutes; int8/int16/int32/float32/float64; 1-8 channels in either
orientation; 1 kHz to 192 kHz (rates outside 4-192 kHz must be refused); silence, DC, white noise,
voiced signals, clipping, NaN/inf, huge and tiny values. Materialised arrays hold at most
``MAX_MATERIALISED`` samples; longer ones are zero-copy broadcast views whose duration is over the
limit, so they also prove that the length is refused from the shape, before any sample is touched
(and never resampled: ``soxr.resample`` is watched).

Files: wav (5 sample formats), flac, ogg/vorbis, ogg/opus and mp3 written with soundfile, then
truncated, bit-flipped, overwritten, spliced with another container, prefixed with garbage, or
given lying size fields; each goes in as bytes and as a file path (which adds librosa's fallback).

``FUZZ_SCALE`` (environment) multiplies every ``max_examples`` for a longer run, and
``HYPOTHESIS_PROFILE=explore`` draws from a random seed instead of the suite's fixed one (see
conftest.py); each test prints how many cases it tried (``pytest -s`` or the captured output shows it).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from conftest import tiny_encoder, voiced
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import speakerdemo.audio as audio_module
from speakerdemo.app_state import Models
from speakerdemo.audio import MAX_SECONDS, SAMPLE_RATE, AudioError, load_audio
from speakerdemo.conditions import DETECTED
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.ui import Demo, Session

SR = SAMPLE_RATE
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
MAX_MATERIALISED = 3_000_000
"""Samples (frames x channels) of the largest array actually allocated: 24 MB as float64."""
HARD_TIMEOUT_S = 60.0
"""A call that runs longer than this is a hang, whatever the machine's load."""
DTYPES = [np.int8, np.int16, np.int32, np.float32, np.float64]
COMMON_RATES = [1000, 2000, 3999, 4000, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000]
CONTENTS = [
    "silence",
    "dc",
    "noise",
    "voiced",
    "voiced",
    "voiced",
    "clipped",
    "clipped",
    "quiet",
    "nan",
    "inf",
    "huge",
    "denormal",
]  # voiced and clipped signals twice as likely: they are the ones that get past validation


def examples(n: int) -> int:
    return max(1, round(n * SCALE))


def fuzz_settings(n: int, deadline_s: float) -> settings:
    return settings(
        max_examples=examples(n),
        deadline=deadline_s * 1000,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


class Hang(Exception):
    """Raised by the alarm when a call exceeds HARD_TIMEOUT_S."""


@contextlib.contextmanager
def hard_timeout(seconds: float = HARD_TIMEOUT_S) -> Iterator[None]:
    """SIGALRM after ``seconds``; a C loop that never returns to Python is caught by faulthandler
    (see the ``watchdog`` fixture), which dumps every stack and ends the run."""

    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"call still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    import faulthandler

    faulthandler.dump_traceback_later(600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@dataclass
class Tally:
    """Outcomes of one fuzz test, printed at its end."""

    name: str
    outcomes: Counter

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def report(self, capsys: pytest.CaptureFixture) -> None:
        detail = ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common())
        with capsys.disabled():
            print(f"\n[fuzz] {self.name}: {self.total} cases tried ({detail})")


def refused(tally: Tally, err: Exception, what: str = "AudioError") -> str:
    """Check a refusal's message and count it; returns the message."""
    text = err.message if isinstance(err, gr.Error) else str(err)
    what = "gr.Error" if isinstance(err, gr.Error) else what
    assert isinstance(text, str) and text.strip(), f"{what} without a message"
    assert "Traceback" not in text
    tally.add(what)
    return text


@dataclass
class Outcome:
    result: Any = None
    message: str | None = None  # set when the call was refused the documented way


def outcome(call: Callable[[], Any], tally: Tally, refusal: type[Exception] = AudioError) -> Outcome:
    """Run ``call`` under the hard timeout; any exception but ``refusal`` fails the test."""
    try:
        with hard_timeout():
            return Outcome(result=call())
    except refusal as err:
        return Outcome(message=refused(tally, err, refusal.__name__))


# ----------------------------------------------------------------------------- arrays
def voice(n: int, sample_rate: float, rng: np.random.Generator) -> np.ndarray:
    """conftest's ``voiced``, ``n`` samples long at a 100-250 Hz pitch drawn from ``rng``: float64, peak 1."""
    f0 = rng.uniform(100, 250)
    return voiced(n / sample_rate, f0=f0, sample_rate=sample_rate, peak=1.0, seed=rng).astype(np.float64)


def _signal(content: str, n: int, channels: int, sample_rate: float, rng: np.random.Generator) -> np.ndarray:
    """(n, channels) float64 signal of the given kind, mostly in [-1, 1]."""
    if content == "silence":
        x = np.zeros((n, channels))
    elif content == "dc":
        x = np.full((n, channels), rng.uniform(-1, 1))
    elif content == "noise":
        x = rng.standard_normal((n, channels)) * rng.uniform(0.01, 0.5)
    elif content == "quiet":
        x = voice(n, sample_rate, rng)[:, None].repeat(channels, 1) * 10 ** rng.uniform(-6, -2)
    else:
        x = voice(n, sample_rate, rng)[:, None] * rng.uniform(0.3, 0.9, channels)
        if content == "clipped":
            x = np.clip(x * rng.uniform(3, 30), -1, 1)
        elif content == "huge":
            x = x * 10 ** rng.uniform(3, 300)
        elif content == "denormal":
            x = x * 1e-310
    if content in ("nan", "inf") and n:
        bad = rng.integers(0, n * channels, size=int(rng.integers(1, 8)))
        x.reshape(-1)[bad] = np.nan if content == "nan" else rng.choice([np.inf, -np.inf])
    return x


def _as_dtype(x: np.ndarray, dtype: type) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            scaled = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        return np.clip(np.round(scaled * info.max), info.min, info.max).astype(dtype)
    with np.errstate(over="ignore"):
        return x.astype(dtype)


@dataclass
class ArrayCase:
    sample_rate: int
    array: np.ndarray
    seconds: float
    content: str
    view: bool  # a zero-copy broadcast view (over-long, never materialised)

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return (
            f"ArrayCase(sr={self.sample_rate}, shape={self.array.shape}, dtype={self.array.dtype}, "
            f"seconds={self.seconds:.3f}, content={self.content}, view={self.view})"
        )


@st.composite
def array_cases(draw: st.DrawFn, max_accepted_seconds: float = 70.0) -> ArrayCase:
    dtype = draw(st.sampled_from(DTYPES))
    channels = draw(st.integers(1, 8))
    sample_rate = draw(st.one_of(st.sampled_from(COMMON_RATES), st.integers(1000, 192000)))
    seconds = draw(
        st.one_of(
            st.floats(0, 4),  # most cases: short clips
            st.integers(0, 40).map(lambda n: n / 1000),  # a few samples to 40 ms
            st.floats(4, max_accepted_seconds),  # up to (a little over) the limit
            st.floats(MAX_SECONDS, 600),  # over-long, up to 10 minutes
        )
    )
    content = draw(st.sampled_from(CONTENTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frames = int(seconds * sample_rate)
    view = False
    if frames * channels > MAX_MATERIALISED:
        if seconds > MAX_SECONDS:
            view = True  # refused from its shape, so it need not exist
        else:
            frames = MAX_MATERIALISED // channels
    if view:
        value = _as_dtype(np.array([rng.uniform(-0.5, 0.5)]), dtype)[0]
        samples = np.broadcast_to(value, (frames, channels))
        content = "dc view"
    else:
        samples = _as_dtype(_signal(content, frames, channels, sample_rate, rng), dtype)
    layout = draw(st.sampled_from(["frames-first", "channels-first"] + (["1-D"] if channels == 1 else [])))
    if layout == "1-D":
        samples = samples[:, 0]
    elif layout == "channels-first":
        samples = samples.T
    return ArrayCase(sample_rate, samples, frames / sample_rate, content, view)


@contextlib.contextmanager
def resample_watch() -> Iterator[list[int]]:
    """Lengths of every input soxr.resample gets during the block."""
    calls: list[int] = []
    real = audio_module.soxr.resample

    def spy(x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(len(x))
        return real(x, *args, **kwargs)

    audio_module.soxr.resample = spy
    try:
        yield calls
    finally:
        audio_module.soxr.resample = real


def check_wav(wav: np.ndarray) -> None:
    assert isinstance(wav, np.ndarray) and wav.dtype == np.float32 and wav.ndim == 1
    assert wav.flags.c_contiguous and np.isfinite(wav).all()


def expected_refusal(case: ArrayCase) -> str | None:
    """The refusal an array must get whatever its content, or None when it may be accepted."""
    if not 4000 <= case.sample_rate <= 192000:
        return "Unsupported sample rate"
    if case.array.size == 0:
        return "empty"
    if case.seconds > MAX_SECONDS and (case.array.ndim == 1 or max(case.array.shape) / case.sample_rate > MAX_SECONDS):
        return "limit is 60 s"
    return None


def test_load_audio_never_fails_on_random_arrays(capsys: pytest.CaptureFixture) -> None:
    tally = Tally("load_audio on random arrays", Counter())

    @fuzz_settings(400, deadline_s=20)
    @given(case=array_cases(), min_speech=st.sampled_from([0.0, 0.5]))
    def check(case: ArrayCase, min_speech: float) -> None:
        start = time.perf_counter()
        with resample_watch() as resampled:
            got = outcome(lambda: load_audio((case.sample_rate, case.array), min_speech_seconds=min_speech), tally)
        must = expected_refusal(case)
        if got.message is None:
            assert must is None, f"accepted although it should be refused ({must})"
            check_wav(got.result)
            tally.add("result")
        elif must is not None:
            assert must in got.message
        if case.view:  # refused from the shape alone: no sample was read, so it is instant
            assert time.perf_counter() - start < 1.0
        if case.seconds > MAX_SECONDS:
            assert resampled == [], "an over-long clip was resampled before it was refused"

    check()
    tally.report(capsys)
    assert tally.total >= examples(400) and tally.outcomes["result"] > 0 and tally.outcomes["AudioError"] > 0


def test_over_long_arrays_are_refused_from_their_shape_before_resampling() -> None:
    """Ten minutes at 192 kHz in 8 channels is 922 M samples: refused in well under a second, without
    reading a sample (the array is a broadcast view of one value) and without calling soxr."""
    cases = [
        ("The clip is 600.0 s long", (192000, np.broadcast_to(np.int32(7), (600 * 192000, 8)))),
        ("The clip is 600.0 s long", (192000, np.broadcast_to(np.float64(0.1), (8, 600 * 192000)))),
        ("The clip is 61.0 s long", (4000, voice(61 * 4000, 4000, np.random.default_rng(0)).astype(np.float32))),
    ]
    for words, source in cases:
        start = time.perf_counter()
        with resample_watch() as resampled, pytest.raises(AudioError, match=words):
            load_audio(source)
        assert time.perf_counter() - start < 1.0 and resampled == []


@pytest.fixture(scope="module")
def small_encoder() -> SpeakerEncoder:
    return tiny_encoder(32)


def check_embedding(encoder: SpeakerEncoder, emb: Any) -> None:
    assert emb.vector.shape == (encoder.model.embed_dim,) and np.isfinite(emb.vector).all()
    assert abs(float(np.linalg.norm(emb.vector)) - 1.0) < 1e-3
    assert np.isfinite(emb.attention).all() and abs(float(emb.attention.sum()) - 1.0) < 1e-3
    assert math.isfinite(emb.speech_seconds) and math.isfinite(emb.duration_seconds)
    score = encoder.score(emb, emb)
    assert math.isfinite(score) and abs(score - 1.0) < 1e-3


def test_embed_never_fails_on_random_arrays(small_encoder: SpeakerEncoder, capsys: pytest.CaptureFixture) -> None:
    tally = Tally("SpeakerEncoder.embed on random arrays", Counter())

    @fuzz_settings(300, deadline_s=30)
    @given(case=array_cases(max_accepted_seconds=30.0), min_speech=st.sampled_from([0.0, 0.5]))
    def check(case: ArrayCase, min_speech: float) -> None:
        got = outcome(lambda: small_encoder.embed(case.array, case.sample_rate, min_speech_seconds=min_speech), tally)
        must = expected_refusal(case)
        if got.message is None:
            assert must is None, f"accepted although it should be refused ({must})"
            check_embedding(small_encoder, got.result)
            tally.add("result")
        elif must is not None:
            assert must in got.message

    check()
    tally.report(capsys)
    assert tally.total >= examples(300) and tally.outcomes["result"] > 0


def test_embed_refuses_clips_too_short_for_the_front_end(small_encoder: SpeakerEncoder) -> None:
    """With ``min_speech_seconds=0`` (evaluation on fixed trial lists) nothing checks the speech, so a
    clip of a few samples reached the STFT and crashed it (RuntimeError from its reflect padding);
    one sample at 192 kHz resampled to an empty array. Both are now an AudioError."""
    for sample_rate, n in ((192000, 1), (4000, 1), (16000, 256), (8000, 3)):
        with pytest.raises(AudioError, match="too short"):
            small_encoder.embed(np.full(n, 0.5, np.float32), sample_rate, min_speech_seconds=0.0)
    emb = small_encoder.embed(np.full(257, 0.5, np.float32), SR, min_speech_seconds=0.0)
    assert np.isfinite(emb.vector).all()


@pytest.mark.parametrize("seconds", [0.05, 0.3, 0.5, 0.59, 0.61, 1.0])
def test_embed_of_speech_shorter_than_the_pooling_collar(small_encoder: SpeakerEncoder, seconds: float) -> None:
    """Found by the fuzzing above: the 0.3 s collar around speech was computed with
    ``np.convolve(mode="same")``, which returns as many entries as the 61-frame kernel when the clip
    has fewer frames, so speech clips under 0.6 s crashed with an IndexError."""
    rng = np.random.default_rng(1)
    wav = (0.5 * voice(int(seconds * SR), SR, rng)).astype(np.float32)
    emb = small_encoder.embed(wav, SR, min_speech_seconds=0.0)
    check_embedding(small_encoder, emb)
    assert emb.attention.shape == emb.speech_mask.shape == (1 + len(wav) // 160,)


# ----------------------------------------------------------------------------- the app's handlers
@pytest.fixture(scope="module")
def demo(app_checkpoint: Path) -> Demo:
    return Demo(Models(str(app_checkpoint), {}, device="cpu"))


@pytest.fixture(scope="module")
def good_clip() -> tuple[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return SR, (0.5 * voice(3 * SR, SR, rng)).astype(np.float32)


def check_verify(result: tuple, demo: Demo) -> None:
    """A Verdict, a detected kind of clip, and a finite score in the range the scoring allows: a
    cosine less at most the largest shift, or, normalised against a cohort, a cosine s in [-1, 1]
    with each clip's mean at least the floor m and spread at least the floor d, so that
    (s - mean) / spread lies in [-2 / d, (1 - m) / d]."""
    spec_a, spec_b, report, dist, verdict = result
    kind, score = verdict.kind, verdict.score
    assert verdict.decision in ("same", "different", "uncertain") and math.isfinite(verdict.llr or 0.0)
    encoder = demo.models.get(None)
    calibration, cohort = encoder.calibration, encoder.cohort
    shift = max(map(abs, calibration.shifts.values()), default=0.0) if calibration else 0.0
    if cohort is None:
        low, high = -1.001 - shift, 1.001 + shift
    else:
        low, high = -2.0 / cohort.std_floor - shift, (1.0 - cohort.mean_floor) / cohort.std_floor + shift
    assert isinstance(report, str) and report and kind in DETECTED
    assert isinstance(score, float) and math.isfinite(score) and low - 1e-6 <= score <= high + 1e-6


def test_app_handlers_never_fail_on_random_arrays(demo: Demo, good_clip: tuple, capsys: pytest.CaptureFixture) -> None:
    tally = Tally("Demo.inspect / Demo.verify on random arrays", Counter())
    session = Session(demo.models.default)

    @fuzz_settings(150, deadline_s=30)
    @given(case=array_cases(max_accepted_seconds=25.0), handler=st.sampled_from(["inspect", "verify A", "verify B"]))
    def check(case: ArrayCase, handler: str) -> None:
        clip = (case.sample_rate, case.array)
        if handler == "inspect":
            got = outcome(lambda: demo.inspect(session, clip), tally, gr.Error)
            if got.message is None:
                fig, report = got.result
                assert isinstance(report, str) and "s of speech" in report
        else:
            pair = (clip, good_clip) if handler == "verify A" else (good_clip, clip)
            got = outcome(lambda: demo.verify(session, *pair, 0.5), tally, gr.Error)
            if got.message is None:
                check_verify(got.result, demo)
        must = expected_refusal(case)
        if got.message is None:
            assert must is None, f"accepted although it should be refused ({must})"
            tally.add("result")
        elif must is not None:
            assert must in got.message

    check()
    tally.report(capsys)
    assert tally.total >= examples(150)


# ----------------------------------------------------------------------------- files
CONTAINERS = [  # (suffix, format, subtype, sample rates, channel counts)
    ("wav", "WAV", "PCM_16", (8000, 16000, 44100), (1, 2, 6)),
    ("wav", "WAV", "PCM_U8", (11025,), (1,)),
    ("wav", "WAV", "PCM_24", (48000,), (2,)),
    ("wav", "WAV", "FLOAT", (16000, 96000), (1, 8)),
    ("wav", "WAV", "ULAW", (8000,), (1,)),
    ("flac", "FLAC", "PCM_16", (16000, 44100), (1, 2)),
    ("flac", "FLAC", "PCM_24", (96000,), (6,)),
    ("ogg", "OGG", "VORBIS", (16000, 44100), (1, 2)),
    ("ogg", "OGG", "OPUS", (48000, 16000), (1, 2)),
    ("mp3", "MP3", "MPEG_LAYER_III", (16000, 44100), (1, 2)),
]


@dataclass(frozen=True)
class Encoded:
    suffix: str
    kind: str
    data: bytes


@pytest.fixture(scope="module")
def encoded_pool() -> list[Encoded]:
    """Short voiced clips in every container, written once with soundfile."""
    rng = np.random.default_rng(3)
    pool = []
    for suffix, fmt, subtype, rates, channel_counts in CONTAINERS:
        for rate in rates:
            for channels in channel_counts:
                seconds = rng.uniform(0.8, 2.0)
                x = _signal("voiced", int(seconds * rate), channels, rate, rng) * 0.5
                buffer = io.BytesIO()
                sf.write(buffer, x.astype(np.float32), rate, format=fmt, subtype=subtype)
                pool.append(Encoded(suffix, f"{fmt}/{subtype} {rate} Hz x{channels}", buffer.getvalue()))
    return pool


def _lying_sizes(data: bytearray, rng: np.random.Generator) -> bytearray:
    """Size fields that promise far more than the file holds (RIFF/data sizes, FLAC total samples)."""
    if data[:4] == b"RIFF":
        data[4:8] = struct.pack("<I", 0xFFFFFFF0)
        at = data.find(b"data")
        if at >= 0:
            data[at + 4 : at + 8] = struct.pack("<I", int(rng.integers(0, 2**32)))
    elif data[:4] == b"fLaC" and len(data) > 26:
        # STREAMINFO: the 36-bit total-samples field ends 18 bytes into the block (offset 8).
        data[21] = (data[21] & 0xF0) | 0x0F
        data[22:26] = b"\xff\xff\xff\xff"
    else:
        data[4:8] = rng.bytes(4)
    return data


@st.composite
def damaged_files(draw: st.DrawFn, pool: list[Encoded]) -> tuple[str, bytes, str]:
    """(suffix, bytes, description) of an encoded clip after one or two kinds of damage."""
    item = draw(st.sampled_from(pool))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = bytearray(item.data)
    steps = draw(
        st.lists(
            st.sampled_from(
                [
                    "intact",
                    "truncate",
                    "header-only",
                    "flip",
                    "overwrite",
                    "zero-span",
                    "garbage-prefix",
                    "splice",
                    "lying-sizes",
                    "random-bytes",
                    "empty",
                ]
            ),
            min_size=1,
            max_size=2,
        )
    )
    for step in steps:
        n = len(data)
        if step == "truncate" and n:
            data = data[: draw(st.integers(0, n - 1))]
        elif step == "header-only":
            data = data[: draw(st.sampled_from([4, 12, 36, 44, 58, 128, 512]))]
        elif step == "flip" and n:
            for at in rng.integers(0, n, size=int(rng.integers(1, 32))):
                data[at] ^= int(rng.integers(1, 256))
        elif step in ("overwrite", "zero-span") and n:
            start = int(rng.integers(0, n))
            end = min(n, start + int(rng.integers(1, 4096)))
            data[start:end] = rng.bytes(end - start) if step == "overwrite" else bytes(end - start)
        elif step == "garbage-prefix":
            data = bytearray(rng.bytes(int(rng.integers(1, 600)))) + data
        elif step == "splice":
            other = draw(st.sampled_from(pool)).data
            cut = int(rng.integers(0, max(1, min(n, 2048))))
            data = data[:cut] + bytearray(other[int(rng.integers(0, len(other))) :])
        elif step == "lying-sizes" and n >= 8:
            data = _lying_sizes(data, rng)
        elif step == "random-bytes":
            data = bytearray(rng.bytes(int(rng.integers(1, 8192))))
        elif step == "empty":
            data = bytearray()
    return item.suffix, bytes(data), f"{item.kind}: {'+'.join(steps)} -> {len(data)} bytes"


def test_load_audio_never_fails_on_damaged_files(
    encoded_pool: list[Encoded], tmp_path_factory, capsys: pytest.CaptureFixture
) -> None:
    tally = Tally("load_audio on damaged wav/flac/ogg/opus/mp3 (bytes and paths)", Counter())
    folder = tmp_path_factory.mktemp("damaged")

    @fuzz_settings(500, deadline_s=20)
    @given(
        case=damaged_files(encoded_pool),
        as_path=st.booleans(),
        wrong_suffix=st.booleans(),
        min_speech=st.sampled_from([0.0, 0.5]),
    )
    def check(case: tuple[str, bytes, str], as_path: bool, wrong_suffix: bool, min_speech: float) -> None:
        suffix, data, _ = case
        if as_path:
            source: Any = folder / f"clip.{'txt' if wrong_suffix else suffix}"
            source.write_bytes(data)
        else:
            source = data
        got = outcome(lambda: load_audio(source, min_speech_seconds=min_speech), tally)
        if got.message is None:
            check_wav(got.result)
            tally.add("result")

    check()
    tally.report(capsys)
    assert tally.total >= examples(500) and tally.outcomes["result"] > 0 and tally.outcomes["AudioError"] > 0


def test_app_handlers_never_fail_on_damaged_files(
    demo: Demo,
    encoded_pool: list[Encoded],
    good_clip: tuple,
    small_encoder: SpeakerEncoder,
    tmp_path_factory,
    capsys: pytest.CaptureFixture,
) -> None:
    """What Gradio hands the handlers for an upload: a file path. ``embed`` also gets the bytes."""
    tally = Tally("Demo.inspect / Demo.verify / embed on damaged files", Counter())
    folder = tmp_path_factory.mktemp("uploads")
    session = Session(demo.models.default)

    @fuzz_settings(150, deadline_s=30)
    @given(case=damaged_files(encoded_pool), handler=st.sampled_from(["inspect", "verify", "embed bytes"]))
    def check(case: tuple[str, bytes, str], handler: str) -> None:
        suffix, data, _ = case
        path = folder / f"upload.{suffix}"
        path.write_bytes(data)
        if handler == "embed bytes":
            got = outcome(lambda: small_encoder.embed(data), tally)
            if got.message is None:
                check_embedding(small_encoder, got.result)
        elif handler == "inspect":
            got = outcome(lambda: demo.inspect(session, str(path)), tally, gr.Error)
        else:
            got = outcome(lambda: demo.verify(session, good_clip, str(path), 0.5), tally, gr.Error)
            if got.message is None:
                check_verify(got.result, demo)
        if got.message is None:
            tally.add("result")

    check()
    tally.report(capsys)
    assert tally.total >= examples(150)
