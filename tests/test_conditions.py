"""speakerdemo.conditions: which calibrated kind of clip a pair is (band, noise, length, then speech)."""

import numpy as np
import pytest
from conftest import tiny_encoder, voiced

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.conditions import (
    CONDITIONS,
    DESCRIPTIONS,
    DETECTED,
    LONG_CLIP_SECONDS,
    NOISY,
    PHONE,
    SHORT,
    SHORT_SPEECH_SECONDS,
    WIDEBAND,
    WORDS,
    clip_condition,
    is_noisy,
    is_phone_band,
    pair_condition,
    pair_conditions,
)
from train.augment import telephone


def spoken(*seconds: float, seed: int = 0) -> np.ndarray:
    """Words of a wideband synthetic voice (harmonics plus a little white noise up to 8 kHz) of the
    given lengths, each followed by 0.3 s of silence, as a speaker pauses between words."""
    pause = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate(
        [part for i, s in enumerate(seconds) for part in (voiced(s, noise=0.05, seed=seed + i), pause)]
    )


@pytest.fixture(scope="module")
def clips():
    """Embeddings of 2.5 s of words, the same through a phone line, the same in white noise (filling
    the pauses), 1.5 s of words, 6.5 s of words, and 0.8 s of words in 5 s of silence."""
    wide = spoken(1.0, 0.8, 0.7)
    noise = 0.05 * np.random.default_rng(0).standard_normal(len(wide)).astype(np.float32)
    encoder = tiny_encoder()
    wavs = {
        "wide": wide,
        "phone": telephone(wide, SAMPLE_RATE, mu_law=False),
        "noisy": wide + noise,
        "short": spoken(0.8, 0.7, seed=5),
        "long": spoken(1.0, 1.0, 1.0, 1.0, 1.0, seed=9),
        "quiet long": np.concatenate([spoken(0.8, seed=11), np.zeros(5 * SAMPLE_RATE, dtype=np.float32)]),
    }
    return dict(zip(wavs, encoder.embed_batch([(SAMPLE_RATE, w) for w in wavs.values()])))


def test_band_noise_and_length_are_measured(clips):
    assert not is_phone_band(clips["wide"]) and is_phone_band(clips["phone"]) and not is_phone_band(clips["noisy"])
    assert not is_noisy(clips["wide"]) and is_noisy(clips["noisy"]) and not is_noisy(clips["short"])
    assert clips["long"].duration_seconds >= LONG_CLIP_SECONDS > clips["wide"].duration_seconds
    assert clips["quiet long"].duration_seconds >= LONG_CLIP_SECONDS
    assert clips["quiet long"].speech_seconds < SHORT_SPEECH_SECONDS
    assert clips["wide"].speech_seconds >= SHORT_SPEECH_SECONDS > clips["short"].speech_seconds


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        ("wide", "wide", WIDEBAND),
        ("wide", "phone", PHONE),
        ("phone", "wide", PHONE),
        ("short", "wide", SHORT),
        ("wide", "short", SHORT),
        ("short", "phone", PHONE),  # the band comes first
        ("noisy", "wide", NOISY),
        ("short", "noisy", NOISY),  # then noise
        ("noisy", "phone", PHONE),
        ("long", "long", WORDS),
        ("long", "wide", WIDEBAND),  # the shorter clip decides
        ("long", "short", SHORT),
        ("quiet long", "long", WORDS),  # length before seconds of speech: the cautious threshold
        ("quiet long", "phone", PHONE),
    ],
)
def test_a_pair_is_its_harder_clip(clips, a, b, kind):
    assert pair_condition(clips[a], clips[b]) == kind


def test_pair_conditions_of_a_trial_list_agree_with_single_pairs(clips):
    embeddings = list(clips.values())
    first, second = np.triu_indices(len(embeddings), k=1)
    kinds = pair_conditions(embeddings, first, second)
    assert list(kinds) == [pair_condition(embeddings[i], embeddings[j]) for i, j in zip(first, second)]
    assert [clip_condition(e) for e in embeddings] == [WIDEBAND, PHONE, NOISY, SHORT, WORDS, WORDS]


def test_every_condition_is_described_and_detected_kinds_are_conditions():
    assert set(DESCRIPTIONS) == set(CONDITIONS) and set(DETECTED) <= set(CONDITIONS)


def test_descriptions_read_inside_a_parenthesis():
    """The verdict names a kind inside parentheses (ui.score_words): no nested ones."""
    assert not any(c in text for text in DESCRIPTIONS.values() for c in "()")
