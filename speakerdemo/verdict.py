"""The decision on a pair of clips, and on a query against a gallery, made in one place.

A :class:`Verdict` is what every caller shows or counts: the web app's Verify tab, the command
line, the benchmarks. It says "same", "different" or "uncertain", with the score, the kind of clip
(:mod:`speakerdemo.conditions`), what the threshold means for that kind (the checkpoint's
calibrated rates), a log-likelihood ratio, the reasons and what would help.

"Uncertain" is a band of scores around the threshold, read off the calibration of the pair's
kind of clip (measured on the dev half of the held-out speakers by ``python -m train calibrate``)
at the calibrated threshold: above the band a "same" keeps to ``target_far`` of that kind's
different-speaker pairs; the band reaches down as far as it may while it holds at most
``max_undecided`` of that kind's same-speaker pairs and of its different-speaker pairs. So a pair
is called "same" only where strangers rarely reach, and "different" is not said of a score where
many same-speaker pairs of that kind lie. A threshold moved by the user moves the band with it.

Identification is open-set: with N people enrolled, a stranger meets N chances to clear the
threshold, and the best of N impostor scores clears a threshold set for one pair far more often
than one score does. :func:`open_set_threshold` raises the threshold with N, and by what the
enrolled people's own clips score against each other (strangers of the user's own kind).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .conditions import (
    DESCRIPTIONS,
    clip_condition,
    gallery_scorer,
    is_noisy,
    is_phone_band,
    kind_shift,
    pair_score,
    score_matrix,
)
from .encoder import Embedding, SpeakerEncoder
from .gallery import Gallery, Ranking
from .scoring import Calibration

SAME, DIFFERENT, UNCERTAIN = "same", "different", "uncertain"
TARGET_FAR = 0.05
"""A "same" keeps to this share of the kind's different-speaker pairs (the shipped calibration's rule)."""
FAR_SLACK = 0.01
"""A kind's false-accept rate is named as a weakness above TARGET_FAR plus this (5.1 % is 5 %)."""
MAX_UNDECIDED = 0.15
"""At most this share of a kind's same-speaker pairs, and of its different-speaker pairs, is left
undecided by the band."""
OPEN_SET_QUANTILE = 0.9
"""See :func:`open_set_threshold`: about one stranger in ten of the user's own kind is let through."""
SHORT_SPEECH = 2.0  # seconds of speech under which a clip is named as a reason
MORE_SPEECH = 5.0  # what to ask for instead


@dataclass(frozen=True)
class Verdict:
    """One pair's decision and what it rests on.

    ``clip_reasons`` and ``clip_advice`` are about the two clips (short, noisy, phone band) and
    hold whatever the threshold; ``reasons`` and ``advice`` add what the decision at this
    threshold rests on, so that :func:`reconsider` can decide again at another threshold
    without the clips.
    """

    decision: str  # SAME, DIFFERENT or UNCERTAIN
    score: float
    threshold: float
    band: tuple[float, float]  # scores in [band[0], band[1]) are UNCERTAIN
    kind: str | None  # the pair's kind of clip; None for bare vectors
    far: float | None  # the kind's calibrated false-accept rate at ``threshold`` (None: uncalibrated)
    frr: float | None
    llr: float | None  # natural log of how much likelier the score is for one speaker than for two
    clip_reasons: tuple[str, ...] = ()
    clip_advice: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()

    @property
    def same(self) -> bool:
        return self.decision == SAME


def decision_in(band: tuple[float, float], score: float) -> str:
    """SAME at or above the band, DIFFERENT below it, UNCERTAIN inside."""
    return SAME if score >= band[1] else DIFFERENT if score < band[0] else UNCERTAIN


def curve_for(calibration: Calibration | None, kind: str | None) -> Calibration | None:
    """The calibration of a kind of clip where the checkpoint measured it, else the pooled one."""
    if calibration is None:
        return None
    return calibration.conditions.get(kind or "", calibration)


