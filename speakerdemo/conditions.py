"""The recording conditions a threshold is calibrated on, and which of them a pair of clips is like.

One threshold means different things for different clips: strangers on a phone line, in a noisy
room or in a long clip with pauses score closer together on the cosine than in clean 3-s speech.
``python -m train calibrate --cohort`` (how the shipped checkpoint is calibrated) measures the
threshold in each of ``CONDITIONS``, on scores normalised against a score cohort that holds every
condition (:mod:`speakerdemo.cohort`), so that one threshold serves all, and the checkpoint keeps
what that threshold means in each condition (false accepts and rejects).

This module tells the kinds of clip apart as the app can (``DETECTED``: by band, from
:attr:`Embedding.high_band_db`, by noise, from :attr:`Embedding.level_range_db`, by length and by
seconds of speech), so that the app reads out the rates of the condition a user's pair is like,
and every pair of a calibration condition counts under the kind the app detects it as. A
checkpoint calibrated before the cohort (``python -m train calibrate`` without ``--cohort``) also
keeps a score shift per detected kind, subtracted from the cosine of a pair of that kind; with a
cohort no kind is shifted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .cohort import Cohort
from .encoder import Embedding, SpeakerEncoder
from .scoring import cosine, snorm

WIDEBAND = "16 kHz"
PHONE = "8 kHz"
SHORT = "1-2 s"
WORDS = "5 x 1 s words"
NOISY = "noise + reverb"
CONDITIONS = (WIDEBAND, PHONE, SHORT, WORDS, NOISY)
DETECTED = (WIDEBAND, PHONE, NOISY, SHORT, WORDS)  # the kinds of clip pair_conditions tells apart
# How the app describes each condition to a user.
DESCRIPTIONS = {
    WIDEBAND: "wideband clips under 4 s long with 2 s of speech or more",
    PHONE: "phone-band clips, 8 kHz or through a phone line",
    SHORT: "clips under 4 s long with under 2 s of speech",
    WORDS: "wideband clips of 4 s or longer",
    NOISY: "noisy clips, with little level between speech and background",
}
# Below this a clip was band-limited to a phone line somewhere: wideband speech measures -15 to
# -38 dB, the same clips through an 8 kHz line -94 dB and below, white noise through it -65 dB
# (speakerdemo.audio.high_band_db); the mark sits between, nearer the wideband side.
PHONE_BAND_DB = -50.0
# Less speech than this in either clip and the pair is of the short kind (the 1-2 s condition): every
# 1-2 s LibriSpeech segment has less; of the 3-s segments 17 % have less (median 2.45 s of speech),
# of 2.5 s more than half. The app also warns under 2 s of speech (ui.MIN_RELIABLE_SPEECH).
SHORT_SPEECH_SECONDS = 2.0
# Under this level range (speakerdemo.audio.analyse_speech) a clip is noisy: 73 % of 3-s LibriSpeech
# segments in a simulated noisy room (5-15 dB SNR) and 9 % of the clean ones; no speechocean762 or
# wake-word recording of 150 each.
NOISY_RANGE_DB = 28.0
# Both clips this long and the pair is of the long kind (the five 1-s words condition: 5.8-7.4 s
# clips; the 3-s segments are 3 s), whatever the VAD found in them: the longer the recordings, the
# closer strangers score, and the words of the dev speakers set a threshold far above their 3-s
# segments' for the same false accepts. Length, not seconds of speech: of the dev half's words
# pairs, the 47 where the VAD found under 3 s of speech in one clip still score like words (59 % of
# their strangers pass the 3-s segments' threshold); counted by speech they took the lower one.
# A long clip with little speech thus meets the higher threshold: the cautious side.
LONG_CLIP_SECONDS = 4.0


def is_phone_band(embedding: Embedding) -> bool:
    """Whether the clip carries nothing above a phone line's cut-off."""
    return embedding.high_band_db < PHONE_BAND_DB


def is_noisy(embedding: Embedding) -> bool:
    """Whether background noise or reverberation fills the clip's pauses."""
    return embedding.level_range_db < NOISY_RANGE_DB


