"""Trials and the embeddings that score them: the library that ``python -m train evaluate``,
``calibrate``, validation during ``fit`` and the benchmarks share, so that every one of them scores
a checkpoint the same way.

Verification is scored by cosine similarity of full-length embeddings (never crops): on a trial
list of files (``FileTrials``), each file embedded once, or on every pair of fixed-length segments
of held-out speakers' clips (``SegmentTrials``), which also works for speakers with one long
recording each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.encoder import Embedding, SpeakerEncoder
from speakerdemo.scoring import cosine

from .data import Trial, safe_path

EMBED_BATCH = 16  # clips per embed_batch call (embed_batch itself bounds the frames per forward)


def embed_clips(
    encoder: SpeakerEncoder, clips: Sequence[Any], *, class_logits: bool = False, desc: str = "embedding"
) -> list[Embedding]:
    """Full-length embeddings of paths or ``(sample_rate, array)`` pairs, with a progress bar.

    No length limit and no speech minimum: a fixed trial list must score every entry, and a clip
    in which no speech is detected pools all of its frames.
    """
    out: list[Embedding] = []
    for i in tqdm(range(0, len(clips), EMBED_BATCH), desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        out += encoder.embed_batch(
            clips[i : i + EMBED_BATCH], max_seconds=None, min_speech_seconds=0.0, class_logits=class_logits
        )
    return out


def embed_arrays(encoder: SpeakerEncoder, wavs: Sequence[np.ndarray], desc: str = "segments") -> np.ndarray:
    """Embedding vectors (N, D) of waveforms at speakerdemo's sample rate."""
    return np.stack([e.vector for e in embed_clips(encoder, [(SAMPLE_RATE, w) for w in wavs], desc=desc)])


def trial_embeddings(encoder: SpeakerEncoder, trials: list[Trial], root: Path) -> dict[str, Embedding]:
    """Every file of a trial list embedded once, by its name in the list."""
    names = sorted({t.a for t in trials} | {t.b for t in trials})
    return dict(zip(names, embed_clips(encoder, [safe_path(root, n) for n in names], desc="trial files")))


def trial_scores(
    encoder: SpeakerEncoder, trials: list[Trial], root: Path, embeddings: dict[str, Embedding] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's score (:meth:`SpeakerEncoder.pair_scores`) and the label of every trial."""
    emb = embeddings if embeddings is not None else trial_embeddings(encoder, trials, root)
    names = list(emb)
    index = {name: i for i, name in enumerate(names)}
    vectors = np.stack([emb[name].vector for name in names])
    scores = encoder.pair_scores(vectors, [index[t.a] for t in trials], [index[t.b] for t in trials])
    return scores, np.array([t.label for t in trials])


class TrialSet(Protocol):
    """Verification trials that an encoder scores: (scores, labels with 1 for the same speaker)."""

    def scores(self, encoder: SpeakerEncoder) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class FileTrials:
    """A trial list over files under ``root`` (VoxCeleb format)."""

    trials: list[Trial]
    root: Path

    def scores(self, encoder: SpeakerEncoder) -> tuple[np.ndarray, np.ndarray]:
        return trial_scores(encoder, self.trials, self.root)


@dataclass
class SegmentTrials:
    """Every pair of segments is a trial, a target when both are of the same speaker."""

    speakers: list[str]
    segments: list[np.ndarray]

    @property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices (first, second) of every pair once."""
        return np.triu_indices(len(self.segments), k=1)

    @property
    def labels(self) -> np.ndarray:
        first, second = self.pairs
        ids = np.asarray(self.speakers)
        return (ids[first] == ids[second]).astype(int)

    def pairs_within(self, speakers: set[str]) -> np.ndarray:
        """Which pairs (in ``pairs`` order) are between two of ``speakers``."""
        first, second = self.pairs
        inside = np.isin(np.asarray(self.speakers), sorted(speakers))
        return inside[first] & inside[second]

    def pair_scores(self, vectors: np.ndarray) -> np.ndarray:
        """The cosine score of every pair, from one embedding vector per segment (any model's)."""
        first, second = self.pairs
        return cosine(vectors, vectors)[first, second]

    def scores(self, encoder: SpeakerEncoder) -> tuple[np.ndarray, np.ndarray]:
        """The checkpoint's score of every pair (:meth:`SpeakerEncoder.pair_scores`) and its label."""
        return encoder.pair_scores(embed_arrays(encoder, self.segments), *self.pairs), self.labels


def segment_trials(
    clips: Iterable[tuple[str, Callable[[], np.ndarray]]],
    length: int,
    per_speaker: int,
    max_speakers: int | None = None,
) -> SegmentTrials:
    """Up to ``per_speaker`` consecutive, non-overlapping segments of ``length`` samples per speaker.

    ``clips`` are ``(speaker, read)`` pairs in order; ``read`` is called only while the speaker still
    needs segments, and for at most ``max_speakers`` speakers. Clips shorter than a segment give none.
    """
    speakers: list[str] = []
    segments: list[np.ndarray] = []
    counts: dict[str, int] = {}
    for speaker, read in clips:
        if counts.get(speaker, 0) >= per_speaker:
            continue
        if speaker not in counts and max_speakers is not None and len(counts) >= max_speakers:
            continue
        wav = read()
        for start in range(0, len(wav) - length + 1, length):
            if counts.get(speaker, 0) >= per_speaker:
                break
            speakers.append(speaker)
            segments.append(wav[start : start + length])
            counts[speaker] = counts.get(speaker, 0) + 1
    return SegmentTrials(speakers, segments)
