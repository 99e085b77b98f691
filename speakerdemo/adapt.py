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
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from .audio import AudioError
from .cohort import Cohort
from .conditions import cohort_matrix
from .encoder import Embedding, SpeakerEncoder
from .metrics import compute_eer, threshold_at_far
from .scoring import Calibration

MIN_PEOPLE = 2
MIN_CLIPS = 2
ADVISED_PEOPLE = 10
BOOTSTRAP_DRAWS = 500
INTERVAL = (5.0, 95.0)  # percentiles of the bootstrap: a 90 % interval
ALIKE_SHARE = 0.05  # see _refuse_alike
FILE_VERSION = 1
MAX_FILE_BYTES = 16 * 2**20  # 500 clips of 192-d float16 are 0.2 MB; the metadata grows with pairs
_META_KEY = "speakerdemo_calibration"
_TENSOR_KEY = "clips"


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
    vectors: np.ndarray  # the people's clips, unit vectors: what joined the cohort
    base: str  # fingerprint() of the encoder adapted: a saved calibration applies to it alone
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
    report = Adaptation(
        people=len(people),
        clips=sum(len(v) for v in vectors.values()),
        target_far=target_far,
        threshold=threshold,
        far_interval=_far_interval(other, owners, threshold),
        eer=compute_eer(scores, labels)[0],
        same_scores=same,
        other_scores=other,
        vectors=np.concatenate(list(vectors.values())),
        base=fingerprint(encoder),
        warnings=tuple(warnings),
    )
    return _adapted(encoder, calibration, report)


def _adapted(encoder: SpeakerEncoder, calibration: Calibration, report: Adaptation) -> SpeakerEncoder:
    """A shallow copy of ``encoder`` (network and front end shared) with its own calibration and
    a cohort that holds the people's clips too."""
    adapted = copy.copy(encoder)
    adapted.calibration = calibration
    if encoder.cohort is not None:
        base = encoder.cohort
        adapted.cohort = Cohort(np.vstack([base.vectors, report.vectors]), base.top_n, base.mean_floor, base.std_floor)
    adapted.adaptation = report
    return adapted


