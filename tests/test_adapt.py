"""speakerdemo.adapt on real speech (speechocean762 test-split speakers, conftest's ``speech_clips``):
what an adapted encoder measured, that it survives save/load with the same verdicts, that the
original is untouched, and the calibration sets it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speakerdemo.adapt import AdaptationError, from_bytes, to_bytes
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.metrics import threshold_at_far


@pytest.fixture(scope="module")
def encoder(trained_checkpoint: Path) -> SpeakerEncoder:
    return SpeakerEncoder.from_pretrained(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def people(speech_clips) -> dict[str, list[Path]]:
    """Two clips of each of the three speakers: the calibration set."""
    return {speaker: clips[:2] for speaker, clips in speech_clips.items()}


@pytest.fixture(scope="module")
def adapted(encoder, people) -> SpeakerEncoder:
    return encoder.adapt(people, target_far=0.05)


def test_what_the_adaptation_measured(encoder, adapted, people):
    report = adapted.adaptation
    assert (report.people, report.clips) == (3, 6)
    assert len(report.same_scores) == 3 and len(report.other_scores) == 3 * 2 * 2  # 1 pair each; 4 per two people
    assert adapted.threshold == report.threshold == threshold_at_far(report.other_scores, 0.05)
    assert report.same_scores.min() > report.other_scores.max()  # these people are far apart
    low, high = report.far_interval
    assert 0.0 <= low <= high <= 1.0
    assert "Only 3 people" in report.warnings[0] and report.summary == "calibrated on your 3 people (15 pairs)"
    assert len(adapted.cohort.vectors) == len(encoder.cohort.vectors) + 6
    assert "your 3 people" in adapted.calibration.trials


def test_the_original_is_unchanged_and_embeddings_are_the_same(encoder, adapted, speech_clips):
    assert encoder.adaptation is None and adapted.calibration is not encoder.calibration
    assert len(encoder.cohort.vectors) < len(adapted.cohort.vectors)
    clip = next(iter(speech_clips.values()))[3]
    assert np.array_equal(encoder.embed(clip).vector, adapted.embed(clip).vector)


def test_save_and_load_keep_the_verdicts(adapted, speech_clips, tmp_path):
    adapted.save_pretrained(tmp_path / "mine")
    loaded = SpeakerEncoder.from_pretrained(tmp_path / "mine", device="cpu")
    assert loaded.threshold == pytest.approx(adapted.threshold) and len(loaded.cohort.vectors) == len(
        adapted.cohort.vectors
    )
    held = [adapted.embed(clips[i]) for clips in speech_clips.values() for i in (2, 3)]
    for i in range(len(held)):
        for j in range(i + 1, len(held)):
            before, after = adapted.verify(held[i], held[j]), loaded.verify(held[i], held[j])
            assert after.decision == before.decision
            assert after.score == pytest.approx(before.score, abs=0.02)  # the saved cohort is float16


def test_refuses_too_few_people_or_clips(encoder, people):
    first, second = list(people)[:2]
    with pytest.raises(AdaptationError, match="at least 2 different people"):
        encoder.adapt({first: people[first]})
    with pytest.raises(AdaptationError, match=f"too few clips of {second}"):
        encoder.adapt({first: people[first], second: people[second][:1]})
    with pytest.raises(AdaptationError, match="target_far"):
        encoder.adapt(people, target_far=0.0)


def test_refuses_one_person_under_two_names(encoder, speech_clips):
    """A clip filed under both names: the two "people" score with each other as one person does."""
    first, second, third = speech_clips.values()
    with pytest.raises(AdaptationError, match="'Ann' and 'Anna' sound like one speaker"):
        encoder.adapt({"Ann": first[:2], "Anna": first[1:3], "Bo": second[:2], "Cy": third[:2]})


def test_the_calibration_file_round_trip_and_refusals(encoder, adapted, tmp_path, tiny_checkpoint):
    data = to_bytes(adapted)
    assert len(data) < 64 * 1024  # six 192-d clips and the metadata: a small file
    again = from_bytes(encoder, data)
    assert again.threshold == pytest.approx(adapted.threshold, abs=1e-6) and again.adaptation.people == 3
    assert len(again.cohort.vectors) == len(adapted.cohort.vectors)
    other = SpeakerEncoder.from_pretrained(tiny_checkpoint(32), device="cpu")
    with pytest.raises(AdaptationError, match="made with another model"):
        from_bytes(other, data)
    for bad in (b"", b"not a calibration", data[: len(data) // 2]):
        with pytest.raises(AdaptationError, match="Not a speakerdemo calibration file"):
            from_bytes(encoder, bad)
    with pytest.raises(AdaptationError, match="nothing to save"):
        to_bytes(encoder)


def test_a_gallery_is_a_calibration_set(encoder, people):
    """Enrolled clips (unit vectors) are taken as they are: the same result as from the audio."""
    from speakerdemo.gallery import Gallery

    gallery = Gallery()
    for name, clips in people.items():
        gallery.enroll(name, [encoder.embed(c).vector for c in clips])
    from_gallery = encoder.adapt({name: list(gallery.clips(name)) for name in gallery.names()})
    from_audio = encoder.adapt(people)
    assert from_gallery.threshold == pytest.approx(from_audio.threshold, abs=1e-3)
