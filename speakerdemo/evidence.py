"""Why a score came out as it did: which stretches of two clips agree, how usable each clip is,
whether a clip holds two voices, and whether a speaker's enrolment clips agree with one another.

Everything here is measured with the parts a decision is made with: the clip's own VAD, the
windows and clustering of :mod:`speakerdemo.diarize`, and the checkpoint's scores
(:func:`speakerdemo.conditions.score_matrix`, against its calibrated threshold). The app shows it
beside a verdict; it never changes the verdict.

Windows of 1.5 s score lower together than the 3-s clips the threshold was calibrated on, so two
windows "agree" when their score clears the level at which diarization joins windows into one
voice (the threshold plus the cluster margin measured for the kind of recording), not the
threshold itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .audio import HOP_SECONDS, detect_speech
from .conditions import NOISY_RANGE_DB, PHONE_BAND_DB, score_matrix
from .diarize import SpeechWindows, cluster_windows, speech_windows
from .encoder import CLIP_LEVEL, SpeakerEncoder

__all__ = ["ClipEvidence", "WindowMap", "clip_evidence", "cohesion", "snr_db", "window_map"]

MIN_VOICE_WINDOWS = 3
"""Each of the two groups needs this many windows (about 3 s of speech) to count as a voice: with
2, a 5-s clip of one child reading single words split into groups scoring -2.9 apart."""
TWO_VOICES_MARGIN = -2.5
"""A clip holds two voices when its windows, split into the two groups average linkage finds,
score on average below the calibrated threshold plus this margin between the groups. Measured
with the shipped checkpoint (threshold 0.06) on 2026-12-06: one speaker, none flagged (the first
12 s of 40 LibriSpeech-251 utterances; 120 speechocean762 test clips of 4-8 s); two speakers
joined with 0.5 s of silence, flagged: 35 of 40 (6 s + 6 s of LibriSpeech), 23 of 30
(speechocean762 clips of 4-8 s; 6 had too few windows to split). tests/test_evidence.py checks
both sides on other clips."""
MIN_NOISE_FRAMES = 30
"""Pauses shorter than this many 10-ms frames in all are too little to measure the noise in: the
quietest tenth of the frames stands for it instead."""
SNR_RANGE_DB = (-10.0, 60.0)
"""Estimates are clipped to this range: beyond it the number says nothing more about the clip."""
LOW_SNR_DB = 10.0
"""Under this estimated SNR a clip is called noisy in its quality report."""


def snr_db(wav: np.ndarray, sample_rate: int, speech_mask: np.ndarray | None = None) -> float:
    """A signal-to-noise estimate in dB: the power of the frames the VAD calls speech, less the
    noise's, over the power of the pauses (the noise). Digital silence in the pauses reads as the
    top of SNR_RANGE_DB."""
    wav = np.asarray(wav, dtype=np.float64)
    mask = detect_speech(wav.astype(np.float32), sample_rate) if speech_mask is None else np.asarray(speech_mask)
    hop = round(sample_rate * HOP_SECONDS)
    frames = len(wav) // hop
    if frames == 0:
        raise ValueError("The clip is shorter than one 10-ms frame.")
    power = np.square(wav[: frames * hop].reshape(frames, hop)).mean(axis=1)
    speech = np.asarray(mask[:frames], dtype=bool)
    if not speech.any():
        return float(SNR_RANGE_DB[0])
    pauses = power[~speech]
    noise = pauses.mean() if len(pauses) >= MIN_NOISE_FRAMES else np.percentile(power, 10)
    signal = power[speech].mean() - noise
    if noise <= 0:
        return float(SNR_RANGE_DB[1])
    return float(np.clip(10 * np.log10(max(signal, 1e-20) / noise), *SNR_RANGE_DB))


@dataclass
class ClipEvidence:
    """How usable one clip is, measured, with the windows it was measured on."""

    speech_seconds: float
    snr_db: float
    clipped_fraction: float
    phone_band: bool
    noisy: bool  # as speakerdemo.conditions tells a noisy clip (level range)
    two_voices: bool  # see TWO_VOICES_MARGIN
    windows: SpeechWindows

    def warnings(self) -> list[str]:
        """What about the clip may make a score from it unreliable, in words, with what would help."""
        out = []
        if self.two_voices:
            out.append(
                "The clip seems to hold two voices (its stretches split into two groups that do not sound "
                "alike): cut it to one speaker."
            )
        if self.snr_db < LOW_SNR_DB or self.noisy:
            out.append(f"Noisy: speech stands only about {self.snr_db:.0f} dB above the background.")
        if self.phone_band:
            out.append("Phone-band audio (nothing above 4 kHz): strangers score closer together on it.")
        return out


def clip_evidence(encoder: SpeakerEncoder, wav: np.ndarray, clipped_fraction: float | None = None) -> ClipEvidence:
    """Quality of one clip (mono, at the encoder's sample rate) and its embedded windows.

    Raises AudioError when the clip holds too little speech to cut into windows.
    """
    windows = speech_windows(encoder, wav)
    clipped = float(np.mean(np.abs(wav) >= CLIP_LEVEL)) if clipped_fraction is None else clipped_fraction
    return ClipEvidence(
        speech_seconds=windows.speech_seconds,
        snr_db=snr_db(wav, windows.sample_rate),
        clipped_fraction=clipped,
        phone_band=windows.band_db < PHONE_BAND_DB,
        noisy=windows.level_range < NOISY_RANGE_DB,
        two_voices=_two_voices(encoder, windows),
        windows=windows,
    )


def _two_voices(encoder: SpeakerEncoder, windows: SpeechWindows) -> bool:
    """Whether the clip's windows fall into two groups, each of MIN_VOICE_WINDOWS or more, that score
    below the threshold plus TWO_VOICES_MARGIN against each other on average."""
    if len(windows.vectors) < 2 * MIN_VOICE_WINDOWS:
        return False
    groups = cluster_windows(encoder, windows, speakers=2)
    first, second = windows.vectors[groups == 1], windows.vectors[groups == 2]
    if min(len(first), len(second)) < MIN_VOICE_WINDOWS:
        return False
    return float(score_matrix(encoder, first, second).mean()) < encoder.threshold + TWO_VOICES_MARGIN


@dataclass
class WindowMap:
    """Scores of every window of clip A against every window of clip B, and the level above which
    two windows sound like one voice (``agree``)."""

    times_a: np.ndarray  # window centres (s)
    times_b: np.ndarray
    scores: np.ndarray  # (len(times_a), len(times_b))
    agree: float

    @property
    def agreeing_share(self) -> float:
        """The share of window pairs that sound like one voice."""
        return float(np.mean(self.scores >= self.agree))


def window_map(
    encoder: SpeakerEncoder, a: SpeechWindows, b: SpeechWindows, threshold: float | None = None
) -> WindowMap:
    """Which stretches of two clips agree: window-by-window scores and the level of agreement
    (``threshold``, default the checkpoint's, plus the cluster margin for the harder clip's kind)."""
    threshold = encoder.threshold if threshold is None else float(threshold)
    margin = max(a.cluster_margin, b.cluster_margin)
    return WindowMap(a.centres, b.centres, score_matrix(encoder, a.vectors, b.vectors), threshold + margin)


def cohesion(encoder: SpeakerEncoder, new: Sequence[np.ndarray], enrolled: np.ndarray | None = None) -> np.ndarray:
    """Each new enrolment vector's score against the mean of all the speaker's other clips (the
    ones already enrolled and the other new ones): a clip far below the calibrated threshold is
    another voice or a bad recording, and would pull the speaker's centroid away from them.

    NaN where a clip has nothing to be compared with (a first clip alone).
    """
    vectors = [np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for v in new]
    others = [] if enrolled is None else [np.asarray(v, dtype=np.float64) for v in enrolled]
    scores = np.full(len(vectors), np.nan)
    for i, vector in enumerate(vectors):
        rest = others + vectors[:i] + vectors[i + 1 :]
        if not rest:
            continue
        centre = np.mean(rest, axis=0)
        scores[i] = score_matrix(encoder, vector[None, :], (centre / np.linalg.norm(centre))[None, :])[0, 0]
    return scores
