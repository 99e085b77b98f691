"""Tests for speakerdemo.metrics: hand-computed values, invariants, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from speakerdemo.metrics import (
    compute_eer,
    compute_min_dcf,
    det_curve,
    error_rates,
    threshold_at_far,
    top_k_accuracy,
)


def trials(targets: list[float], nontargets: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) for the given target and non-target scores."""
    scores = np.array(targets + nontargets, dtype=np.float64)
    labels = np.array([1] * len(targets) + [0] * len(nontargets))
    return scores, labels


# Targets [0.9, 0.8, 0.4], non-targets [0.7, 0.3, 0.1]; accept when score >= t.
#   t     accepted non-targets   rejected targets   FAR   FRR
#   0.1   0.7 0.3 0.1            -                  3/3   0
#   0.3   0.7 0.3                -                  2/3   0
#   0.4   0.7                    -                  1/3   0
#   0.7   0.7                    0.4                1/3   1/3   <- FAR == FRR
#   0.8   -                      0.4                0     1/3
#   0.9   -                      0.4 0.8            0     2/3
#   >0.9  -                      all                0     1
# EER = 1/3 exactly at threshold 0.7 (no interpolation needed).
BASIC = trials([0.9, 0.8, 0.4], [0.7, 0.3, 0.1])


def test_det_curve_basic_by_hand():
    thresholds, far, frr = det_curve(*BASIC)
    np.testing.assert_array_equal(thresholds[:-1], [0.1, 0.3, 0.4, 0.7, 0.8, 0.9])
    assert thresholds[-1] == np.nextafter(0.9, np.inf)
    np.testing.assert_allclose(far, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    np.testing.assert_allclose(frr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])


def test_eer_basic_by_hand():
    eer, threshold = compute_eer(*BASIC)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.7)


def test_eer_interpolates_between_neighbouring_points():
    # Targets [0.9, 0.4], non-targets [0.6, 0.3, 0.1]:
    #   t=0.4: FAR 1/3 (0.6 accepted), FRR 0    -> FRR-FAR = -1/3
    #   t=0.6: FAR 1/3,                FRR 1/2  -> FRR-FAR = +1/6
    # a = (1/3) / (1/3 + 1/6) = 2/3
    # EER = FAR: 1/3 + 2/3*(1/3-1/3) = 1/3; FRR: 0 + 2/3*(1/2) = 1/3 (same)
    # threshold = 0.4 + 2/3*(0.6-0.4) = 0.5333...
    eer, threshold = compute_eer(*trials([0.9, 0.4], [0.6, 0.3, 0.1]))
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.4 + 0.2 * 2 / 3)


def test_eer_with_a_tie_across_classes():
    # Targets [0.8, 0.5], non-targets [0.5, 0.2]; the two 0.5 scores move together.
    #   t=0.5: FAR 1/2, FRR 0   (gap -1/2)
    #   t=0.8: FAR 0,   FRR 1/2 (gap +1/2)
    # a = 1/2 -> EER = 1/2 + 1/2*(0-1/2) = 1/4, threshold = 0.5 + 1/2*0.3 = 0.65
    eer, threshold = compute_eer(*trials([0.8, 0.5], [0.5, 0.2]))
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.65)


def test_eer_all_scores_tied_is_chance():
    # One operating point accepts all (FAR 1, FRR 0), the next rejects all
    # (FAR 0, FRR 1): the midpoint of the segment is 0.5.
    eer, threshold = compute_eer(*trials([0.5, 0.5], [0.5, 0.5, 0.5]))
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(0.5)


def test_eer_perfect_separation_is_zero():
    # Targets [0.9, 0.8], non-targets [0.2, 0.1]: at t=0.8 FAR=0 and FRR=0.
    assert compute_eer(*trials([0.9, 0.8], [0.2, 0.1])) == (0.0, 0.8)


def test_eer_reversed_scores_is_one():
    # Targets [0.1, 0.2], non-targets [0.8, 0.9]: at t=0.8 every non-target is
    # still accepted (FAR=1) and every target already rejected (FRR=1).
    assert compute_eer(*trials([0.1, 0.2], [0.8, 0.9])) == (1.0, 0.8)


