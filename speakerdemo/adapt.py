"""Calibrate on the user's own recordings: clips of several different people in their setting.

No default threshold can know a new recording setup: strangers saying one-second command words
on one kind of microphone score closer to each other than the calibration's speakers did. A few
of the user's own people fix that (measured on held-back sets: strangers accepted 59 % -> 13 %
and 65 % -> 8 %), in two steps:

1. **Their clips join the score cohort.** A clip of their setting then finds neighbours of its
   own kind among the cohort, so strangers of that kind sink to where the cohort's strangers are.
2. **The threshold is chosen on their different-speaker pairs** at ``target_far``. Each pair is
   scored against a cohort that leaves out both of its people (their own clips in the cohort
   would lift each clip's mean and make strangers look further apart than they will be for a
   new voice), each same-person pair against one that leaves out that person.

Embeddings do not change, so the adapted encoder judges the original's Embeddings. The measured
curve replaces the calibration (one curve: the user's world, with its own uncertain band), and
:class:`Adaptation` says what it rests on: people, pairs, and how far the false-accept rate at the
threshold could move with other people of the same setting (a bootstrap over people).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .audio import AudioError
from .cohort import Cohort
from .encoder import Embedding, SpeakerEncoder
from .metrics import compute_eer, threshold_at_far
from .scoring import Calibration, cosine, snorm

MIN_PEOPLE = 2
MIN_CLIPS = 2
ADVISED_PEOPLE = 10
BOOTSTRAP_DRAWS = 500
INTERVAL = (5.0, 95.0)  # percentiles of the bootstrap: a 90 % interval


class AdaptationError(ValueError):
    """A calibration set that cannot be used, with what to change."""


@dataclass(frozen=True)
class Adaptation:
    """What an adapted threshold rests on."""

    people: int
    clips: int
    target_far: float
    threshold: float
    far_interval: tuple[float, float]  # 90 % of bootstrap draws over people fall inside
    eer: float
    same_scores: np.ndarray  # the same-person pairs' scores
    other_scores: np.ndarray  # the different-person pairs' scores
    warnings: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return f"calibrated on your {self.people} people ({len(self.same_scores) + len(self.other_scores)} pairs)"


def adapt(
    encoder: SpeakerEncoder, clips_by_person: Mapping[str, Sequence[Any]], target_far: float = 0.05
) -> SpeakerEncoder:
    """A copy of ``encoder`` calibrated on ``clips_by_person`` (name -> clips in any form
    :meth:`SpeakerEncoder.embed` takes, or Embeddings); its ``adaptation`` says how. The original
    is unchanged. Raises AdaptationError for too few people or clips, or "people" who sound alike."""
    if not 0 < target_far < 1:
        raise AdaptationError(f"target_far must lie between 0 and 1, got {target_far}.")
    people = {str(name).strip(): list(clips) for name, clips in clips_by_person.items()}
    short = [name for name, clips in people.items() if len(clips) < MIN_CLIPS]
    if len(people) < MIN_PEOPLE or short:
        raise AdaptationError(
            f"Calibration needs at least {MIN_PEOPLE} different people with {MIN_CLIPS} clips each; got "
            f"{len(people)} people" + (f", and too few clips of {', '.join(sorted(short))}." if short else ".")
        )
    vectors = {name: _vectors(encoder, name, clips) for name, clips in people.items()}
    _refuse_alike(encoder, vectors)
    same, other, owners = _pair_scores(encoder, vectors)
    threshold = threshold_at_far(other, target_far)
    labels = np.r_[np.ones(len(same)), np.zeros(len(other))]
    scores = np.r_[same, other]
    trials = f"your {len(people)} people ({len(same)} same-person and {len(other)} different-person pairs)"
    rule = f"the threshold at which {100 * target_far:g} % of your people's different-person pairs pass"
    calibration = replace(Calibration.from_scores(scores, labels, trials=trials), threshold=threshold, rule=rule)
    warnings = []
    if len(people) < ADVISED_PEOPLE:
        warnings.append(
            f"Only {len(people)} people: the threshold rests on {len(other)} different-person pairs; "
            f"{ADVISED_PEOPLE} people or more make its false-accept rate far more certain."
        )
    adapted = copy.copy(encoder)  # the network and front end are shared; calibration and cohort are its own
    adapted.calibration = calibration
    if encoder.cohort is not None:
        base = encoder.cohort
        mine = np.concatenate(list(vectors.values()))
        adapted.cohort = Cohort(np.vstack([base.vectors, mine]), base.top_n, base.mean_floor, base.std_floor)
    adapted.adaptation = Adaptation(
        people=len(people),
        clips=sum(len(v) for v in vectors.values()),
        target_far=target_far,
        threshold=threshold,
        far_interval=_far_interval(other, owners, threshold),
        eer=compute_eer(scores, labels)[0],
        same_scores=same,
        other_scores=other,
        warnings=tuple(warnings),
    )
    return adapted


def _vectors(encoder: SpeakerEncoder, name: str, clips: Sequence[Any]) -> np.ndarray:
    """Unit vectors of one person's clips (embedded in one batch unless given as Embeddings)."""
    done = [c.vector for c in clips if isinstance(c, Embedding)]
    raw = [c for c in clips if not isinstance(c, Embedding)]
    if raw:
        try:
            labels = [f"{name}, clip {i + 1}" for i in range(len(raw))]
            done += [e.vector for e in encoder.embed_batch(raw, names=labels)]
        except AudioError as err:
            raise AdaptationError(str(err)) from None
    v = np.asarray(done, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _refuse_alike(encoder: SpeakerEncoder, vectors: dict[str, np.ndarray]) -> None:
    """Refuse two "people" whose clips score as one speaker on average (mislabelled, or one
    person under two names): their pairs would teach the threshold that strangers sound alike."""
    for (a, va), (b, vb) in itertools.combinations(vectors.items(), 2):
        mean = float(_scores(encoder.cohort, va, vb).mean())
        if mean >= encoder.threshold:
            raise AdaptationError(
                f"{a!r} and {b!r} sound like one speaker (their clips score {mean:.2f} on average, at or above "
                f"the threshold {encoder.threshold:.2f}): give clips of different people, one folder or name each."
            )


def _scores(cohort: Cohort | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) scores normalised against ``cohort`` (plain cosines without one)."""
    cos = np.atleast_2d(cosine(a, b))
    if cohort is None:
        return cos
    (ma, sa), (mb, sb) = cohort.stats(a), cohort.stats(b)
    return snorm(cos, (ma[:, None], sa[:, None]), (mb[None, :], sb[None, :]))


def _pair_scores(
    encoder: SpeakerEncoder, vectors: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Same-person and different-person pair scores, each against the cohort plus the clips of
    everyone but the pair's own people; the owners of each different-person score."""
    base = encoder.cohort

    def cohort_without(*names: str) -> Cohort | None:
        if base is None:
            return None
        rest = [v for n, v in vectors.items() if n not in names]
        return Cohort(np.vstack([base.vectors, *rest]), base.top_n, base.mean_floor, base.std_floor)

    same = []
    for name, v in vectors.items():
        scores = _scores(cohort_without(name), v, v)
        same.extend(scores[np.triu_indices(len(v), 1)].tolist())
    other, owners = [], []
    for (a, va), (b, vb) in itertools.combinations(vectors.items(), 2):
        scores = _scores(cohort_without(a, b), va, vb).ravel().tolist()
        other.extend(scores)
        owners.extend([(a, b)] * len(scores))
    return np.asarray(same), np.asarray(other), owners


def _far_interval(other: np.ndarray, owners: list[tuple[str, str]], threshold: float) -> tuple[float, float]:
    """90 % interval of the false-accept rate at ``threshold`` over people drawn again with
    replacement (pairs of a person drawn twice count twice; a draw of one person has no pairs)."""
    names = sorted({n for pair in owners for n in pair})
    index = {n: i for i, n in enumerate(names)}
    first = np.array([index[a] for a, _ in owners])
    second = np.array([index[b] for _, b in owners])
    accepted = other >= threshold
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(BOOTSTRAP_DRAWS):
        counts = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
        weights = counts[first] * counts[second]
        if weights.sum():
            rates.append(float((weights * accepted).sum() / weights.sum()))
    low, high = np.percentile(rates, INTERVAL) if rates else (np.nan, np.nan)
    return float(low), float(high)
