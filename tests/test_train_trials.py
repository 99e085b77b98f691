"""train/trials.py: the segment trials that the validation EER on held-out speakers uses."""

from __future__ import annotations

import numpy as np

from speakerdemo.scoring import cosine
from train.trials import segment_trials


def test_segment_trials_cut_consecutive_segments_and_pair_them_all() -> None:
    """Segments in clip order, as many as fit and as the speaker still needs; a clip is read only
    while its speaker needs segments, and speakers past ``max_speakers`` not at all."""
    reads: list[str] = []

    def clip(name: str, seconds: float):
        def read() -> np.ndarray:
            reads.append(name)
            return np.arange(int(seconds * 10), dtype=np.float32)

        return read

    clips = [
        ("a", clip("a1", 2.5)),
        ("a", clip("a2", 1.0)),
        ("a", clip("a3", 5.0)),
        ("b", clip("b1", 0.5)),
        ("b", clip("b2", 1.0)),
        ("c", clip("c1", 3.0)),
    ]
    trials = segment_trials(clips, length=10, per_speaker=3, max_speakers=2)
    assert reads == ["a1", "a2", "b1", "b2"]
    assert trials.speakers == ["a", "a", "a", "b"]
    assert [s[0] for s in trials.segments] == [0, 10, 0, 0]
    np.testing.assert_array_equal(trials.labels, [1, 1, 0, 1, 0, 0])
    vectors = np.random.default_rng(0).standard_normal((4, 8))
    first, second = trials.pairs
    np.testing.assert_allclose(
        trials.pair_scores(vectors), [cosine(vectors[i], vectors[j]) for i, j in zip(first, second)]
    )