def uncertain_band(
    curve: Calibration | None,
    threshold: float,
    target_far: float = TARGET_FAR,
    max_undecided: float = MAX_UNDECIDED,
) -> tuple[float, float]:
    """[low, high) scores left undecided at ``threshold`` for clips measured by ``curve``.

    ``high``: the lowest grid score at or above the threshold at which the curve's false accepts
    are at most ``target_far``, as long as that leaves at most ``max_undecided`` of either class's
    pairs between it and the threshold (else the highest such score). ``low``: the lowest grid
    score at or below the threshold that keeps both classes' undecided shares within
    ``max_undecided``. No calibration: no band.
    """
    if curve is None:
        return threshold, threshold
    grid = np.asarray(curve.thresholds)
    far0, frr0 = curve.rates_at(threshold)
    high = threshold
    for t in grid[grid > threshold]:
        far, frr = curve.rates_at(t)
        if frr - frr0 > max_undecided or far0 - far > max_undecided:
            break
        high = float(t)
        if far <= target_far:
            break
    if far0 <= target_far:
        high = threshold
    far_high, frr_high = curve.rates_at(high)
    low = threshold
    for t in grid[grid < threshold][::-1]:
        far, frr = curve.rates_at(t)
        if far - far_high > max_undecided or frr_high - frr > max_undecided:
            break
        low = float(t)
    return low, high


def llr_line(curve: Calibration) -> tuple[float, float]:
    """(slope, offset) of a logistic calibration, score -> log-likelihood ratio, fitted on the
    curve's two histograms with equal weight on each class (Newton's method, a few steps)."""
    edges = np.asarray(curve.bin_edges)
    centres, widths = (edges[1:] + edges[:-1]) / 2, np.diff(edges)
    weights = np.r_[np.asarray(curve.target_hist) * widths, np.asarray(curve.nontarget_hist) * widths]
    x, y = np.r_[centres, centres], np.r_[np.ones(len(centres)), np.zeros(len(centres))]
    scale = max(float(np.std(x)), 1e-6)
    w = np.zeros(2)
    design = np.c_[x / scale, np.ones_like(x)]
    for _ in range(25):
        p = 1 / (1 + np.exp(-design @ w))
        gradient = design.T @ (weights * (y - p))
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        w += np.linalg.solve(hessian, gradient)
    return float(w[0] / scale), float(w[1])


def decide(
    encoder: SpeakerEncoder, a: Embedding | np.ndarray, b: Embedding | np.ndarray, threshold: float | None = None
) -> Verdict:
    """The verdict on clips ``a`` and ``b`` (Embeddings, or bare vectors with no kind of clip)."""
    if isinstance(a, Embedding) and isinstance(b, Embedding):
        kind, score = pair_score(encoder, a, b)
    else:
        kind, score = None, encoder.score(a, b)
    threshold = encoder.threshold if threshold is None else threshold
    return judge(encoder.calibration, score, kind, threshold, *_clip_reasons(a, b))


def reconsider(calibration: Calibration | None, verdict: Verdict, threshold: float) -> Verdict:
    """``verdict`` decided again at ``threshold``: same score, kind and clips, no model call."""
    return judge(calibration, verdict.score, verdict.kind, threshold, verdict.clip_reasons, verdict.clip_advice)


def judge(
    calibration: Calibration | None,
    score: float,
    kind: str | None,
    threshold: float,
    clip_reasons: tuple[str, ...] = (),
    clip_advice: tuple[str, ...] = (),
) -> Verdict:
    """The verdict on a score of a kind of clip at ``threshold``, from the calibration alone."""
    threshold, score = float(threshold), float(score)
    curve = curve_for(calibration, kind)
    band = (threshold, threshold)
    if curve is not None:  # the band measured at the calibrated threshold, moved with the slider
        default = calibration.threshold
        low, high = uncertain_band(curve, default)
        band = (threshold - (default - low), threshold + (high - default))
    far, frr, llr = None, None, None
    if curve is not None:
        far, frr = curve.rates_at(threshold)
        slope, offset = llr_line(curve)
        llr = slope * score + offset
    decision = decision_in(band, score)
    reasons, advice = list(clip_reasons), list(clip_advice)
    high_far = far is not None and far > TARGET_FAR + FAR_SLACK
    if high_far:
        reasons.append(
            f"for {DESCRIPTIONS.get(kind or '', 'clips like these')}, {100 * far:.0f} % of "
            "different-speaker pairs reach this threshold"
        )
    if decision == UNCERTAIN or high_far:
        advice.append("calibrate on recordings of your own")
    return Verdict(
        decision,
        score,
        threshold,
        band,
        kind,
        far,
        frr,
        llr,
        tuple(clip_reasons),
        tuple(clip_advice),
        tuple(reasons),
        tuple(dict.fromkeys(advice)),
    )


