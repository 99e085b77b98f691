"""Scoring embeddings against each other, and what a score threshold means.

``cosine`` is the raw similarity; ``adaptive_snorm`` normalises scores
against a cohort; ``Calibration`` records, for one trial list, the operating
points (threshold, FAR/FRR curve, score distributions) that the app shows
next to a score so that a user can read it, and optionally the same per
recording condition (``Calibration.across_conditions``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from numpy.typing import ArrayLike

from speakerdemo.metrics import compute_eer, compute_min_dcf, det_curve, threshold_at_far

__all__ = ["Calibration", "adaptive_snorm", "cosine", "pair_cosines", "snorm", "top_n_stats"]


def _unit_rows(x: np.ndarray, side: str) -> np.ndarray:
    """L2-normalise each row, refusing rows that have no direction.

    A zero (or non-finite) vector would turn into NaN similarities that then
    pass silently through thresholds and rankings, so it is an error here.
    """
    if not np.isfinite(x).all():
        raise ValueError(f"{side} contains NaN or infinite values.")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if (norms == 0.0).any():
        raise ValueError(f"{side} contains a zero vector; cosine similarity is undefined for it.")
    return x / norms


def cosine(a: ArrayLike, b: ArrayLike) -> float | np.ndarray:
    """Cosine similarity of vectors or of every row pair of two matrices.

    Shapes: (D,) x (D,) -> float; (N, D) x (M, D) -> (N, M); a single vector
    against a matrix gives the 1-D row of scores, (D,) x (M, D) -> (M,) and
    (N, D) x (D,) -> (N,). Results are clipped to [-1, 1] so rounding never
    yields an impossible similarity.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim not in (1, 2) or y.ndim not in (1, 2):
        raise ValueError(f"cosine expects 1-D or 2-D arrays, got shapes {x.shape} and {y.shape}.")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"Embedding sizes differ: {x.shape[-1]} vs {y.shape[-1]}.")
    sims = np.clip(_unit_rows(np.atleast_2d(x), "a") @ _unit_rows(np.atleast_2d(y), "b").T, -1.0, 1.0)
    if x.ndim == 1 and y.ndim == 1:
        return float(sims[0, 0])
    if x.ndim == 1:
        return sims[0]
    if y.ndim == 1:
        return sims[:, 0]
    return sims


