"""Tests for speakerdemo.scoring: cosine, AS-Norm and Calibration."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from speakerdemo.metrics import compute_eer, compute_min_dcf
from speakerdemo.scoring import Calibration, adaptive_snorm, cosine


def test_cosine_vectors_by_hand():
    # [1,0]·[1,1] = 1; |a|=1, |b|=sqrt(2) -> 1/sqrt(2)
    assert cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    # [3,4]·[-4,3] = -12+12 = 0 -> orthogonal
    assert cosine(np.array([3.0, 4.0]), np.array([-4.0, 3.0])) == pytest.approx(0.0)
    # scale does not matter; opposite directions give -1
    assert cosine(np.array([2.0, 0.0]), np.array([-5.0, 0.0])) == pytest.approx(-1.0)
    assert isinstance(cosine(np.array([1.0, 2.0]), np.array([2.0, 1.0])), float)


def test_cosine_matrix_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [0.0, -1.0]])
    # rows of a: e1, e2, (e1+e2)/sqrt2; rows of b: e1, -e2
    expected = np.array([[1.0, 0.0], [0.0, -1.0], [1 / math.sqrt(2), -1 / math.sqrt(2)]])
    sims = cosine(a, b)
    assert sims.shape == (3, 2)
    np.testing.assert_allclose(sims, expected, atol=1e-12)
    np.testing.assert_allclose(cosine(a[1], b), expected[1], atol=1e-12)
    np.testing.assert_allclose(cosine(a, b[1]), expected[:, 1], atol=1e-12)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros(3), np.ones(3), "zero vector"),
        (np.ones((2, 3)), np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), "zero vector"),
        (np.ones(3), np.ones(4), "sizes differ"),
        (np.array([1.0, np.nan]), np.ones(2), "NaN"),
        (np.ones((1, 1, 2)), np.ones(2), "1-D or 2-D"),
    ],
)
def test_cosine_rejects_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        cosine(a, b)


@given(
    arrays(np.float64, (3, 4), elements=st.floats(-100, 100)),
    arrays(np.float64, (2, 4), elements=st.floats(-100, 100)),
)
def test_cosine_matrix_is_bounded_and_symmetric(a, b):
    # Skip directionless rows: they are rejected (tested above).
    if (np.linalg.norm(a, axis=1) < 1e-6).any() or (np.linalg.norm(b, axis=1) < 1e-6).any():
        return
    sims = cosine(a, b)
    assert np.all(np.abs(sims) <= 1.0)
    np.testing.assert_allclose(sims, cosine(b, a).T, atol=1e-12)


def test_adaptive_snorm_by_hand():
    # s = 0.5, top_n = 2
    # enroll cohort [0.1, 0.3, 0.2, 0.0] -> top 2 [0.3, 0.2]: mu_e 0.25, sd_e 0.05
    # test cohort   [0.4, 0.0, 0.2, 0.1] -> top 2 [0.4, 0.2]: mu_t 0.30, sd_t 0.10
    # s' = 0.5 * ((0.5-0.25)/0.05 + (0.5-0.3)/0.1) = 0.5 * (5 + 2) = 3.5
    out = adaptive_snorm(
        np.array([0.5]),
        np.array([[0.1, 0.3, 0.2, 0.0]]),
        np.array([[0.4, 0.0, 0.2, 0.1]]),
        top_n=2,
    )
    assert out.shape == (1,)
    assert out[0] == pytest.approx(3.5)


def test_adaptive_snorm_top_n_larger_than_cohort_uses_all():
    # cohort [0, 1, 2, 3] on both sides: mu 1.5, population sd sqrt(1.25)
    # s' = 0.5 * 2 * (2.0 - 1.5) / sqrt(1.25) = 0.5 / sqrt(1.25)
    cohort = np.array([[0.0, 1.0, 2.0, 3.0]])
    out = adaptive_snorm(np.array([2.0]), cohort, cohort, top_n=200)
    assert out[0] == pytest.approx(0.5 / math.sqrt(1.25))


def test_adaptive_snorm_is_per_trial():
    # Trial 1 equals the hand example; trial 0 uses cohorts [1, 3] (mu 2, sd 1)
    # on both sides: s' = 0.5 * 2 * (4-2)/1 = 2. Rows must not mix.
    out = adaptive_snorm(
        np.array([4.0, 0.5]),
        np.array([[1.0, 3.0, -9.0, -9.0], [0.1, 0.3, 0.2, 0.0]]),
        np.array([[3.0, 1.0, -9.0, -9.0], [0.4, 0.0, 0.2, 0.1]]),
        top_n=2,
    )
    np.testing.assert_allclose(out, [2.0, 3.5])


@pytest.mark.parametrize(
    ("scores", "enroll", "test", "top_n", "message"),
    [
        ([0.5], [[0.1, 0.2]], [[0.1, 0.2]], 1, "top_n"),
        ([0.5], [[0.2, 0.2, 0.1]], [[0.1, 0.2, 0.3]], 2, "all equal"),
        ([0.5, 0.6], [[0.1, 0.2]], [[0.1, 0.2], [0.1, 0.2]], 2, "enroll_cohort must have shape"),
        ([0.5], [[0.1, 0.2]], [[0.1]], 2, "test_cohort must have shape"),
        ([np.nan], [[0.1, 0.2]], [[0.1, 0.2]], 2, "finite"),
    ],
)
def test_adaptive_snorm_rejects_bad_input(scores, enroll, test, top_n, message):
    with pytest.raises(ValueError, match=message):
        adaptive_snorm(np.array(scores), np.array(enroll), np.array(test), top_n=top_n)


def gaussian_trials(d: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance target scores at +d/2 and non-target scores at -d/2."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(d / 2, 1.0, n), rng.normal(-d / 2, 1.0, n)])
    labels = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    return scores, labels


@pytest.fixture(scope="module")
def gaussian_calibration() -> Calibration:
    return Calibration.from_scores(*gaussian_trials(2.0), trials="synthetic d=2")


def test_calibration_eer_matches_analytic_gaussian(gaussian_calibration):
    # The classes cross at 0 by symmetry; there FAR = P(N(-1,1) >= 0) = Phi(-1)
    # and FRR = P(N(1,1) < 0) = Phi(-1) = 0.5*erfc(1/sqrt2) = 0.158655...
    # With 20000 trials per class the sampling std of a rate is ~0.003.
    analytic = 0.5 * math.erfc(1 / math.sqrt(2))
    assert gaussian_calibration.eer == pytest.approx(analytic, abs=0.01)
    assert gaussian_calibration.threshold == pytest.approx(0.0, abs=0.05)


def test_calibration_agrees_with_metrics(gaussian_calibration):
    scores, labels = gaussian_trials(2.0)
    assert (gaussian_calibration.eer, gaussian_calibration.threshold) == compute_eer(scores, labels)
    assert gaussian_calibration.min_dcf == compute_min_dcf(scores, labels, p_target=0.01)[0]
    assert gaussian_calibration.trials == "synthetic d=2"
    # Every grid point holds the exact rates at that threshold.
    for i in (0, 57, 100, 163, 200):
        t = gaussian_calibration.thresholds[i]
        expected = (np.mean(scores[labels == 0] >= t), np.mean(scores[labels == 1] < t))
        assert (gaussian_calibration.far[i], gaussian_calibration.frr[i]) == expected


def test_calibration_grid_and_histograms_shape(gaussian_calibration):
    cal = gaussian_calibration
    assert len(cal.thresholds) == len(cal.far) == len(cal.frr) == 201
    assert (cal.far[0], cal.frr[0], cal.far[-1], cal.frr[-1]) == (1.0, 0.0, 0.0, 1.0)
    assert len(cal.bin_edges) == 61 and len(cal.target_hist) == len(cal.nontarget_hist) == 60
    widths = np.diff(cal.bin_edges)
    # densities integrate to one per class
    assert np.sum(np.array(cal.target_hist) * widths) == pytest.approx(1.0)
    assert np.sum(np.array(cal.nontarget_hist) * widths) == pytest.approx(1.0)


def test_rates_at_eer_threshold_is_eer(gaussian_calibration):
    far, frr = gaussian_calibration.rates_at(gaussian_calibration.threshold)
    assert far == pytest.approx(gaussian_calibration.eer, abs=0.005)
    assert frr == pytest.approx(gaussian_calibration.eer, abs=0.005)


def test_rates_at_clamps_outside_the_grid(gaussian_calibration):
    assert gaussian_calibration.rates_at(-1e9) == (1.0, 0.0)
    assert gaussian_calibration.rates_at(1e9) == (0.0, 1.0)


def test_from_scores_tiny_grid_by_hand():
    # Targets [0.9, 0.8, 0.4], non-targets [0.7, 0.3, 0.1]; grid=3 spans
    # [0.1, next float after 0.9] -> thresholds 0.1, 0.5, ~0.9.
    #   t=0.1: FAR 1,   FRR 0
    #   t=0.5: FAR 1/3 (0.7), FRR 1/3 (0.4)
    #   t>0.9: FAR 0,   FRR 1
    # bins=2 over [0.1, 0.9] -> edges 0.1, 0.5, 0.9 (width 0.4)
    #   targets  [0.4 | 0.8, 0.9] -> densities (1/3)/0.4, (2/3)/0.4
    #   non-tgt  [0.1, 0.3 | 0.7] -> densities (2/3)/0.4, (1/3)/0.4
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    cal = Calibration.from_scores(scores, labels, grid=3, bins=2)
    np.testing.assert_allclose(cal.thresholds, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(cal.far, [1, 1 / 3, 0])
    np.testing.assert_allclose(cal.frr, [0, 1 / 3, 1])
    np.testing.assert_allclose(cal.bin_edges, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(cal.target_hist, [1 / 1.2, 2 / 1.2])
    np.testing.assert_allclose(cal.nontarget_hist, [2 / 1.2, 1 / 1.2])
    # halfway between grid points 0.1 and 0.5: FAR (1 + 1/3)/2 = 2/3, FRR 1/6
    assert cal.rates_at(0.3) == pytest.approx((2 / 3, 1 / 6))


def test_to_dict_is_json_and_round_trips(gaussian_calibration):
    d = gaussian_calibration.to_dict()
    text = json.dumps(d)
    restored = Calibration.from_dict(json.loads(text))
    # Rounding happens once: a second trip changes nothing.
    assert restored.to_dict() == d
    assert restored.trials == "synthetic d=2"
    assert restored.eer == pytest.approx(gaussian_calibration.eer, abs=1e-6)
    np.testing.assert_allclose(restored.thresholds, gaussian_calibration.thresholds, atol=1e-6)
    np.testing.assert_allclose(restored.far, gaussian_calibration.far, atol=1e-6)
    # Grid thresholds are long floats; the dict holds them to 6 decimals.
    assert any(v != round(v, 6) for v in gaussian_calibration.thresholds)
    assert all(v == round(v, 6) for v in d["thresholds"] + [d["threshold"], d["eer"]])


def _valid_dict() -> dict:
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    return Calibration.from_scores(scores, labels, trials="tiny", grid=5, bins=3).to_dict()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("eer"), r"missing \['eer'\]"),
        (lambda d: d.update(extra=1), r"unknown \['extra'\]"),
        (lambda d: d["far"].pop(), "same length"),
        (lambda d: d["target_hist"].append(0.0), "one more entry"),
        (lambda d: d.update(bin_edges=d["bin_edges"][:-1]), "one more entry"),
        (lambda d: d.update(eer="0.2"), "'eer' must hold finite numbers"),
        (lambda d: d.update(threshold=True), "'threshold' must hold finite numbers"),
        (lambda d: d["frr"].__setitem__(1, float("nan")), "'frr' must hold finite numbers"),
        (lambda d: d.update(far=None), "'far' must be a list"),
        (lambda d: d.update(trials=3), "'trials' must be a string"),
        (lambda d: d["thresholds"].reverse(), "ascending"),
        (lambda d: d["far"].__setitem__(0, 1.5), r"\[0, 1\]"),
        (lambda d: d.update(thresholds=[0.0], far=[1.0], frr=[0.0]), "at least 2"),
    ],
)
def test_from_dict_rejects_bad_input(mutate, message):
    d = _valid_dict()
    Calibration.from_dict(d)  # the unmutated dict is accepted
    mutate(d)
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(d)


def test_from_dict_rejects_non_dict():
    with pytest.raises(ValueError, match="must be a dict"):
        Calibration.from_dict([1, 2])


def test_from_scores_rejects_bad_grid():
    with pytest.raises(ValueError, match="grid must be"):
        Calibration.from_scores(np.array([0.1, 0.2]), np.array([1, 0]), grid=1)


# ---------------------------------------------------------------------- across conditions
def _condition(strangers: list[float], same: list[float], kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.array(same + strangers)
    labels = np.array([1] * len(same) + [0] * len(strangers))
    return scores, labels, np.array([kind] * len(scores))


def test_across_conditions_by_hand():
    """Clean strangers score 0.0-0.9 in steps of 0.1, phone strangers 0.3 higher: at 10 % FAR the
    clean threshold is just above 0.8 and the phone one just above 1.1, a shift of 0.3."""
    clean = [i / 10 for i in range(10)]
    scored = {
        "clean": _condition(clean, [0.95, 0.85, 0.5], "16 kHz"),
        "noisy": _condition([s - 0.5 for s in clean], [0.9], "16 kHz"),  # lower: does not bind
        "phone": _condition([s + 0.3 for s in clean], [1.2, 1.0], "8 kHz"),
    }
    cal = Calibration.across_conditions(scored, "16 kHz", 0.1, "three conditions", min_nontargets=10)
    assert 0.8 < cal.threshold < 0.8 + 1e-9
    assert cal.shifts["16 kHz"] == 0.0 and cal.shifts["8 kHz"] == pytest.approx(0.3)
    assert cal.trials == "three conditions" and "10 %" in cal.rule
    assert set(cal.conditions) == {"clean", "noisy", "phone"}
    # Each condition's curve: at the threshold 1 of 10 clean strangers passes
    # (the grid interpolates towards the 2 of 10 just below it), and 1 of 3 same-speaker pairs fails.
    far, frr = cal.conditions["clean"].rates_at(cal.threshold)
    assert 0.1 <= far < 0.2 and frr == pytest.approx(1 / 3, abs=0.01)
    phone = cal.adjusted(scored["phone"][0], "8 kHz")
    np.testing.assert_allclose(phone, scored["phone"][0] - 0.3, atol=1e-9)
    assert np.mean(phone[scored["phone"][1] == 0] >= cal.threshold) == pytest.approx(0.1)
    # One kind per score; a kind without a shift is not shifted.
    np.testing.assert_allclose(cal.adjusted([1.0, 1.0, 1.0], ["8 kHz", "16 kHz", "1-2 s"]), [0.7, 1.0, 1.0])


def test_only_binding_conditions_set_the_threshold_but_all_are_measured():
    clean = [i / 10 for i in range(10)]
    scored = {
        "clean": _condition(clean, [0.95], "16 kHz"),
        "noisy": _condition([s + 0.5 for s in clean], [0.9], "16 kHz"),  # would set it at 1.3
    }
    strict = Calibration.across_conditions(scored, "16 kHz", 0.1, "x", min_nontargets=10)
    assert 1.3 < strict.threshold < 1.3 + 1e-9 and "every condition" in strict.rule
    loose = Calibration.across_conditions(scored, "16 kHz", 0.1, "x", min_nontargets=10, binding=["clean"])
    assert 0.8 < loose.threshold < 0.8 + 1e-9 and "at which clean accepts" in loose.rule
    assert set(loose.conditions) == {"clean", "noisy"}
    assert loose.conditions["noisy"].rates_at(loose.threshold)[0] > 0.5  # measured, not bound
    with pytest.raises(ValueError, match="were not scored"):
        Calibration.across_conditions(scored, "16 kHz", 0.1, "x", binding=["phone"])


def test_a_minority_kind_of_a_condition_does_not_vote():
    """Noisy pairs the detector takes for clean ones (here 20 of 100) are measured, not the rule."""
    clean = [i / 100 for i in range(100)]
    noisy = np.array([0.5 + i / 200 for i in range(100)])
    kinds = np.array(["noisy"] * 80 + ["16 kHz"] * 20)
    scored = {
        "clean": _condition(clean, [0.99], "16 kHz"),
        "noisy": (np.r_[0.99, noisy], np.r_[1, np.zeros(100)].astype(int), np.concatenate([["noisy"], kinds])),
    }
    cal = Calibration.across_conditions(scored, "16 kHz", 0.05, "x", min_nontargets=10)
    assert 0.94 < cal.threshold < 0.95 + 1e-9  # clean alone; the 20 misread noisy pairs (19 %) do not vote
    assert "noisy" in cal.shifts
    strict = Calibration.across_conditions(scored, "16 kHz", 0.05, "x", min_nontargets=10, min_share=0.0)
    assert strict.threshold > cal.threshold


def test_across_conditions_needs_the_reference_kind():
    scored = {"phone": _condition([0.1] * 20, [0.9], "8 kHz")}
    with pytest.raises(ValueError, match="16 kHz"):
        Calibration.across_conditions(scored, "16 kHz", 0.05, "x", min_nontargets=10)


def test_a_kind_with_too_few_strangers_does_not_vote():
    scored = {
        "clean": _condition([i / 100 for i in range(100)], [0.9], "16 kHz"),
        "few short": _condition([0.99, 0.98], [0.9], "1-2 s"),
    }
    cal = Calibration.across_conditions(scored, "16 kHz", 0.05, "x", min_nontargets=10)
    assert "1-2 s" not in cal.shifts and 0.94 < cal.threshold < 0.95 + 1e-9


def test_across_conditions_round_trips_and_old_dicts_still_load():
    scored = {
        "clean": _condition([i / 50 for i in range(50)], [0.9, 0.95], "16 kHz"),
        "phone": _condition([0.2 + i / 50 for i in range(50)], [1.1, 0.99], "8 kHz"),
    }
    cal = Calibration.across_conditions(scored, "16 kHz", 0.1, "two", min_nontargets=10)
    d = json.loads(json.dumps(cal.to_dict()))
    restored = Calibration.from_dict(d)
    assert restored.to_dict() == d
    assert restored.shifts == pytest.approx(cal.shifts, abs=1e-6) and restored.rule == cal.rule
    assert restored.conditions["phone"].rates_at(0.8) == pytest.approx(cal.conditions["phone"].rates_at(0.8), abs=1e-5)
    # A checkpoint calibrated before conditions existed: EER rule, no shifts, no conditions.
    old = _valid_dict()
    for key in ("rule", "conditions", "shifts"):
        old.pop(key)
    legacy = Calibration.from_dict(old)
    assert legacy.shifts == {} and legacy.conditions == {} and "equal-error-rate" in legacy.rule
    assert legacy.adjusted(0.5, "8 kHz") == 0.5


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(shifts=[0.1]), "'shifts' must be a dict"),
        (lambda d: d.update(shifts={"8 kHz": "0.1"}), "'shifts' must hold finite numbers"),
        (lambda d: d.update(conditions={"8 kHz": {"eer": 0.1}}), "keys do not match"),
        (lambda d: d.update(rule=None), "'rule' must be a string"),
    ],
)
def test_from_dict_rejects_bad_condition_fields(mutate, message):
    d = _valid_dict()
    mutate(d)
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(d)