def _clip_reasons(a: Embedding | np.ndarray, b: Embedding | np.ndarray) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What about the two clips weakens any verdict on them, and what would help, in words."""
    reasons, advice = [], []
    for name, clip in (("clip A", a), ("clip B", b)):
        if not isinstance(clip, Embedding):
            continue
        if clip.speech_seconds < SHORT_SPEECH:
            reasons.append(f"under {SHORT_SPEECH:g} s of speech in {name} ({clip.speech_seconds:.1f} s)")
            advice.append(f"record {MORE_SPEECH:g} s more of {name}")
        if is_noisy(clip):
            reasons.append(f"{name} is noisy")
            advice.append(f"record {name} somewhere quieter")
        if is_phone_band(clip):
            reasons.append(f"{name} is phone-band audio, on which strangers score closer")
    return tuple(reasons), tuple(advice)


def open_set_threshold(
    encoder: SpeakerEncoder, gallery: Gallery, threshold: float | None = None, kind: str | None = None
) -> float:
    """The threshold a query meets against ``gallery``: the higher of two rules.

    - The calibrated tail: the lowest score at or above ``threshold`` at which the chance that
      any of N independent strangers clears it, 1 - (1 - FAR)^N on the calibration of ``kind``,
      is at most one pair's FAR at ``threshold``.
    - The gallery's own strangers: each enrolled clip scored against the other people's
      centroids stands for a stranger in the user's own recordings; the threshold is the
      OPEN_SET_QUANTILE of those clips' best scores, so that about one stranger in ten clears it.
      On speechocean762 test speakers (benchmarks/verdict.py) the calibrated tail alone rejected
      78 % of strangers with 50 people enrolled: children's voices crowd closer than the
      calibration's adults.
    """
    threshold = encoder.threshold if threshold is None else float(threshold)
    enrolled = len(gallery)
    if enrolled <= 1:
        return threshold
    curve = curve_for(encoder.calibration, kind)
    tail = threshold
    if curve is not None:
        allowed = curve.rates_at(threshold)[0]
        above = [t for t in curve.thresholds if t > threshold]
        tail = next(
            (float(t) for t in (threshold, *above) if 1 - (1 - curve.rates_at(t)[0]) ** enrolled <= allowed + 1e-12),
            float(curve.thresholds[-1]),
        )
    names = gallery.names()
    centroids = np.stack([gallery.centroid(name) for name in names])
    best = [
        score_matrix(encoder, gallery.clips(name), np.delete(centroids, i, axis=0)).max(axis=1)
        for i, name in enumerate(names)
    ]
    return max(tail, float(np.quantile(np.concatenate(best), OPEN_SET_QUANTILE)))


def rank(
    encoder: SpeakerEncoder,
    query: Embedding | np.ndarray,
    gallery: Gallery,
    threshold: float | None = None,
    top_k: int = 5,
) -> Ranking:
    """The enrolled people ranked against ``query`` as the app scores them (the calibration's shift
    for the query's kind of clip, if it has shifts), with the open-set threshold for the size of
    the gallery (:func:`open_set_threshold`) as the ranking's threshold, so that ``.best`` is a
    name or "unknown"."""
    threshold = encoder.threshold if threshold is None else float(threshold)
    kind = clip_condition(query) if isinstance(query, Embedding) else None
    vector = query.vector if isinstance(query, Embedding) else np.asarray(query, dtype=np.float64)
    cut = open_set_threshold(encoder, gallery, threshold, kind)
    scorer = gallery_scorer(encoder, kind_shift(encoder, kind) if kind else 0.0)
    return gallery.rank(vector, top_k=top_k, threshold=cut, score=scorer)


def odds(llr: float) -> str:
    """A log-likelihood ratio as words: "about 40 times likelier for one speaker"."""
    ratio = math.exp(min(abs(llr), 50.0))
    side = "one speaker" if llr >= 0 else "two different speakers"
    return f"about {ratio:.3g} times likelier for {side}"