def pair_cosines(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Cosine of each row pair ``(a[i], b[i])`` of two (N, D) matrices, clipped to [-1, 1]."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"pair_cosines expects two (N, D) arrays of one shape, got {x.shape} and {y.shape}.")
    return np.clip(np.einsum("nd,nd->n", _unit_rows(x, "a"), _unit_rows(y, "b")), -1.0, 1.0)


def top_n_stats(cohort_scores: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (N, C) cohort scores: mean and (population) std of its ``top_n`` highest
    (the whole row when ``top_n`` exceeds it)."""
    n = min(top_n, cohort_scores.shape[1])
    top = np.partition(cohort_scores, cohort_scores.shape[1] - n, axis=1)[:, -n:]
    return top.mean(axis=1), top.std(axis=1)


def snorm(scores: ArrayLike, first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Symmetric normalisation of each pair's score by both sides' cohort (mean, std):
    ``0.5 * ((s - mu_1) / sd_1 + (s - mu_2) / sd_2)``."""
    s = np.asarray(scores, dtype=np.float64)
    return 0.5 * ((s - first[0]) / first[1] + (s - second[0]) / second[1])


def adaptive_snorm(
    scores: ArrayLike,
    enroll_cohort: ArrayLike,
    test_cohort: ArrayLike,
    top_n: int = 200,
) -> np.ndarray:
    """Adaptive symmetric score normalisation (AS-Norm, Matejka et al. 2017).

    For each trial, each side's score distribution against an impostor cohort
    is summarised by the mean mu and population std sd of its ``top_n``
    highest cohort scores (the cohort speakers most similar to that side, so
    the normalisation adapts to the region of embedding space the trial is
    in); then ``s' = 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)``.
    ``top_n`` larger than a cohort uses the whole cohort.

    Shapes: scores (N,), enroll_cohort (N, Ce), test_cohort (N, Ct).
    """
    s = np.asarray(scores, dtype=np.float64)
    enroll = np.asarray(enroll_cohort, dtype=np.float64)
    test = np.asarray(test_cohort, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}.")
    for side, cohort in (("enroll", enroll), ("test", test)):
        if cohort.ndim != 2 or cohort.shape[0] != s.size or cohort.shape[1] < 2:
            raise ValueError(f"{side}_cohort must have shape ({s.size}, C) with C >= 2, got {cohort.shape}.")
    if top_n < 2:
        raise ValueError(f"top_n must be at least 2 to estimate a spread, got {top_n}.")
    if not (np.isfinite(s).all() and np.isfinite(enroll).all() and np.isfinite(test).all()):
        raise ValueError("scores and cohort scores must be finite.")
    stats = {}
    for side, cohort in (("enroll", enroll), ("test", test)):
        stats[side] = top_n_stats(cohort, top_n)
        flat = np.flatnonzero(stats[side][1] == 0.0)
        if flat.size:
            raise ValueError(
                f"The top {min(top_n, cohort.shape[1])} {side} cohort scores of trial {int(flat[0])} are all "
                "equal; AS-Norm cannot divide by a zero spread."
            )
    return snorm(s, stats["enroll"], stats["test"])


_FLOAT_FIELDS = ("threshold", "eer", "min_dcf")
_LIST_FIELDS = ("thresholds", "far", "frr", "bin_edges", "target_hist", "nontarget_hist")
# Keys a checkpoint calibrated before per-condition calibration does not have.
EER_RULE = "the equal-error-rate point"
_OPTIONAL_FIELDS = {"rule": EER_RULE, "conditions": {}, "shifts": {}}


@dataclass
class Calibration:
    """What a threshold means, measured on a trial list: the app's default
    threshold and its readout come from here.

    ``thresholds``/``far``/``frr`` sample the exact FAR/FRR step curves on an
    even grid spanning the whole score range (first point accepts every trial:
    far=1, frr=0; last point rejects every trial: far=0, frr=1), so that
    ``rates_at`` can answer any threshold by interpolation without keeping the
    scores. The histograms use shared ``bin_edges`` and are densities, so the
    two classes are comparable however unbalanced the trial list is.

    ``rule`` says how ``threshold`` was chosen (the app shows it). A
    calibration across conditions (:meth:`across_conditions`) also has
    ``shifts``, subtracted from the cosine of a pair of each kind of clip
    (:func:`speakerdemo.conditions.pair_condition`) before it meets the
    threshold (:meth:`adjusted`), and ``conditions``, one calibration per
    recording condition on those adjusted scores: what the one threshold means
    for each kind of clip. Every curve here is on adjusted scores.
    """

    threshold: float
    eer: float
    min_dcf: float
    trials: str
    thresholds: list[float]
    far: list[float]
    frr: list[float]
    bin_edges: list[float]
    target_hist: list[float]
    nontarget_hist: list[float]
    rule: str = EER_RULE
    conditions: dict[str, Calibration] = field(default_factory=dict)
    shifts: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse inconsistent curves: ``rates_at`` and the plots assume them."""
        if len(self.thresholds) < 2 or not len(self.thresholds) == len(self.far) == len(self.frr):
            raise ValueError(
                "thresholds, far and frr must have the same length (at least 2), got "
                f"{len(self.thresholds)}, {len(self.far)} and {len(self.frr)}."
            )
        if any(b < a for a, b in zip(self.thresholds, self.thresholds[1:])):
            raise ValueError("thresholds must be in ascending order.")
        if not all(0.0 <= r <= 1.0 for r in (*self.far, *self.frr, self.eer)):
            raise ValueError("far, frr and eer must lie in [0, 1].")
        n_bins = len(self.target_hist)
        if n_bins < 1 or len(self.nontarget_hist) != n_bins or len(self.bin_edges) != n_bins + 1:
            raise ValueError(
                "bin_edges must have one more entry than target_hist and nontarget_hist, got "
                f"{len(self.bin_edges)}, {len(self.target_hist)} and {len(self.nontarget_hist)}."
            )

    @classmethod
    def from_scores(
        cls,
        scores: ArrayLike,
        labels: ArrayLike,
        trials: str = "",
        grid: int = 201,
        bins: int = 60,
    ) -> Calibration:
        """Measure a calibration on scored trials (labels: 1 target, 0 non-target)."""
        if grid < 2 or bins < 1:
            raise ValueError(f"grid must be >= 2 and bins >= 1, got grid={grid}, bins={bins}.")
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels)
        eer, threshold = compute_eer(s, y)
        min_dcf, _ = compute_min_dcf(s, y, p_target=0.01)
        points, far, frr = det_curve(s, y)
        grid_t = np.linspace(points[0], points[-1], grid)
        # Between two distinct scores the operating point is that of the next
        # score up, so each grid threshold takes the rates of the first curve
        # point at or above it.
        at = np.searchsorted(points, grid_t, side="left")
        edges = np.histogram_bin_edges(s, bins=bins)
        target_hist, _ = np.histogram(s[y == 1], bins=edges, density=True)
        nontarget_hist, _ = np.histogram(s[y == 0], bins=edges, density=True)
        return cls(
            threshold=threshold,
            eer=eer,
            min_dcf=min_dcf,
            trials=trials,
            thresholds=grid_t.tolist(),
            far=far[at].tolist(),
            frr=frr[at].tolist(),
            bin_edges=edges.tolist(),
            target_hist=target_hist.tolist(),
            nontarget_hist=nontarget_hist.tolist(),
        )

    @classmethod
    def across_conditions(
        cls,
        scored: dict[str, tuple[ArrayLike, ArrayLike, ArrayLike]],
        reference: str,
        max_far: float,
        trials: str,
        min_nontargets: int = 100,
        binding: Sequence[str] | None = None,
        min_share: float = 0.25,
    ) -> Calibration:
        """A threshold and a score shift per kind of clip, so that every condition accepts at most
        ``max_far`` of its different-speaker pairs, as the app sees them.

        ``scored`` maps a condition to its (cosine scores, labels, kinds): each pair's kind is what
        the app detects it as (:func:`speakerdemo.conditions.pair_conditions`), so a 3-s clip with
        little speech counts as short here as it will in the app. Each kind's threshold is the
        lowest at which, in every condition, that kind's pairs keep to ``max_far``. A condition
        votes for a kind only with ``min_nontargets`` non-target pairs of it that are also at least
        ``min_share`` of its own: the kinds are calibrated on the conditions they stand for, and
        the few pairs of a condition that the app mistakes for another kind (a noisy pair its
        detector misses) are measured in that condition's rates, not made the rule; the
        ``reference`` kind's is the threshold, and every other kind's shift is its threshold less
        the reference's. Only the ``binding`` conditions vote (all by default); the others are
        measured and kept all the same, so that the app can say what the threshold does there.
        Strangers on a phone line score closer than in clean speech, so without the shift one
        threshold either lets them through or rejects most clean same-speaker pairs.
        The curves are those of all conditions pooled, after the shift; each condition keeps its
        own under ``conditions``.
        """
        arrays = {
            name: (np.asarray(s, dtype=np.float64), np.asarray(y), np.asarray(k)) for name, (s, y, k) in scored.items()
        }
        per_kind: dict[str, float] = {}
        voters = list(arrays) if binding is None else list(binding)
        if set(voters) - set(arrays):
            raise ValueError(f"binding conditions {sorted(set(voters) - set(arrays))} were not scored.")
        for s, y, k in (arrays[name] for name in voters):
            for kind in np.unique(k):
                strangers = s[(k == kind) & (y == 0)]
                if strangers.size >= max(min_nontargets, min_share * np.sum(y == 0)):
                    per_kind[str(kind)] = max(per_kind.get(str(kind), -math.inf), threshold_at_far(strangers, max_far))
        if reference not in per_kind:
            raise ValueError(f"No condition has {min_nontargets}+ non-target pairs of the kind {reference!r}.")
        threshold = per_kind[reference]
        shifts = {kind: t - threshold for kind, t in per_kind.items()}
        adjusted = {name: _shifted(s, list(k), shifts) for name, (s, _, k) in arrays.items()}
        per = {name: cls.from_scores(adjusted[name], y, trials=name) for name, (_, y, _) in arrays.items()}
        pooled = cls.from_scores(
            np.concatenate(list(adjusted.values())), np.concatenate([y for _, y, _ in arrays.values()]), trials
        )
        which = "every condition" if set(voters) == set(arrays) else ", ".join(voters)
        rule = f"the threshold at which {which} accepts at most {100 * max_far:g} % of different speakers"
        return replace(pooled, threshold=threshold, rule=rule, conditions=per, shifts=shifts)

    def adjusted(self, scores: ArrayLike, kinds: str | Sequence[str]) -> np.ndarray:
        """Cosine scores less the shift of their kind of clip (one kind for all, or one per score;
        no shift for a kind without one): what meets ``threshold``."""
        return _shifted(scores, kinds, self.shifts)

    def rates_at(self, threshold: float) -> tuple[float, float]:
        """(far, frr) at any threshold, linearly interpolated on the grid.

        Outside the grid the end values hold, which is exact: below the lowest
        score everything is accepted, above the highest nothing is.
        """
        far = np.interp(threshold, self.thresholds, self.far)
        frr = np.interp(threshold, self.thresholds, self.frr)
        return float(far), float(frr)

    def to_dict(self) -> dict:
        """Plain-JSON form, every number rounded to 6 decimals to keep config.json small."""
        d = asdict(self)
        for key in _FLOAT_FIELDS:
            d[key] = round(float(d[key]), 6)
        for key in _LIST_FIELDS:
            d[key] = [round(float(v), 6) for v in d[key]]
        d["conditions"] = {name: c.to_dict() for name, c in self.conditions.items()}
        d["shifts"] = {kind: round(float(v), 6) for kind, v in self.shifts.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Rebuild from ``to_dict`` output, refusing anything malformed.

        The dict usually comes from a hand-editable config file, so keys,
        types and lengths are all checked and reported by name. ``rule``,
        ``conditions`` and ``shifts`` may be missing (checkpoints calibrated
        before them).
        """
        if not isinstance(d, dict):
            raise ValueError(f"Calibration must be a dict, got {type(d).__name__}.")
        expected = {f.name for f in fields(cls)}
        d = {**_OPTIONAL_FIELDS, **d}
        missing, unknown = expected - d.keys(), d.keys() - expected
        if missing or unknown:
            raise ValueError(
                f"Calibration keys do not match: missing {sorted(missing)}, unknown {sorted(map(str, unknown))}."
            )
        for key in ("trials", "rule"):
            if not isinstance(d[key], str):
                raise ValueError(f"Calibration '{key}' must be a string, got {type(d[key]).__name__}.")
        for key in ("conditions", "shifts"):
            if not isinstance(d[key], dict):
                raise ValueError(f"Calibration '{key}' must be a dict, got {type(d[key]).__name__}.")
        values = {key: _finite_number(d[key], key) for key in _FLOAT_FIELDS}
        for key in _LIST_FIELDS:
            if not isinstance(d[key], list):
                raise ValueError(f"Calibration '{key}' must be a list, got {type(d[key]).__name__}.")
            values[key] = [_finite_number(v, key) for v in d[key]]
        conditions = {str(name): cls.from_dict(c) for name, c in d["conditions"].items()}
        shifts = {str(kind): _finite_number(v, "shifts") for kind, v in d["shifts"].items()}
        return cls(trials=d["trials"], rule=d["rule"], conditions=conditions, shifts=shifts, **values)


def _shifted(scores: ArrayLike, kinds: str | Sequence[str], shifts: dict[str, float]) -> np.ndarray:
    """``scores`` less the shift of each one's kind (0 for a kind without one)."""
    if isinstance(kinds, str):
        return np.asarray(scores, dtype=np.float64) - shifts.get(kinds, 0.0)
    return np.asarray(scores, dtype=np.float64) - np.array([shifts.get(k, 0.0) for k in kinds])


def _finite_number(value: object, key: str) -> float:
    """A JSON number as float; bools and strings are rejected, not coerced."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Calibration '{key}' must hold finite numbers, got {value!r}.")
    return float(value)
