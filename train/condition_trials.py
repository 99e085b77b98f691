"""Trials between speakers a recipe never trained on, in each recording condition of
:mod:`speakerdemo.conditions`: the dev set ``python -m train calibrate`` chooses a threshold on,
and the test set ``benchmarks/generalisation.py`` reports.

The speakers are those a recipe holds out (``hold_out_speakers``, drawn exactly as ``fit`` draws
them), each speaker's recording cut into segments; every pair of segments is a trial. The held-out
speakers are split in two halves (:func:`dev_test_split`): calibration sees the dev half only, and
the suite measures what the shipped threshold does on pairs of the test half only.

- ``16 kHz``: non-overlapping 3-s segments.
- ``8 kHz``: the same segments through an 8 kHz phone line (:func:`train.augment.telephone`).
- ``1-2 s``: non-overlapping segments of 1 to 2 s (lengths drawn with a fixed seed).
- ``5 x 1 s words``: five consecutive 1-s pieces joined by 0.2-0.6 s pauses of quiet noise, like
  a user saying a few words into a microphone.
- ``noise + reverb``: the 3-s segments in a simulated room (pyroomacoustics) with coloured noise
  at 5-15 dB SNR (``train.augment``'s own functions, seeded).

Clips the app would refuse (silent, or under 0.5 s of detected speech: a pause cut out of a
recording) are left out of every condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speakerdemo.audio import MIN_SPEECH_SECONDS, SAMPLE_RATE, AudioError, load_audio
from speakerdemo.conditions import NOISY, PHONE, SHORT, WIDEBAND, WORDS

from .augment import coloured_noise, mix_at_snr, simulate_rirs, telephone
from .config import load_config
from .data import DataError, Utterance
from .prepare import load_source
from .trials import SegmentTrials

SEGMENT_SECONDS = 3.0
SHORT_SECONDS = (1.0, 2.0)
WORD_COUNT, WORD_SECONDS, PAUSE_SECONDS = 5, 1.0, (0.2, 0.6)
PAUSE_LEVEL = 1e-3  # pause noise RMS relative to the speech's: -60 dB, a quiet room
SNR_DB = (5.0, 15.0)
ROOMS = 50
SEED = 0


def held_out(recipe: Path, corpus: Path) -> list[Utterance]:
    """The recordings of ``corpus`` that ``recipe`` keeps out of training, in manifest order."""
    cfg = load_config(recipe, [])
    for spec in cfg["data"]["sources"]:
        if spec.get("hold_out_speakers") and Path(spec["root"]).resolve() == corpus.resolve():
            return [Utterance(u.speaker, u.path, u.split, str(corpus)) for u in load_source(spec, cfg["seed"])[1]]
    raise DataError(f"{recipe} holds out no speakers of {corpus}.")


def dev_test_split(speakers: Sequence[str]) -> tuple[set[str], set[str]]:
    """(dev, test): every other speaker in sorted order, so that both halves are fixed and alike."""
    ordered = sorted(set(speakers))
    return set(ordered[0::2]), set(ordered[1::2])


def accepted(wav: np.ndarray) -> bool:
    """Whether the app would score this clip: not silent, at least MIN_SPEECH_SECONDS of speech.

    A 1-s piece of a recording can be a pause; the app answers such a clip with an error, not a
    score, so it is no trial of what users meet.
    """
    try:
        load_audio((SAMPLE_RATE, wav), SAMPLE_RATE, max_seconds=None, min_speech_seconds=MIN_SPEECH_SECONDS)
    except AudioError:
        return False
    return True


def cut(wav: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    """Consecutive, non-overlapping pieces of ``wav`` of the given lengths, as many as fit."""
    pieces, start = [], 0
    for n in lengths:
        if start + n > len(wav):
            break
        pieces.append(wav[start : start + n])
        start += n
    return pieces


def words(wav: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Clips of ``WORD_COUNT`` consecutive 1-s pieces of ``wav`` joined by pauses of quiet noise."""
    piece = int(WORD_SECONDS * SAMPLE_RATE)
    pieces = cut(wav, [piece] * (len(wav) // piece))
    level = PAUSE_LEVEL * float(np.sqrt(np.mean(wav**2)))
    clips = []
    for first in range(0, len(pieces) - WORD_COUNT + 1, WORD_COUNT):
        parts = [pieces[first]]
        for p in pieces[first + 1 : first + WORD_COUNT]:
            pause = int(rng.uniform(*PAUSE_SECONDS) * SAMPLE_RATE)
            parts += [(level * rng.standard_normal(pause)).astype(np.float32), p]
        clips.append(np.concatenate(parts))
    return clips


def noisy_reverberant(segments: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each segment in a simulated room, plus coloured noise at a random SNR in ``SNR_DB``."""
    rng = np.random.default_rng(seed)
    rirs = simulate_rirs(ROOMS, SAMPLE_RATE, seed)
    out = []
    for wav in segments:
        rir = rirs[int(rng.integers(len(rirs)))]
        delay = int(np.argmax(np.abs(rir)))
        wet = np.convolve(wav, rir)[delay : delay + len(wav)]
        noisy = mix_at_snr(wet, coloured_noise(len(wav), rng), rng.uniform(*SNR_DB))
        out.append((0.5 * noisy / max(float(np.max(np.abs(noisy))), 1e-6)).astype(np.float32))
    return out


def condition_trials(utts: Sequence[Utterance], max_speakers: int | None = None) -> dict[str, SegmentTrials]:
    """Every condition's trials on the recordings ``utts`` (of at most ``max_speakers`` speakers)."""
    rng = np.random.default_rng(SEED)
    speakers = sorted({u.speaker for u in utts}, key=[u.speaker for u in utts].index)[:max_speakers]
    segment = int(SEGMENT_SECONDS * SAMPLE_RATE)
    kinds: dict[str, SegmentTrials] = {k: SegmentTrials([], []) for k in (WIDEBAND, SHORT, WORDS)}
    for u in (u for u in utts if u.speaker in speakers):
        wav = load_audio(u.file, SAMPLE_RATE, max_seconds=None, min_speech_seconds=0.0, max_bytes=None)
        short = [int(rng.uniform(*SHORT_SECONDS) * SAMPLE_RATE) for _ in range(len(wav) // SAMPLE_RATE)]
        for kind, clips in (
            (WIDEBAND, cut(wav, [segment] * (len(wav) // segment))),
            (SHORT, cut(wav, short)),
            (WORDS, words(wav, rng)),
        ):
            clips = [c for c in clips if accepted(c)]
            kinds[kind].speakers.extend([u.speaker] * len(clips))
            kinds[kind].segments.extend(clips)
    base = kinds[WIDEBAND]
    return {
        WIDEBAND: base,
        PHONE: SegmentTrials(base.speakers, [telephone(w, SAMPLE_RATE, mu_law=False) for w in base.segments]),
        SHORT: kinds[SHORT],
        WORDS: kinds[WORDS],
        NOISY: SegmentTrials(base.speakers, noisy_reverberant(base.segments, SEED)),
    }