def fingerprint(encoder: SpeakerEncoder) -> str:
    """What identifies a checkpoint's scores: its embedding size, calibration and cohort. Two
    checkpoints that score alike share it; a calibration made on one is refused by any other."""
    digest = hashlib.sha256(str(encoder.model.embed_dim).encode())
    if encoder.calibration is not None:
        digest.update(json.dumps(encoder.calibration.to_dict(), sort_keys=True).encode())
    if encoder.cohort is not None:
        digest.update(np.ascontiguousarray(encoder.cohort.vectors, dtype=np.float16).tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------- the calibration file
def to_bytes(adapted: SpeakerEncoder) -> bytes:
    """An adapted encoder's calibration as one small safetensors file: the people's clip vectors
    (float16) and, as JSON metadata, the calibration, what it measured and the checkpoint's
    fingerprint. No audio: embeddings cannot be turned back into speech."""
    report = adapted.adaptation
    if report is None or adapted.calibration is None:
        raise AdaptationError("This encoder was not calibrated on anyone's recordings: nothing to save.")
    meta = {
        "version": FILE_VERSION,
        "checkpoint": report.base,
        "calibration": adapted.calibration.to_dict(),
        "people": report.people,
        "target_far": report.target_far,
        "far_interval": list(report.far_interval),
        "eer": report.eer,
        "same_scores": [round(float(x), 4) for x in report.same_scores],
        "other_scores": [round(float(x), 4) for x in report.other_scores],
        "warnings": list(report.warnings),
    }
    tensors = {_TENSOR_KEY: np.ascontiguousarray(report.vectors, dtype=np.float16)}
    return safetensors.numpy.save(tensors, metadata={_META_KEY: json.dumps(meta)})


def from_bytes(encoder: SpeakerEncoder, data: bytes) -> SpeakerEncoder:
    """``encoder`` adapted by a saved calibration file; AdaptationError says what is wrong with it
    (too large, not such a file, damaged, made with another checkpoint)."""
    if len(data) > MAX_FILE_BYTES:
        raise AdaptationError(f"A calibration file is at most {MAX_FILE_BYTES // 2**20} MB; this one is larger.")
    try:
        tensors = safetensors.numpy.load(bytes(data))
        header = json.loads(bytes(data[8 : 8 + int.from_bytes(data[:8], "little")]))
        meta = json.loads(header["__metadata__"][_META_KEY])
        vectors = np.asarray(tensors[_TENSOR_KEY], dtype=np.float64)
        calibration = Calibration.from_dict(meta["calibration"])
        if meta["version"] != FILE_VERSION:
            raise ValueError(f"format version {meta['version']!r}, this speakerdemo reads {FILE_VERSION}")
        report = Adaptation(
            people=int(meta["people"]),
            clips=len(vectors),
            target_far=float(meta["target_far"]),
            threshold=calibration.threshold,
            far_interval=tuple(float(x) for x in meta["far_interval"]),
            eer=float(meta["eer"]),
            same_scores=np.asarray(meta["same_scores"], dtype=np.float64),
            other_scores=np.asarray(meta["other_scores"], dtype=np.float64),
            vectors=vectors,
            base=str(meta["checkpoint"]),
            warnings=tuple(str(w) for w in meta["warnings"]),
        )
    except (safetensors.SafetensorError, ValueError, KeyError, TypeError) as err:
        raise AdaptationError(f"Not a speakerdemo calibration file ({err}).") from None
    if report.base != fingerprint(encoder):
        raise AdaptationError("This calibration was made with another model: calibrate again with this one.")
    if vectors.ndim != 2 or vectors.shape[1] != encoder.model.embed_dim or not np.isfinite(vectors).all():
        raise AdaptationError(f"The calibration's clips are not {encoder.model.embed_dim}-d vectors.")
    return _adapted(encoder, calibration, report)


def _vectors(encoder: SpeakerEncoder, name: str, clips: Sequence[Any]) -> np.ndarray:
    """Unit vectors of one person's clips: Embeddings and vectors (a gallery's clips) as they are,
    audio embedded in one batch."""
    given, raw = [], []
    for clip in clips:
        if isinstance(clip, Embedding):
            given.append(clip.vector)
        elif isinstance(clip, np.ndarray) and clip.shape == (encoder.model.embed_dim,):
            given.append(clip)
        else:
            raw.append(clip)
    if raw:
        try:
            labels = [f"{name}, clip {i + 1}" for i in range(len(raw))]
            given += [e.vector for e in encoder.embed_batch(raw, names=labels)]
        except AudioError as err:
            raise AdaptationError(str(err)) from None
    v = np.asarray(given, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _refuse_alike(encoder: SpeakerEncoder, vectors: dict[str, np.ndarray]) -> None:
    """Refuse two "people" whose clips score with each other nearly as one person's clips do
    (mislabelled, or one person under two names): their pairs would teach the threshold that
    strangers sound alike. "Nearly": within ALIKE_SHARE of the gap between the less consistent of
    the two's own level and the median level of two different people here (with two people
    only, at that own level), and at or above the model's threshold. The threshold alone would
    not do: strangers of one setting, children of one age for instance, may all score above it,
    which is what calibrating here is for; the own level alone neither: in noise one person's
    clips score low with each other, and two close strangers may pass it. Measured on
    24 speechocean762 test speakers (3 clips each, 2026-12-06): no pair of different children
    came closer than 9 % of the gap; 20 of 24 children split into two "people" did.
    """
    within = {}
    for name, v in vectors.items():
        scores = cohort_matrix(encoder.cohort, v, v)
        within[name] = float(scores[np.triu_indices(len(v), 1)].mean())
    cross = {
        (a, b): float(cohort_matrix(encoder.cohort, va, vb).mean())
        for (a, va), (b, vb) in itertools.combinations(vectors.items(), 2)
    }
    typical = float(np.median(list(cross.values())))
    for (a, b), mean in cross.items():
        own = min(within[a], within[b])
        level = own if len(cross) == 1 else own - ALIKE_SHARE * (own - typical)
        if mean >= max(level, encoder.threshold):
            raise AdaptationError(
                f"{a!r} and {b!r} sound like one speaker (their clips score {mean:.2f} with each other on average, "
                f"{own:.2f} within the less consistent of the two): give clips of different people, one folder or "
                "name each."
            )


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
        scores = cohort_matrix(cohort_without(name), v, v)
        same.extend(scores[np.triu_indices(len(v), 1)].tolist())
    other, owners = [], []
    for (a, va), (b, vb) in itertools.combinations(vectors.items(), 2):
        scores = cohort_matrix(cohort_without(a, b), va, vb).ravel().tolist()
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
