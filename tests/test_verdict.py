"""speakerdemo.verdict: the uncertain band and the log-likelihood ratio on synthetic calibrations
whose answers are known, the open-set threshold, and SpeakerEncoder.verify / identify on real
speech (speechocean762 test-split speakers, conftest's ``speech_clips``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speakerdemo.conditions import clip_condition
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.gallery import UNKNOWN, Gallery
from speakerdemo.scoring import Calibration
from speakerdemo.verdict import (
    DIFFERENT,
    MAX_UNDECIDED,
    SAME,
    TARGET_FAR,
    UNCERTAIN,
    judge,
    llr_line,
    open_set_threshold,
    reconsider,
    uncertain_band,
)


def gaussian_calibration(mu_same: float, mu_other: float, sigma: float, n: int = 20000) -> Calibration:
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(mu_same, sigma, n), rng.normal(mu_other, sigma, n)]
    labels = np.r_[np.ones(n), np.zeros(n)]
    return Calibration.from_scores(scores, labels, trials="synthetic", grid=801, bins=80)


def test_llr_of_two_gaussians_by_hand():
    """Equal spreads: LLR(s) = (mu1 - mu0) / sigma^2 * s - (mu1^2 - mu0^2) / (2 sigma^2): slope 4, offset -2
    for means 1 and 0, sigma 0.5."""
    slope, offset = llr_line(gaussian_calibration(1.0, 0.0, 0.5))
    assert slope == pytest.approx(4.0, rel=0.05) and offset == pytest.approx(-2.0, rel=0.05)


def test_band_keeps_the_far_target_and_the_undecided_bound():
    cal = gaussian_calibration(2.0, 0.0, 1.0)
    for threshold in (0.5, 1.0, 1.645):
        low, high = uncertain_band(cal, threshold)
        assert low <= threshold <= high
        far_high, frr_high = cal.rates_at(high)
        far_low, frr_low = cal.rates_at(low)
        assert far_low - far_high <= MAX_UNDECIDED + 1e-9 and frr_high - frr_low <= MAX_UNDECIDED + 1e-9
        # "same" above the band keeps to the target, unless an undecided bound stopped the band.
        far0, frr0 = cal.rates_at(threshold)
        stopped = max(frr_high - frr0, far0 - far_high) > MAX_UNDECIDED - 0.01
        assert far_high <= TARGET_FAR + 0.01 or stopped
    # Far apart: nothing is close, nothing undecided beyond a sliver.
    wide = gaussian_calibration(10.0, 0.0, 1.0)
    low, high = uncertain_band(wide, 5.0)
    assert high == 5.0 and wide.rates_at(low)[0] - wide.rates_at(5.0)[0] <= MAX_UNDECIDED


def test_judge_decides_by_the_band_and_reconsider_moves_it():
    cal = gaussian_calibration(2.0, 0.0, 1.0)
    cal.threshold = 1.0
    middle = judge(cal, 1.0, None, 1.0)
    low, high = middle.band
    assert middle.decision == UNCERTAIN and "calibrate on recordings of your own" in middle.advice
    assert judge(cal, high + 0.01, None, 1.0).decision == SAME
    assert judge(cal, low - 0.01, None, 1.0).decision == DIFFERENT
    moved = reconsider(cal, middle, 3.0)  # a higher threshold moves the band with it
    assert moved.band == pytest.approx((low + 2.0, high + 2.0)) and moved.decision == DIFFERENT
    assert moved.far == pytest.approx(cal.rates_at(3.0)[0]) and moved.score == middle.score
    none = judge(None, 0.3, None, 0.2)  # no calibration: the threshold alone, rates unknown
    assert none.decision == SAME and none.band == (0.2, 0.2) and none.far is None and none.llr is None


# ---------------------------------------------------------------------- real speech
@pytest.fixture(scope="module")
def encoder(trained_checkpoint: Path) -> SpeakerEncoder:
    return SpeakerEncoder.from_pretrained(trained_checkpoint, device="cpu")


def test_verify_takes_clips_embeddings_and_vectors(encoder, speech_clips):
    a, b, c = speech_clips.values()
    same = encoder.verify(a[0], a[1])
    assert same.decision == SAME and same.kind is not None and same.far is not None and same.llr > 0
    other = encoder.verify(encoder.embed(a[0]), encoder.embed(b[0]))
    assert other.decision == DIFFERENT and other.llr < 0
    vectors = encoder.verify(encoder.embed(a[0]).vector, encoder.embed(a[1]).vector)
    assert vectors.kind is None and vectors.score == pytest.approx(same.score, abs=1e-6)


def test_open_set_threshold_grows_with_the_gallery(encoder, speech_clips):
    gallery = Gallery()
    names = list(speech_clips)
    thresholds = []
    for name in names:
        gallery.enroll(name, [encoder.embed(p).vector for p in speech_clips[name][:2]])
        thresholds.append(open_set_threshold(encoder, gallery))
    assert thresholds[0] == encoder.threshold  # one person: one chance
    assert thresholds[0] <= thresholds[1] <= thresholds[2]
    query = encoder.embed(speech_clips[names[0]][3])
    found = encoder.identify(query, gallery)
    expected = open_set_threshold(encoder, gallery, kind=clip_condition(query))  # the query's kind of clip
    assert found.best == names[0] and found.threshold == pytest.approx(expected) and expected >= thresholds[0]
    alone = Gallery()
    alone.enroll(names[0], list(gallery.clips(names[0])))
    assert encoder.identify(speech_clips[names[1]][3], alone).best == UNKNOWN