def test_min_dcf_basic_by_hand():
    # p_target=0.01: normaliser min(0.01, 0.99) = 0.01, so
    # DCF_norm = (0.01*FRR + 0.99*FAR)/0.01 = FRR + 99*FAR over the BASIC points:
    #   99, 66, 33, 33.33, 1/3 (t=0.8), 2/3, 1  -> min 1/3 at t=0.8
    dcf, threshold = compute_min_dcf(*BASIC, p_target=0.01)
    assert dcf == pytest.approx(1 / 3)
    assert threshold == 0.8


# Targets [0.9, 0.5]; non-targets one at 0.7 and 39 at 0.1 (40 in all).
#   t     FAR    FRR
#   0.1   1      0
#   0.5   1/40   0
#   0.7   1/40   1/2
#   0.9   0      1/2
#   >0.9  0      1
PRIOR = trials([0.9, 0.5], [0.7] + [0.1] * 39)


def test_min_dcf_depends_on_prior_at_p_001():
    # FRR + 99*FAR: 99, 2.475, 2.975, 0.5, 1 -> min 0.5 at t=0.9
    dcf, threshold = compute_min_dcf(*PRIOR, p_target=0.01)
    assert dcf == pytest.approx(0.5)
    assert threshold == 0.9


def test_min_dcf_depends_on_prior_at_p_005():
    # normaliser min(0.05, 0.95) = 0.05 -> DCF_norm = FRR + 19*FAR:
    #   19, 0.475, 0.975, 0.5, 1 -> min 0.475 at t=0.5
    dcf, threshold = compute_min_dcf(*PRIOR, p_target=0.05)
    assert dcf == pytest.approx(0.475)
    assert threshold == 0.5


def test_min_dcf_costs():
    # c_miss=2, c_fa=1, p=0.5: normaliser min(1.0, 0.5) = 0.5,
    # DCF_norm = (1.0*FRR + 0.5*FAR)/0.5 = 2*FRR + FAR on BASIC:
    #   1, 2/3, 1/3, 1, 2/3, 4/3, 2 -> min 1/3 at t=0.4
    dcf, threshold = compute_min_dcf(*BASIC, p_target=0.5, c_miss=2.0, c_fa=1.0)
    assert dcf == pytest.approx(1 / 3)
    assert threshold == 0.4


@pytest.mark.parametrize("fn", [det_curve, compute_eer, compute_min_dcf])
@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [1, 1], "No non-target"),
        ([0.1, 0.2], [0, 0], "No target"),
        ([0.1, np.nan], [1, 0], "NaN"),
        ([0.1, 0.2, 0.3], [1, 0], "differ in length"),
        ([0.1, np.inf], [1, 0], "infinite"),
        ([0.1, 0.2], [1, 2], "labels must be"),
    ],
)
def test_verification_metrics_reject_bad_trials(fn, scores, labels, message):
    with pytest.raises(ValueError, match=message):
        fn(np.array(scores), np.array(labels))


def test_min_dcf_rejects_bad_prior():
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf(*BASIC, p_target=1.0)


score_lists = st.lists(
    st.floats(min_value=-10, max_value=10, allow_nan=False, allow_subnormal=False),
    min_size=1,
    max_size=30,
)


@given(score_lists, score_lists)
def test_det_curve_invariants(targets, nontargets):
    thresholds, far, frr = det_curve(*trials(targets, nontargets))
    assert np.all(np.diff(thresholds) > 0)
    assert np.all(np.diff(far) <= 0) and np.all(np.diff(frr) >= 0)
    assert (far[0], frr[0], far[-1], frr[-1]) == (1.0, 0.0, 0.0, 1.0)
    eer, _ = compute_eer(*trials(targets, nontargets))
    assert 0.0 <= eer <= 1.0
    dcf, _ = compute_min_dcf(*trials(targets, nontargets))
    assert 0.0 <= dcf <= 1.0


@given(score_lists, score_lists)
def test_eer_invariant_under_increasing_transform(targets, nontargets):
    # Only the order of the scores matters, so doubling them (exact in floating
    # point, hence order-preserving even for near-ties) gives the same EER and
    # a doubled threshold.
    eer, threshold = compute_eer(*trials(targets, nontargets))
    eer2, threshold2 = compute_eer(*trials([2 * s for s in targets], [2 * s for s in nontargets]))
    assert eer2 == pytest.approx(eer, abs=1e-12)
    assert threshold2 == pytest.approx(2 * threshold, abs=1e-9)