def pair_conditions(embeddings: Sequence[Embedding], first: ArrayLike, second: ArrayLike) -> np.ndarray:
    """The kind of clip (one of ``DETECTED``) of each pair (``embeddings[first[i]]``,
    ``embeddings[second[i]]``): the harder one of its two clips.

    The band comes first, then noise, then the shorter clip's length, then its seconds of speech:
    a phone-band clip against a wideband one still scores like the phone condition, and a noisy
    one like the noisy condition. Each clip is measured once, so that every pair of a trial list
    is cheap.
    """
    phone = np.array([is_phone_band(e) for e in embeddings])
    noisy = np.array([is_noisy(e) for e in embeddings])
    speech = np.array([e.speech_seconds for e in embeddings])
    length = np.array([e.duration_seconds for e in embeddings])
    i, j = np.asarray(first), np.asarray(second)
    kinds = np.where(np.minimum(speech[i], speech[j]) < SHORT_SPEECH_SECONDS, SHORT, WIDEBAND)
    kinds = np.where(np.minimum(length[i], length[j]) >= LONG_CLIP_SECONDS, WORDS, kinds)
    kinds = np.where(noisy[i] | noisy[j], NOISY, kinds)
    return np.where(phone[i] | phone[j], PHONE, kinds)


def pair_condition(a: Embedding, b: Embedding) -> str:
    """The kind of clip of one verify pair (:func:`pair_conditions`)."""
    return str(pair_conditions([a, b], [0], [1])[0])


def clip_condition(embedding: Embedding) -> str:
    """The kind of one clip (identification: a query against enrolled speakers)."""
    return pair_condition(embedding, embedding)


# ---------------------------------------------------------------------- scores as the app decides on them
# The web app (speakerdemo.ui) and the command line (speakerdemo.cli) both decide with these, so
# that one pair or query gets the same score, and so the same answer, wherever it is asked.
def kind_shift(encoder: SpeakerEncoder, kind: str) -> float:
    """The score shift of ``encoder``'s calibration for a kind of clip: 0 without a calibration,
    for a kind without a shift, and with a cohort (which calibrates without shifts)."""
    return encoder.calibration.shifts.get(kind, 0.0) if encoder.calibration is not None else 0.0


def pair_score(encoder: SpeakerEncoder, a: Embedding, b: Embedding) -> tuple[str, float]:
    """A verify pair's kind of clip (:func:`pair_condition`) and the score that meets
    ``encoder.threshold``: :meth:`SpeakerEncoder.score` less the shift for that kind."""
    kind = pair_condition(a, b)
    return kind, encoder.score(a, b) - kind_shift(encoder, kind)


def score_matrix(encoder: SpeakerEncoder, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) scores of every row of ``a`` against every row of ``b`` (unit vectors), as
    :meth:`SpeakerEncoder.pair_scores` makes each: :func:`cohort_matrix` on the checkpoint's cohort."""
    return cohort_matrix(encoder.cohort, a, b)


def cohort_matrix(cohort: Cohort | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) cosines normalised against ``cohort`` (plain cosines without one); one
    matrix product, each vector meeting the cohort once. Calibrating on a user's people scores
    against cohorts that leave some of them out, hence the cohort as an argument."""
    cos = np.atleast_2d(cosine(a, b))
    if cohort is None:
        return cos
    (ma, sa), (mb, sb) = cohort.stats(a), cohort.stats(b)
    return snorm(cos, (ma[:, None], sa[:, None]), (mb[None, :], sb[None, :]))


def gallery_scorer(encoder: SpeakerEncoder, shift: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``Gallery.rank``'s ``score`` for a query whose kind of clip has ``shift``: the checkpoint's
    scores of the query against each centroid (normalised against its cohort when it has one), less
    the shift, so that an open-set query meets the threshold on the footing a verify pair does."""

    def score(query: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        return score_matrix(encoder, np.atleast_2d(query), centroids)[0] - shift

    return score
