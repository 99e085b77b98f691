"""speakerdemo.cohort: AS-Norm against a checkpoint's cohort, by hand, through the encoder, and
through save -> load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_encoder

from speakerdemo.checkpoint import CheckpointError
from speakerdemo.cohort import COHORT_FILE, Cohort
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.scoring import adaptive_snorm, cosine

# Four unit cohort vectors in 2-D at 0, 30, 60 and 90 degrees.
ANGLES = np.radians([0.0, 30.0, 60.0, 90.0])
VECTORS = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)


def test_stats_by_hand():
    # A query at 0 degrees meets the cohort at cos 0, 30, 60, 90 = 1, 0.86603, 0.5, 0: the top 2
    # are 1 and 0.86603, mean 0.93301, population spread 0.06699.
    mean, std = Cohort(VECTORS, top_n=2).stats(np.array([[3.0, 0.0]]))  # any length: rows are unit-normed
    np.testing.assert_allclose(mean, [0.933013], atol=1e-5)
    np.testing.assert_allclose(std, [0.066987], atol=1e-5)


def test_floors_raise_the_mean_and_spread_of_a_clip_far_from_the_cohort():
    """A query at 180 degrees is far from every cohort clip (top 2 cosines 0 and -0.5): its mean
    and spread are raised to the floors, so its scores are not inflated."""
    cohort = Cohort(VECTORS, top_n=2, mean_floor=0.2, std_floor=0.1)
    raw_mean, raw_std = cohort.raw_stats(np.array([[-1.0, 0.0]]))
    np.testing.assert_allclose([raw_mean[0], raw_std[0]], [-0.25, 0.25], atol=1e-6)
    mean, std = cohort.stats(np.array([[-1.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_allclose(mean, [0.2, 0.933013], atol=1e-5)  # the near clip keeps its own
    np.testing.assert_allclose(std, [0.25, 0.1], atol=1e-5)  # the far clip's spread was above the floor


def test_with_floors_takes_the_percentile_of_the_calibration_clips():
    angles = np.radians(np.arange(0, 181, 15))
    queries = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    cohort = Cohort(VECTORS, top_n=2)
    mean, std = cohort.raw_stats(queries)
    floored = cohort.with_floors(queries, percentile=10.0)
    assert floored.mean_floor == pytest.approx(np.percentile(mean, 10.0))
    assert floored.std_floor == pytest.approx(np.percentile(std, 10.0))
    np.testing.assert_array_equal(floored.vectors, cohort.vectors)


def test_encoder_scores_are_adaptive_snorm_of_the_cosine():
    """With floors that never bind, the encoder's score is exactly the AS-Norm that
    ``train evaluate --cohort`` computes from the cohort scores, and without a cohort the cosine."""
    rng = np.random.default_rng(0)
    encoder = tiny_encoder()
    dim = encoder.model.embed_dim
    cohort_vectors, clips = rng.standard_normal((40, dim)), rng.standard_normal((6, dim))
    first, second = np.array([0, 1, 2, 3]), np.array([1, 2, 4, 5])
    assert encoder.pair_scores(clips, first, second) == pytest.approx(
        [cosine(clips[i], clips[j]) for i, j in zip(first, second)]
    )
    encoder.cohort = Cohort(cohort_vectors, top_n=10)
    expected = adaptive_snorm(
        [cosine(clips[i], clips[j]) for i, j in zip(first, second)],
        cosine(clips[first], cohort_vectors),
        cosine(clips[second], cohort_vectors),
        top_n=10,
    )
    np.testing.assert_allclose(encoder.pair_scores(clips, first, second), expected, rtol=1e-5, atol=1e-6)
    assert encoder.score(clips[0], clips[1]) == pytest.approx(expected[0], rel=1e-5)
    with pytest.raises(ValueError, match="sizes differ"):
        encoder.score(clips[0], clips[1][:-1])


def test_cohort_travels_with_the_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    encoder = tiny_encoder()
    encoder.cohort = Cohort(rng.standard_normal((30, encoder.model.embed_dim)), top_n=5, mean_floor=0.1, std_floor=0.02)
    encoder.save_pretrained(tmp_path / "m")
    entry = json.loads((tmp_path / "m" / "config.json").read_text())["cohort"]
    assert entry == {"file": COHORT_FILE, "size": 30, "top_n": 5, "mean_floor": 0.1, "std_floor": 0.02}
    loaded = SpeakerEncoder.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.cohort.top_n == 5 and loaded.cohort.mean_floor == pytest.approx(0.1)
    clips = rng.standard_normal((4, encoder.model.embed_dim))
    # Stored as float16: scores agree to the rounding of the cohort vectors.
    np.testing.assert_allclose(
        loaded.pair_scores(clips, [0, 1], [2, 3]), encoder.pair_scores(clips, [0, 1], [2, 3]), atol=5e-3
    )
    # A checkpoint without a cohort has none, and writes none.
    plain = tmp_path / "plain"
    tiny_encoder().save_pretrained(plain)
    assert SpeakerEncoder.from_pretrained(plain).cohort is None and not (plain / COHORT_FILE).exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda folder: (folder / COHORT_FILE).unlink(), "missing"),
        (lambda folder: (folder / COHORT_FILE).write_bytes(b"not safetensors"), "not a readable safetensors"),
        (lambda folder: _edit_entry(folder, size=31), "config.json says 31"),
        (lambda folder: _edit_entry(folder, file="../elsewhere.safetensors"), "file name inside the checkpoint"),
        (lambda folder: _edit_entry(folder, top_n=1), "top_n must be at least 2"),
        (lambda folder: _edit_entry(folder, mean_floor=None), "cohort"),
    ],
)
def test_a_damaged_cohort_is_a_checkpoint_error(tmp_path, damage, message):
    encoder = tiny_encoder()
    encoder.cohort = Cohort(np.random.default_rng(2).standard_normal((30, encoder.model.embed_dim)))
    folder = tmp_path / "m"
    encoder.save_pretrained(folder)
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        SpeakerEncoder.from_pretrained(folder)


def _edit_entry(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["cohort"].update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "vectors, message",
    [
        (np.zeros((3, 2)), "zero vector"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
        (np.ones((1, 2)), "at least 2 vectors"),
    ],
)
def test_bad_cohort_vectors_are_refused(vectors, message):
    with pytest.raises(ValueError, match=message):
        Cohort(vectors)