# Three samples, four classes; true classes 0, 2, 3.
#   row 0: [0.9, 0.1, 0.0, 0.0] true 0 -> rank 1 (highest)
#   row 1: [0.5, 0.1, 0.3, 0.1] true 2 -> rank 2 (0.5 above it)
#   row 2: [0.4, 0.3, 0.2, 0.1] true 3 -> rank 4 (last)
LOGITS = np.array([[0.9, 0.1, 0.0, 0.0], [0.5, 0.1, 0.3, 0.1], [0.4, 0.3, 0.2, 0.1]])
CLASSES = np.array([0, 2, 3])


@pytest.mark.parametrize(("k", "expected"), [(1, 1 / 3), (2, 2 / 3), (3, 2 / 3), (4, 1.0)])
def test_top_k_accuracy_by_hand(k, expected):
    assert top_k_accuracy(LOGITS, CLASSES, k=k) == pytest.approx(expected)


def test_top_k_ties_count_against_the_sample():
    # Constant logits carry no information: the true class is tied with all
    # others, so it is never within the top 1 (of 3) but always within the top 3.
    logits = np.zeros((2, 3))
    labels = np.array([0, 2])
    assert top_k_accuracy(logits, labels, k=1) == 0.0
    assert top_k_accuracy(logits, labels, k=3) == 1.0


@pytest.mark.parametrize(
    ("logits", "labels", "k", "message"),
    [
        (LOGITS, CLASSES, 0, "k must be"),
        (LOGITS, CLASSES, 5, "k must be"),
        (LOGITS, np.array([0, 1]), 1, "labels must have shape"),
        (LOGITS, np.array([0, 1, 4]), 1, "class indices"),
        (LOGITS[0], CLASSES[:1], 1, r"\(N, C\)"),
        (np.where(LOGITS > 0.8, np.nan, LOGITS), CLASSES, 1, "NaN"),
    ],
)
def test_top_k_rejects_bad_input(logits, labels, k, message):
    with pytest.raises(ValueError, match=message):
        top_k_accuracy(logits, labels, k=k)


# ---------------------------------------------------------------------- operating points
def test_error_rates_by_hand():
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    # accept >= 0.4: targets 0.9, 0.8, 0.4 (none rejected); strangers 0.7 accepted (1 of 3)
    assert error_rates(scores, labels, 0.4) == pytest.approx((1 / 3, 0.0))
    # accept >= 0.75: target 0.4 rejected (1 of 3); no stranger accepted
    assert error_rates(scores, labels, 0.75) == pytest.approx((0.0, 1 / 3))
    assert error_rates(scores, labels, 0.7) == pytest.approx((1 / 3, 1 / 3))  # a score on the threshold passes


def test_threshold_at_far_by_hand():
    strangers = np.array([0.1, 0.5, 0.2, 0.4, 0.3, 0.6, 0.0, 0.9, 0.8, 0.7])
    # 10 strangers: 20 % may pass, i.e. 0.9 and 0.8; the threshold is just above 0.7
    t = threshold_at_far(strangers, 0.2)
    assert 0.7 < t < 0.7 + 1e-12
    assert np.mean(strangers >= t) == pytest.approx(0.2)
    assert threshold_at_far(strangers, 0.25) == t  # 2.5 strangers may pass: still 2
    assert threshold_at_far(strangers, 0.0) > 0.9  # nobody passes
    assert threshold_at_far(strangers, 1.0) == 0.0  # everybody passes: the lowest score


@given(
    arrays(np.float64, st.integers(1, 60), elements=st.floats(-1, 1)),
    st.floats(0.0, 1.0),
)
def test_threshold_at_far_keeps_its_promise_and_is_the_lowest(strangers, max_far):
    t = threshold_at_far(strangers, max_far)
    assert np.mean(strangers >= t) <= max_far + 1e-12
    lower = strangers[strangers < t]
    if lower.size:  # the next score down would break the promise
        assert np.mean(strangers >= lower.max()) > max_far


@pytest.mark.parametrize(
    ("strangers", "max_far", "message"),
    [([], 0.1, "at least one"), ([0.1, np.nan], 0.1, "finite"), ([0.1], 1.5, r"\[0, 1\]")],
)
def test_threshold_at_far_rejects_bad_input(strangers, max_far, message):
    with pytest.raises(ValueError, match=message):
        threshold_at_far(np.array(strangers, dtype=float), max_far)
