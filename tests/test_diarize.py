"""speakerdemo.diarize on real speech: a conversation of two unseen speakers, with and without
their enrolment, RTTM round trips, and the audio it refuses.

The conversation joins clips of two speechocean762 test-split speakers (conftest's
``speech_clips``, read in place from ../shared/data) with 0.5-s pauses; the enrolment clips are
other clips of the same speakers. DER is scored with pyannote.metrics as benchmarks/diarization.py
scores it (collar 0.5 s, overlap skipped).
"""

from __future__ import annotations

import io
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from speakerdemo.audio import SAMPLE_RATE, AudioError, load_audio
from speakerdemo.diarize import Diarization, Segment, diarize, parse_rttm, read_rttm, rttm_name
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.gallery import Gallery

GAP_SECONDS = 0.5
MAX_DER = 0.05
"""Bound on the DER of the two-speaker conversation (four turns, 21 s of speech). Measured on
2026-12-06 with the shipped checkpoint: 0.0 % without and with enrolment (10.0 % with the files'
silent edges left in the reference turns). The bound leaves room for a retrained checkpoint and
lies far below the 50 % of putting everything under one label."""


@pytest.fixture(scope="module")
def encoder(trained_checkpoint: Path) -> SpeakerEncoder:
    return SpeakerEncoder.from_pretrained(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def conversation(speech_clips: dict[str, list[Path]]) -> tuple[np.ndarray, list[Segment], dict[str, list[Path]]]:
    """(audio, reference turns, enrolment clips per speaker): turns A B A B from the first two
    speakers' first two clips, enrolment from their last two (never in the conversation)."""
    first, second = list(speech_clips)[:2]
    order = [(first, 0), (second, 0), (first, 1), (second, 1)]
    rng = np.random.default_rng(0)
    parts, turns, at = [], [], 0
    for speaker, index in order:
        if parts:
            gap = round(GAP_SECONDS * SAMPLE_RATE)
            parts.append((1e-4 * rng.standard_normal(gap)).astype(np.float32))
            at += gap
        # The reference turn is the speech: the file's silent edges are trimmed, as in the benchmark.
        wav = librosa.effects.trim(load_audio(speech_clips[speaker][index], max_seconds=None), top_db=30)[0]
        parts.append(wav)
        turns.append(Segment(at / SAMPLE_RATE, (at + len(wav)) / SAMPLE_RATE, speaker))
        at += len(wav)
    enrol = {speaker: speech_clips[speaker][2:] for speaker in (first, second)}
    return np.concatenate(parts), turns, enrol


def der(reference: list[Segment], hypothesis: Diarization, named: bool) -> float:
    """Identification error rate (names must match) or diarization error rate (best mapping)."""
    from pyannote.core import Annotation, Timeline
    from pyannote.core import Segment as Span
    from pyannote.metrics.diarization import DiarizationErrorRate
    from pyannote.metrics.identification import IdentificationErrorRate

    def annotation(segments: list[Segment]) -> Annotation:
        result = Annotation()
        for s in segments:
            result[Span(s.start, s.end)] = s.label
        return result

    metric = (IdentificationErrorRate if named else DiarizationErrorRate)(collar=0.5, skip_overlap=True)
    uem = Timeline([Span(0.0, hypothesis.duration)])
    return float(metric(annotation(reference), annotation(hypothesis.segments), uem=uem))


def test_two_speakers_without_enrolment(encoder: SpeakerEncoder, conversation) -> None:
    wav, turns, _ = conversation
    result = diarize(encoder, (SAMPLE_RATE, wav))
    assert result.speakers == ["Speaker 1", "Speaker 2"]
    assert result.named == frozenset()
    assert der(turns, result, named=False) <= MAX_DER
    talk = result.talk_time()
    assert sum(talk.values()) == pytest.approx(sum(s.duration for s in result.segments))
    assert all(0 <= s.start < s.end <= result.duration for s in result.segments)


def test_enrolled_speakers_are_named(encoder: SpeakerEncoder, conversation) -> None:
    wav, turns, enrol = conversation
    gallery = Gallery()
    for name, clips in enrol.items():
        gallery.enroll(name, [e.vector for e in encoder.embed_batch(clips)])
    result = diarize(encoder, (SAMPLE_RATE, wav), gallery=gallery)
    assert set(result.speakers) == set(enrol)
    assert result.named == frozenset(enrol)
    assert der(turns, result, named=True) <= MAX_DER


def test_given_number_of_speakers(encoder: SpeakerEncoder, conversation) -> None:
    wav, _, _ = conversation
    assert len(diarize(encoder, (SAMPLE_RATE, wav), speakers=3).speakers) <= 3
    assert diarize(encoder, (SAMPLE_RATE, wav), speakers=1).speakers == ["Speaker 1"]


def test_long_recording_in_blocks(encoder: SpeakerEncoder, conversation) -> None:
    """Over VAD_BLOCK_SECONDS the VAD runs block by block: the segments still cover the whole
    recording, and the repeated conversation still holds its two voices."""
    wav, turns, _ = conversation
    repeats = 6  # about 2.5 minutes: three VAD blocks
    result = diarize(encoder, (SAMPLE_RATE, np.tile(wav, repeats)))
    assert result.duration == pytest.approx(repeats * len(wav) / SAMPLE_RATE)
    assert result.segments[-1].end > result.duration - 2.0
    assert len(result.speakers) == 2
    assert sum(result.talk_time().values()) >= 0.9 * repeats * sum(t.duration for t in turns)


def test_one_speaker_gets_one_label(encoder: SpeakerEncoder, speech_clips: dict[str, list[Path]]) -> None:
    speaker = list(speech_clips)[0]
    wav = np.concatenate([load_audio(p, max_seconds=None) for p in speech_clips[speaker]])
    result = diarize(encoder, (SAMPLE_RATE, wav))
    assert result.speakers == ["Speaker 1"]


def test_reads_files_and_bytes(encoder: SpeakerEncoder, speech_clips: dict[str, list[Path]]) -> None:
    path = list(speech_clips.values())[0][0]
    from_path = diarize(encoder, path)
    from_bytes = diarize(encoder, path.read_bytes())
    assert from_path.segments == from_bytes.segments and from_path.segments


def test_rttm_round_trip(encoder: SpeakerEncoder, conversation, tmp_path: Path) -> None:
    wav, _, enrol = conversation
    gallery = Gallery()
    name = list(enrol)[0]
    gallery.enroll("Ann Lee", [e.vector for e in encoder.embed_batch(enrol[name])])
    result = diarize(encoder, (SAMPLE_RATE, wav), gallery=gallery)
    assert "Ann Lee" in result.speakers and any(s.startswith("Speaker ") for s in result.speakers)
    text = result.to_rttm("meeting-1")
    assert all(len(line.split()) == 10 and line.startswith("SPEAKER meeting-1 1 ") for line in text.splitlines())
    path = tmp_path / "meeting.rttm"
    path.write_text(text)
    back = read_rttm(path)
    assert list(back) == ["meeting-1"]
    expected = [(s.start, s.end, rttm_name(s.label)) for s in result.segments]
    assert [(s.start, s.end, s.label) for s in back["meeting-1"]] == [
        (pytest.approx(a, abs=1e-3), pytest.approx(b, abs=2e-3), label) for a, b, label in expected
    ]
    assert {s.label for s in back["meeting-1"]} >= {"Ann_Lee"}


def test_rttm_refuses_names_that_would_clash() -> None:
    clash = Diarization([Segment(0, 1, "Ann Lee"), Segment(1, 2, "Ann_Lee")], 2.0)
    with pytest.raises(ValueError, match="would read alike"):
        clash.to_rttm("x")
    with pytest.raises(ValueError, match="file id"):
        Diarization([Segment(0, 1, "a")], 1.0).to_rttm("two words")


def test_parse_rttm_skips_other_lines_and_names_bad_ones() -> None:
    text = "SPKR-INFO f 1 <NA> <NA> <NA> unknown a <NA> <NA>\n\nSPEAKER f 1 1.5 2.0 <NA> <NA> b <NA> <NA>\n"
    assert parse_rttm(text) == {"f": [Segment(1.5, 3.5, "b")]}
    with pytest.raises(ValueError, match="line 1"):
        parse_rttm("SPEAKER f 1 x 2.0 <NA> <NA> b <NA> <NA>\n")
    with pytest.raises(ValueError, match="line 2"):
        parse_rttm("\nSPEAKER f 1\n")


def _wav_bytes(wav: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wav, SAMPLE_RATE, format="WAV")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (b"", "empty"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt garbage that is not audio", "Could not read"),
        ((SAMPLE_RATE, np.zeros(0, np.float32)), "empty"),
        ((SAMPLE_RATE, np.zeros(5 * SAMPLE_RATE, np.float32)), "silent"),
    ],
    ids=["empty bytes", "corrupt bytes", "empty array", "digital silence"],
)
def test_bad_audio_is_refused_clearly(encoder: SpeakerEncoder, audio: object, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        diarize(encoder, audio)


def test_noise_without_speech_is_refused(encoder: SpeakerEncoder) -> None:
    noise = (0.1 * np.random.default_rng(0).standard_normal(5 * SAMPLE_RATE)).astype(np.float32)
    with pytest.raises(AudioError, match="speech detected"):
        diarize(encoder, _wav_bytes(noise))


def test_bad_arguments_are_refused(encoder: SpeakerEncoder, conversation) -> None:
    wav, _, _ = conversation
    with pytest.raises(ValueError, match="speakers"):
        diarize(encoder, (SAMPLE_RATE, wav), speakers=0)
    with pytest.raises(ValueError, match="hop_seconds"):
        diarize(encoder, (SAMPLE_RATE, wav), hop_seconds=2.0, window_seconds=1.0)
    wrong = Gallery()
    wrong.enroll("x", [np.ones(8)])
    with pytest.raises(ValueError, match="8-d"):
        diarize(encoder, (SAMPLE_RATE, wav), gallery=wrong)
