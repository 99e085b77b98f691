"""The ``speakerdemo`` command, run as a user runs it: ``python -m speakerdemo ...`` in a subprocess.

Runs on real speechocean762 test-split clips (read in place; a folder of symlinks stands for a
user's folder) and the trained checkpoint. Each model-loading run costs a few seconds, so one run
serves several assertions where it can. Decisions are compared with what the library and the web
app's handler (``Demo.verify``) give for the same clips.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerdemo.adapt import from_bytes
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.cli import main
from speakerdemo.conditions import clip_condition
from speakerdemo.diarize import read_rttm
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.gallery import Gallery
from speakerdemo.verdict import open_set_threshold

REPO_ROOT = Path(__file__).resolve().parent.parent


def speakerdemo(*args: object) -> subprocess.CompletedProcess:
    """``python -m speakerdemo ARGS`` in a subprocess, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "speakerdemo", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2, nothing on stdout, and one line on stderr that says ``words``."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("speakerdemo: error: "), result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def model(trained_checkpoint: Path) -> list[str]:
    """The options every model-loading run takes: the trained checkpoint on the CPU."""
    return ["--model", trained_checkpoint, "--device", "cpu"]


@pytest.fixture(scope="module")
def encoder(trained_checkpoint: Path) -> SpeakerEncoder:
    """The same checkpoint in this process, loaded as the command loads it (backend auto)."""
    return SpeakerEncoder.from_pretrained(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def spk(speech_clips) -> tuple[str, str, str]:
    return tuple(speech_clips)  # type: ignore[return-value]


# ---------------------------------------------------------------------- embed
@pytest.fixture
def folder(tmp_path: Path, speech_clips, spk) -> Path:
    """A user's folder: two speakers' clips in subfolders (links to the shared clips, never copies),
    a text file named .wav, and a file that is not audio by its name."""
    root = tmp_path / "clips"
    for speaker in spk[:2]:
        (root / speaker).mkdir(parents=True)
        for clip in speech_clips[speaker]:
            (root / speaker / clip.name).symlink_to(clip)
    (root / "notes.wav").write_text("not audio\n")
    (root / "readme.txt").write_text("not audio either\n")
    return root


def test_embed_a_folder_into_npz(folder, tmp_path, model, encoder, speech_clips, spk):
    """Every audio file under the folder, in sorted order; the bad one skipped and counted; the
    vectors and seconds of speech those of SpeakerEncoder.embed_batch on the same files."""
    output = tmp_path / "embeddings.npz"
    result = speakerdemo("embed", folder, "--output", output, "--skip-bad", *model)
    assert result.returncode == 0, result.stderr
    assert "notes.wav" in result.stderr and "skipped 1 bad file(s)" in result.stderr
    expected = sorted(p for p in folder.rglob("*.opus"))
    assert len(expected) == 2 * len(speech_clips[spk[0]])
    with np.load(output) as saved:
        assert saved["paths"].tolist() == [str(p) for p in expected]
        reference = encoder.embed_batch([str(p) for p in expected])
        np.testing.assert_allclose(saved["vectors"], np.stack([e.vector for e in reference]), atol=1e-5)
        assert saved["vectors"].dtype == np.float32
        np.testing.assert_allclose(saved["speech_seconds"], [e.speech_seconds for e in reference])


def test_embed_stops_at_a_bad_file_without_writing(folder, tmp_path, model):
    output = tmp_path / "embeddings.npz"
    result = speakerdemo("embed", folder, "--output", output, *model)
    assert_one_line_error(result, str(folder / "notes.wav"), "Could not read 'notes.wav' as audio")
    assert not output.exists()


# ---------------------------------------------------------------------- verify
@pytest.fixture(scope="module")
def demo(trained_checkpoint: Path):
    """The web app's handlers on the same checkpoint: what the command must agree with."""
    from speakerdemo.app_state import Models
    from speakerdemo.ui import Demo, Session

    demo = Demo(Models(str(trained_checkpoint), {}, device="cpu"))
    return demo, Session(demo.models.default)


def test_verify_gives_the_apps_decision_score_and_rates(model, encoder, demo, speech_clips, spk):
    app, session = demo
    same_a, same_b = speech_clips[spk[0]][:2]
    result = speakerdemo("verify", same_a, same_b, "--json", *model)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    *_, verdict = app.verify(session, same_a, same_b, encoder.threshold)
    condition, score = verdict.kind, verdict.score
    assert answer["decision"] == verdict.decision == "same" and answer["same_speaker"] is True
    assert answer["uncertain_between"] == pytest.approx(list(verdict.band)) and answer["reasons"] == list(
        verdict.reasons
    )
    assert answer["threshold"] == encoder.threshold
    assert answer["score"] == pytest.approx(score, abs=1e-5) and answer["score"] >= answer["threshold"]
    assert answer["condition"] == condition
    assert [c["path"] for c in answer["clips"]] == [str(same_a), str(same_b)]
    if encoder.calibration is not None:  # the rates the app reads out at this threshold
        kind = encoder.calibration.conditions.get(condition)
        if kind is not None:
            assert (answer["far"], answer["frr"]) == pytest.approx(kind.rates_at(encoder.threshold))
        overall = encoder.calibration.rates_at(encoder.threshold)
        assert (answer["overall_far"], answer["overall_frr"]) == pytest.approx(overall)

    other = speech_clips[spk[1]][0]
    result = speakerdemo("verify", same_a, other, *model)
    assert result.returncode == 0, result.stderr  # "different" is an answer, not a failure
    *_, verdict = app.verify(session, same_a, other, encoder.threshold)
    first = result.stdout.splitlines()[0]
    low, high = verdict.band
    band = f", uncertain from {low:.3f} to {high:.3f}" if high > low else ""
    assert verdict.decision == "different"
    assert first == f"different speakers: score {verdict.score:.3f}, threshold {encoder.threshold:.3f}{band}"
    if encoder.calibration is not None:
        assert "false accepts" in result.stdout and "false rejects" in result.stdout


# ---------------------------------------------------------------------- enroll / identify
def test_enroll_then_identify(tmp_path, model, encoder, speech_clips, spk):
    gallery = tmp_path / "people.safetensors"
    for name, clips in ((spk[0], speech_clips[spk[0]][:1]), (spk[0], speech_clips[spk[0]][1:2])):
        result = speakerdemo("enroll", name, *clips, "--gallery", gallery, *model)  # the second adds a clip
        assert result.returncode == 0, result.stderr
    result = speakerdemo("enroll", spk[1], *speech_clips[spk[1]][:2], "--gallery", gallery, *model)
    assert result.returncode == 0, result.stderr
    assert f"enrolled {spk[1]} with 2 clip(s)" in result.stdout and "holds 2 speaker(s)" in result.stdout
    assert Gallery.load(gallery).clip_counts() == {spk[0]: 2, spk[1]: 2}

    # A third clip of an enrolled speaker is that speaker: the decision and the top of the ranking.
    query = speech_clips[spk[0]][2]
    result = speakerdemo("identify", query, "--gallery", gallery, "--json", *model)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    # The threshold is raised for the gallery's size and its people's own clips (speakerdemo.verdict).
    assert answer["decision"] == spk[0] and answer["threshold"] == pytest.approx(
        open_set_threshold(encoder, Gallery.load(gallery), kind=clip_condition(encoder.embed(query)))
    )
    assert answer["threshold"] >= encoder.threshold
    assert [m["name"] for m in answer["ranking"]] == [spk[0], spk[1]]
    assert answer["condition"] == clip_condition(encoder.embed(query))
    enrolled_best = answer["ranking"][0]["score"]

    result = speakerdemo("identify", speech_clips[spk[1]][2], "--gallery", gallery, "--top-k", 1, *model)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{spk[1]}: best match {spk[1]} with score ") and len(lines) == 2

    # A speaker never enrolled: whether the best match clears the threshold varies by clip (the
    # open set's false accepts), so only the rule and the margin to an enrolled speaker are asserted.
    result = speakerdemo("identify", speech_clips[spk[2]][3], "--gallery", gallery, "--json", *model)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    best = answer["ranking"][0]
    assert answer["decision"] == (best["name"] if best["score"] >= answer["threshold"] else "unknown")
    assert best["score"] < enrolled_best


# ---------------------------------------------------------------------- bad input
# Mistakes caught before the model loads are checked by calling main() in this process (a
# subprocess costs seconds of imports each); one of them also through a subprocess, as a user meets it.
def run_main(capsys: pytest.CaptureFixture, *args: object) -> subprocess.CompletedProcess:
    """``main(ARGS)`` in this process, its exit status and output as a subprocess would give them."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, exited.value.code, out, err)


def test_usage_mistakes_are_one_line_with_status_2(capsys, tmp_path, speech_clips, spk):
    assert_one_line_error(speakerdemo("verify", "only-one.wav"), "required: B", "speakerdemo verify --help")
    assert_one_line_error(run_main(capsys, "embed", tmp_path, "--output", tmp_path / "e.parquet"), ".npz")
    assert_one_line_error(run_main(capsys, "identify", "x.wav", "--gallery", "g", "--top-k", "0"), "--top-k")
    assert_one_line_error(run_main(capsys, "verify", *speech_clips[spk[0]][:2], "--device", "abacus"), "abacus")


def test_a_missing_file_is_named(capsys, speech_clips, spk, tmp_path):
    missing = tmp_path / "nobody.wav"
    result = run_main(capsys, "verify", speech_clips[spk[0]][0], missing)
    assert_one_line_error(result, str(missing), "no such file")
    assert_one_line_error(run_main(capsys, "embed", missing, "--output", tmp_path / "e.npz"), str(missing))
    assert_one_line_error(run_main(capsys, "embed", tmp_path, "--output", tmp_path / "e.npz"), "no audio files")


def test_silence_is_refused_naming_the_file(speech_clips, spk, tmp_path, model):
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(3 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    result = speakerdemo("verify", speech_clips[spk[0]][0], silence, *model)
    assert_one_line_error(result, str(silence), "silent")


def test_a_corrupt_gallery_is_refused_and_left_alone(capsys, speech_clips, spk, tmp_path):
    gallery = tmp_path / "broken.safetensors"
    gallery.write_bytes(b"\x00" * 64)
    clip = speech_clips[spk[0]][0]
    result = run_main(capsys, "identify", clip, "--gallery", gallery)
    assert_one_line_error(result, str(gallery), "safetensors")
    assert_one_line_error(run_main(capsys, "enroll", "someone", clip, "--gallery", gallery), str(gallery))
    assert gallery.read_bytes() == b"\x00" * 64


def test_help_lists_the_commands_and_says_npz_only(capsys):
    for command in ("embed", "verify", "enroll", "identify", "diarize", "calibrate"):
        result = run_main(capsys, command, "--help")
        assert result.returncode == 0 and "--model" in result.stdout and "exit status" in result.stdout
    assert "no parquet" in run_main(capsys, "embed", "--help").stdout


# ---------------------------------------------------------------------- diarize
def test_diarize_names_enrolled_speakers_in_the_rttm(tmp_path, model, speech_clips, spk):
    """A conversation A B A B of two speakers' first two clips; enrolled (through the command) from
    two other clips each, the RTTM names them verbatim; without a gallery they are Speaker 1 and 2."""
    first, second = spk[0], spk[1]
    parts = []
    for speaker, index in [(first, 0), (second, 0), (first, 1), (second, 1)]:
        parts += [sf.read(speech_clips[speaker][index], dtype="float32")[0], np.zeros(SAMPLE_RATE // 2, np.float32)]
    recording = tmp_path / "meeting one.wav"
    sf.write(recording, np.concatenate(parts), SAMPLE_RATE)

    result = speakerdemo("diarize", recording, "--rttm", tmp_path / "plain.rttm", "--json", *model)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [s["speaker"] for s in answer["segments"]] == ["Speaker 1", "Speaker 2", "Speaker 1", "Speaker 2"]
    rttm = read_rttm(tmp_path / "plain.rttm")
    assert list(rttm) == ["meeting_one"]  # the file id without whitespace
    assert [s.label for s in rttm["meeting_one"]] == ["Speaker_1", "Speaker_2", "Speaker_1", "Speaker_2"]

    gallery = tmp_path / "people.safetensors"
    for speaker in (first, second):
        enrolled = speakerdemo("enroll", speaker, *speech_clips[speaker][2:], "--gallery", gallery, *model)
        assert enrolled.returncode == 0, enrolled.stderr
    result = speakerdemo("diarize", recording, "--gallery", gallery, "--rttm", tmp_path / "named.rttm", *model)
    assert result.returncode == 0, result.stderr
    labels = [line.split()[-1] for line in result.stdout.splitlines()]
    assert labels == [first, second, first, second]
    assert [s.label for s in read_rttm(tmp_path / "named.rttm")["meeting_one"]] == labels
    assert "talk time: " in result.stderr


def test_diarize_refuses_silence_naming_the_file(tmp_path, model):
    silent = tmp_path / "quiet.wav"
    sf.write(silent, np.zeros(5 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    assert_one_line_error(speakerdemo("diarize", silent, *model), "quiet.wav")


# ---------------------------------------------------------------------- calibrate
def test_calibrate_a_folder_then_verify_and_identify_with_it(tmp_path, model, encoder, speech_clips, spk):
    """A folder per person (links to the shared clips) -> a calibration file that verify and
    identify then judge with, as the app would with the same file."""
    root = tmp_path / "people"
    for speaker, clips in speech_clips.items():
        (root / speaker).mkdir(parents=True)
        for clip in clips[:2]:
            (root / speaker / clip.name).symlink_to(clip)
    saved = tmp_path / "mine.safetensors"
    result = speakerdemo("calibrate", root, "--output", saved, *model)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Calibrated on your 3 people (6 clips: 3 same-person and 12 different-person")
    adapted = from_bytes(encoder, saved.read_bytes())
    result = speakerdemo("verify", *speech_clips[spk[0]][2:4], "--json", "--calibration", saved, *model)
    answer = json.loads(result.stdout)
    assert answer["threshold"] == pytest.approx(adapted.threshold) and "your 3 people" in answer["calibration_trials"]
    assert answer["decision"] == adapted.verify(*speech_clips[spk[0]][2:4]).decision
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"junk")
    assert_one_line_error(speakerdemo("verify", *speech_clips[spk[0]][2:4], "--calibration", other, *model), "Not a")


def test_calibrate_refuses_too_few_people(capsys, tmp_path, speech_clips, spk, model):
    root = tmp_path / "one"
    (root / spk[0]).mkdir(parents=True)
    for clip in speech_clips[spk[0]][:2]:
        (root / spk[0] / clip.name).symlink_to(clip)
    result = speakerdemo("calibrate", root, "--output", tmp_path / "x.safetensors", *model)
    assert_one_line_error(result, "at least 2 different people")
    assert not (tmp_path / "x.safetensors").exists()
