"""speakerdemo.evidence: the SNR estimate by hand, and on real speech (speechocean762 test-split
speakers, conftest's ``speech_clips``) which stretches of two clips agree, a clip holding two
voices, and the cohesion of a speaker's enrolment clips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from speakerdemo.audio import SAMPLE_RATE, AudioError, load_audio
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.evidence import SNR_RANGE_DB, clip_evidence, cohesion, snr_db, window_map

HOP = SAMPLE_RATE // 100  # the VAD's 10-ms frames


@pytest.fixture(scope="module")
def encoder(trained_checkpoint: Path) -> SpeakerEncoder:
    return SpeakerEncoder.from_pretrained(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def wavs(speech_clips: dict[str, list[Path]]) -> dict[str, list[np.ndarray]]:
    return {s: [load_audio(p, max_seconds=None) for p in paths] for s, paths in speech_clips.items()}


def joined(*parts: np.ndarray) -> np.ndarray:
    pause = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    return np.concatenate([x for p in parts for x in (p, pause)][:-1])


# ---------------------------------------------------------------------- SNR
def test_snr_by_hand():
    """1 s of pause at power 1e-4, 1 s of 'speech' at power 1e-2: (1e-2 - 1e-4) / 1e-4 = 99, 19.96 dB."""
    pause = np.full(SAMPLE_RATE, 0.01)
    speech = np.tile([0.1, -0.1], SAMPLE_RATE // 2)
    mask = np.r_[np.zeros(100, bool), np.ones(100, bool), False]
    assert snr_db(np.r_[pause, speech], SAMPLE_RATE, mask) == pytest.approx(10 * math.log10(99), abs=1e-6)


def test_snr_ends_of_the_range():
    speech = np.tile([0.1, -0.1], SAMPLE_RATE // 2)
    mask = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    assert snr_db(np.r_[np.zeros(SAMPLE_RATE), speech], SAMPLE_RATE, mask) == SNR_RANGE_DB[1]  # digital silence
    assert snr_db(np.r_[np.zeros(SAMPLE_RATE), speech], SAMPLE_RATE, np.zeros(200, bool)) == SNR_RANGE_DB[0]
    with pytest.raises(ValueError, match="shorter than one"):
        snr_db(np.zeros(10), SAMPLE_RATE)


def test_snr_falls_as_noise_is_added(wavs):
    clean = next(iter(wavs.values()))[0]
    noise = np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    level = np.sqrt(np.mean(clean**2))
    estimates = [snr_db(clean + level * k * noise, SAMPLE_RATE) for k in (0.03, 0.1, 0.3)]
    # The noise at k = 0.3 lies 10.5 dB below the clip's mean level, pauses included; speech is louder.
    assert estimates[0] > estimates[1] > estimates[2] and estimates[2] < 15


# ---------------------------------------------------------------------- real speech
def test_two_voices_are_told_from_one(encoder, wavs):
    """Two clips of one speaker joined: one voice; of two speakers (each pair of the three): two."""
    a, b, c = wavs.values()
    for speaker in (a, b, c):
        found = clip_evidence(encoder, joined(speaker[0], speaker[1]))
        assert not found.two_voices and not any("two voices" in w for w in found.warnings())
    for first, second in ((a, b), (a, c), (b, c)):
        found = clip_evidence(encoder, joined(first[0], second[0]))
        assert found.two_voices and any("two voices" in w for w in found.warnings())


def test_quality_of_a_clean_clip_and_a_noisy_one(encoder, wavs):
    clean = next(iter(wavs.values()))[0]
    found = clip_evidence(encoder, clean)
    assert not found.phone_band and found.clipped_fraction == 0.0 and found.snr_db > 20
    assert found.speech_seconds == pytest.approx(found.windows.speech_seconds) and found.warnings() == []
    noisy = clean + 0.3 * np.sqrt(np.mean(clean**2)) * np.random.default_rng(1).standard_normal(len(clean))
    assert any(w.startswith("Noisy") for w in clip_evidence(encoder, noisy.astype(np.float32)).warnings())


def test_window_map_agrees_more_for_one_speaker(encoder, wavs):
    a, b, _ = wavs.values()
    windows = {k: clip_evidence(encoder, w).windows for k, w in (("a0", a[0]), ("a1", a[1]), ("b0", b[0]))}
    same = window_map(encoder, windows["a0"], windows["a1"])
    other = window_map(encoder, windows["a0"], windows["b0"])
    assert same.scores.shape == (len(windows["a0"].spans), len(windows["a1"].spans))
    assert same.agreeing_share > 0.5 > other.agreeing_share
    assert same.times_a.tolist() == windows["a0"].centres.tolist()


def test_clip_evidence_refuses_silence(encoder):
    with pytest.raises(AudioError, match="speech"):
        clip_evidence(encoder, np.zeros(3 * SAMPLE_RATE, dtype=np.float32))


def test_cohesion_flags_the_clip_of_another_speaker(encoder, wavs):
    a, b, _ = wavs.values()
    vectors = [encoder.embed((SAMPLE_RATE, w)).vector for w in (a[0], a[1], a[2], b[0])]
    scores = cohesion(encoder, vectors)
    assert np.argmin(scores) == 3 and scores[3] < encoder.threshold < scores[:3].min()
    # Against clips already enrolled: the same verdicts with the speaker's clips in the gallery.
    enrolled = np.stack(vectors[:2])
    assert (cohesion(encoder, vectors[2:], enrolled) < encoder.threshold).tolist() == [False, True]
    assert np.isnan(cohesion(encoder, vectors[:1])).all()  # a first clip alone has nothing to agree with
