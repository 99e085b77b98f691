"""Verification and classification metrics, in plain numpy.

Verification convention throughout: a trial is *accepted* when
``score >= threshold``; ``labels`` are 1 for target (same-speaker) trials and
0 for non-target trials. FAR is the fraction of non-targets accepted and FRR
the fraction of targets rejected.

Every rate is computed exactly from sorted scores (no binning), so results do
not depend on a grid resolution and ties are handled consistently: all trials
with the same score are accepted or rejected together.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "compute_eer",
    "compute_min_dcf",
    "det_curve",
    "error_rates",
    "threshold_at_far",
    "top_k_accuracy",
]


def _split_trials(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a trial list and return sorted (target, non-target) scores.

    Every verification metric needs both classes (a rate over an empty set is
    undefined) and finite scores (NaN breaks sorting and comparisons silently),
    so these are checked once here rather than in each metric.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D, got shapes {s.shape} and {y.shape}.")
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} scores, {y.size} labels.")
    if np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN value(s).")
    if np.isinf(s).any():
        raise ValueError("scores contain infinite values; every threshold must be a finite number.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 1 (target) or 0 (non-target).")
    is_target = y == 1
    if not is_target.any():
        raise ValueError("No target trials (label 1): FRR and EER are undefined.")
    if is_target.all():
        raise ValueError("No non-target trials (label 0): FAR and EER are undefined.")
    return np.sort(s[is_target]), np.sort(s[~is_target])


def _rates(targets: np.ndarray, nontargets: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(far, frr) at each threshold, from sorted class scores, by binary search.

    ``searchsorted(..., "left")`` counts the scores strictly below a threshold,
    i.e. the rejected ones under the ``score >= threshold`` rule. Dividing
    integer counts keeps equal rates bit-identical, which the EER crossing
    test relies on.
    """
    rejected_targets = np.searchsorted(targets, thresholds, side="left")
    rejected_nontargets = np.searchsorted(nontargets, thresholds, side="left")
    far = (nontargets.size - rejected_nontargets) / nontargets.size
    frr = rejected_targets / targets.size
    return far, frr


def det_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct operating point of the trial list: (thresholds, far, frr).

    Thresholds are the distinct scores in ascending order, plus the next float
    above the maximum so that the curve reaches far=0, frr=1. The first point
    (lowest score) always has far=1, frr=0. Between two consecutive thresholds
    the operating point does not change, so this list is complete.
    O(n log n) from one sort per class.
    """
    targets, nontargets = _split_trials(scores, labels)
    distinct = np.unique(np.concatenate([targets, nontargets]))
    thresholds = np.append(distinct, np.nextafter(distinct[-1], np.inf))
    far, frr = _rates(targets, nontargets, thresholds)
    return thresholds, far, frr


def error_rates(scores: ArrayLike, labels: ArrayLike, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) when accepting ``score >= threshold``, exactly (no grid)."""
    targets, nontargets = _split_trials(scores, labels)
    far, frr = _rates(targets, nontargets, np.array([threshold], dtype=np.float64))
    return float(far[0]), float(frr[0])


def threshold_at_far(nontarget_scores: ArrayLike, max_far: float) -> float:
    """The lowest threshold that accepts at most ``max_far`` of these different-speaker scores.

    A decision threshold chosen for what it promises strangers rather than for balance with FRR,
    which is what a demo that must not tell two strangers they are one person needs; only
    non-target scores enter it. The threshold is the next float above the highest rejected score,
    so it keeps FRR as low as the promise allows.
    """
    s = np.sort(np.asarray(nontarget_scores, dtype=np.float64))
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError("threshold_at_far needs at least one finite non-target score.")
    if not 0.0 <= max_far <= 1.0:
        raise ValueError(f"max_far must lie in [0, 1], got {max_far}.")
    accepted = int(np.floor(max_far * s.size + 1e-9))
    if accepted >= s.size:
        return float(s[0])
    return float(np.nextafter(s[s.size - accepted - 1], np.inf))


def compute_eer(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs: (eer, threshold).

    Along ascending thresholds FRR - FAR never decreases, from -1 to +1. If an
    operating point has FAR == FRR exactly, the EER is that rate and the
    threshold is the lowest such point's. Otherwise the two neighbouring
    points i-1 (FRR < FAR) and i (FRR > FAR) are joined by a straight line in
    (threshold, FAR, FRR) and the EER is where that line crosses FAR == FRR:
    with ``a = (far[i-1]-frr[i-1]) / ((far[i-1]-frr[i-1]) + (frr[i]-far[i]))``,
    ``eer = far[i-1] + a*(far[i]-far[i-1])`` (= the same interpolation of FRR)
    and ``threshold = t[i-1] + a*(t[i]-t[i-1])``.
    Interpolating, rather than picking one neighbour, makes the EER of a small
    or heavily tied trial list unbiased (all-equal scores give 0.5, not 0 or 1).
    """
    thresholds, far, frr = det_curve(scores, labels)
    gap = frr - far
    i = int(np.searchsorted(gap, 0.0, side="left"))
    if gap[i] == 0.0:
        return float(far[i]), float(thresholds[i])
    a = -gap[i - 1] / (gap[i] - gap[i - 1])
    eer = far[i - 1] + a * (far[i] - far[i - 1])
    threshold = thresholds[i - 1] + a * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


def compute_min_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Minimum normalised detection cost over all thresholds: (min_dcf, threshold).

    DCF(t) = c_miss * p_target * FRR(t) + c_fa * (1 - p_target) * FAR(t),
    divided (NIST SRE convention) by min(c_miss * p_target, c_fa * (1 - p_target)),
    the cost of the better of "accept everything" and "reject everything". A
    value of 1 therefore means the scores are no better than a constant
    decision. The threshold is the lowest one attaining the minimum.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be strictly between 0 and 1, got {p_target}.")
    if c_miss <= 0.0 or c_fa <= 0.0:
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}.")
    thresholds, far, frr = det_curve(scores, labels)
    miss_weight = c_miss * p_target
    fa_weight = c_fa * (1.0 - p_target)
    dcf = (miss_weight * frr + fa_weight * far) / min(miss_weight, fa_weight)
    best = int(np.argmin(dcf))
    return float(dcf[best]), float(thresholds[best])


def top_k_accuracy(logits: ArrayLike, labels: ArrayLike, k: int = 1) -> float:
    """Fraction of rows whose true class is among the k highest logits.

    Ties count against the sample: a class scoring *equal* to the true class
    is ranked above it. This pessimistic rule means a degenerate model that
    outputs constant logits scores 0, not 1, and the result does not depend on
    an arbitrary sort order.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty (N, C) array, got shape {z.shape}.")
    n, n_classes = z.shape
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match logits, got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be integer class indices in [0, {n_classes}).")
    if not 1 <= k <= n_classes:
        raise ValueError(f"k must be between 1 and the number of classes ({n_classes}), got {k}.")
    if np.isnan(z).any():
        raise ValueError("logits contain NaN values.")
    true_logit = z[np.arange(n), y][:, None]
    ranked_above = (z >= true_logit).sum(axis=1) - 1
    return float(np.mean(ranked_above < k))
