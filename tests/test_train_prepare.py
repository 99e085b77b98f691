"""train/prepare.py: from a resolved config to training crops, validation clips and validation
trials, on generated clips (through ``python -m train fit`` where the run folder matters)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import VOICES, voiced, write_voices
from train_helpers import fit_args, logging_restored, metric_rows

from speakerdemo.audio import SAMPLE_RATE
from train.__main__ import main
from train.config import load_config, source_settings
from train.data import DataError, folder_source, manifest_source
from train.distributed import Dist
from train.prepare import holdout_trials, load_source, prepare_data
from train.trials import SegmentTrials

# Voices besides conftest's three (pitch, formant in Hz), for runs that hold speakers out.
MORE_VOICES = {"dave": (140.0, 1100.0), "erin": (230.0, 2200.0)}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


def one_recording_each(root: Path, seconds: float) -> Path:
    """LibriSpeech-like: five speakers with a single long recording each, ``root/<speaker>/c0.wav``."""
    for i, (speaker, (f0, formant)) in enumerate({**VOICES, **MORE_VOICES}.items()):
        (root / speaker).mkdir(parents=True)
        sf.write(root / speaker / "c0.wav", voiced(seconds, f0=f0, formant=formant, noise=0.01, seed=i), SAMPLE_RATE)
    return root


def test_manifest_source_keeps_the_split_column(tmp_path: Path) -> None:
    write_voices(tmp_path, ["alice", "bob"], clips=2)
    rows = [
        ("alice", "alice/s0/c0.wav", "train"),
        ("alice", "alice/s1/c1.wav", "test"),
        ("bob", "bob/s0/c0.wav", "train"),
        ("bob", "bob/s1/c1.wav", "test"),
    ]
    manifest = tmp_path / "utterances.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("speaker", "path", "split"), *rows])
    assert [(u.speaker, u.path, u.split) for u in manifest_source(manifest, tmp_path)] == rows
    kept, held = load_source(
        source_settings({"type": "manifest", "manifest": str(manifest), "root": str(tmp_path), "split": "train"}),
        seed=0,
    )
    assert [u.path for u in kept] == ["alice/s0/c0.wav", "bob/s0/c0.wav"] and held == []
    assert all(u.file.is_file() for u in kept)


def test_unreadable_clip_is_skipped_and_counted_and_the_split_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_voices(data, ["alice", "bob"], clips=4)
    (data / "bob" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    run_dir = tmp_path / "run"
    assert (
        main(
            fit_args(run_dir, [{"type": "folder", "root": str(data)}], steps=2, batch_size=4)
            + ["--set", "data.split={kind: utterance, val_fraction: 0.25}"]
        )
        == 0
    )
    assert "skipped 1 unreadable clip(s)" in (run_dir / "train.log").read_text()
    with open(run_dir / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and any(r["path"] == "bob/broken.wav" for r in rows)
    assert sorted((r["speaker"], r["split"]) for r in rows if r["split"] == "val") == [("alice", "val"), ("bob", "val")]
    assert (run_dir / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("manifest_rows", "message"),
    [
        (
            [("alice", "alice/s0/c0.wav", "train"), ("alice", "alice/s1/c1.wav", "train")],
            "Training needs at least 2 speakers; found 1",
        ),
        ([("alice", "alice/s0/c0.wav", "test"), ("bob", "bob/s0/c0.wav", "test")], "The training split is empty"),
    ],
)
def test_unusable_training_split_is_a_clear_data_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, manifest_rows: list[tuple], message: str
) -> None:
    write_voices(tmp_path, ["alice", "bob"], clips=2)
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("speaker", "path", "split"), *manifest_rows])
    source = {"type": "manifest", "manifest": str(manifest), "root": str(tmp_path), "split": "train"}
    assert main(fit_args(tmp_path / "run", [source], steps=1)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists()


def test_speeds_as_speakers_add_one_class_per_speaker_and_speed(tmp_path: Path) -> None:
    write_voices(tmp_path / "data", ["alice", "bob"], clips=2)
    cfg = load_config(
        None,
        [
            f"data.sources=[{{type: folder, root: {tmp_path / 'data'}}}]",
            "augment={speeds: [0.9, 1.1], speeds_as_speakers: true, babble: false}",
        ],
    )
    prepared = prepare_data(cfg, tmp_path, Dist())
    assert prepared.classes == ["alice", "bob", "alice@0.9", "bob@0.9", "alice@1.1", "bob@1.1"]


# ----------------------------------------------------------------------------- validation trials
def test_held_out_single_recordings_give_segment_trials(tmp_path: Path) -> None:
    """One 2-s recording per speaker, 0.5-s segments: up to 3 per speaker, every pair a trial."""
    utts = folder_source(one_recording_each(tmp_path, 2.0))
    trials = holdout_trials(utts, {"segment_seconds": 0.5, "segments_per_speaker": 3})
    assert isinstance(trials, SegmentTrials)
    assert trials.speakers == [u.speaker for u in utts for _ in range(3)]
    assert all(s.shape == (SAMPLE_RATE // 2,) for s in trials.segments)
    clip = sf.read(utts[0].file, dtype="float32")[0]
    np.testing.assert_allclose(trials.segments[1], clip[SAMPLE_RATE // 2 : SAMPLE_RATE], atol=1e-6)
    labels = trials.labels
    assert len(labels) == 15 * 14 // 2 and labels.sum() == 5 * 3


def test_held_out_speakers_that_cannot_make_both_kinds_of_trial_are_refused(tmp_path: Path) -> None:
    utts = [u for u in folder_source(one_recording_each(tmp_path, 2.0)) if u.speaker == "alice"]
    with pytest.raises(DataError, match="same- and different-speaker pairs"):
        holdout_trials(utts, {"segment_seconds": 0.5, "segments_per_speaker": 3})
    with pytest.raises(DataError, match="shorten data.holdout_trials.segment_seconds"):
        holdout_trials(folder_source(tmp_path), {"segment_seconds": 3.0, "segments_per_speaker": 3})


def test_the_validation_eer_on_held_out_speakers_picks_the_best_checkpoint(tmp_path: Path) -> None:
    data = one_recording_each(tmp_path / "data", 2.0)
    run_dir = tmp_path / "run"
    source = {"type": "folder", "root": str(data), "hold_out_speakers": 2, "repeats": 4}
    args = fit_args(run_dir, [source], encoder="ecapa_tdnn", steps=6, validate_every=3)
    assert main(args + ["--set", "data.holdout_trials={segment_seconds: 0.5, segments_per_speaker: 3}"]) == 0
    assert (
        "validation EER on 15 pairs of 6 0.5-s segments of 2 held-out speakers" in (run_dir / "train.log").read_text()
    )
    validated = [r for r in metric_rows(run_dir) if "val_eer" in r]
    assert [r["step"] for r in validated] == [3, 6] and all(0.0 <= r["val_eer"] <= 1.0 for r in validated)
    assert (run_dir / "best" / "model.safetensors").is_file()
    with open(run_dir / "split.csv", newline="") as f:
        assert sum(r["split"] == "holdout" for r in csv.DictReader(f)) == 2
