"""train/data.py on generated clips: sources, trial lists, paths kept inside the data root, splits,
the clip store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_voices

from speakerdemo.audio import SAMPLE_RATE
from train.data import (
    AudioStore,
    DataError,
    babble_source,
    folder_source,
    manifest_source,
    read_trials,
    speaker_disjoint_split,
    utterance_split,
    voxceleb_list_source,
)


# ----------------------------------------------------------------------------- sources
def test_folder_source_finds_clips_in_nested_folders_of_every_format(tmp_path: Path) -> None:
    written = write_voices(tmp_path, ["alice", "bob"], clips=3, suffixes=(".wav", ".flac", ".ogg"))
    (tmp_path / "alice" / "notes.txt").write_text("not audio")
    utts = folder_source(tmp_path)
    assert sorted(u.file for u in utts) == sorted(p.resolve() for p in written)
    assert {u.speaker for u in utts} == {"alice", "bob"}
    assert {u.file.suffix for u in utts} == {".wav", ".flac", ".ogg"}
    store = AudioStore(utts, preload=True)
    assert store.readable == {str(u.file) for u in utts}
    assert all(abs(len(store.get(str(u.file))) - SAMPLE_RATE) < 0.01 * SAMPLE_RATE for u in utts)


def test_voxceleb_list_and_trial_list_are_read(tmp_path: Path) -> None:
    write_voices(tmp_path, ["alice", "bob"], clips=2)
    listing = tmp_path / "train_list.txt"
    listing.write_text("alice alice/s0/c0.wav\nbob bob/s0/c0.wav\n\nbob bob/s1/c1.wav\n")
    utts = voxceleb_list_source(listing, tmp_path)
    assert [(u.speaker, u.path) for u in utts] == [
        ("alice", "alice/s0/c0.wav"),
        ("bob", "bob/s0/c0.wav"),
        ("bob", "bob/s1/c1.wav"),
    ]
    trials = tmp_path / "trials.txt"
    trials.write_text("1 bob/s0/c0.wav bob/s1/c1.wav\n0 alice/s0/c0.wav bob/s0/c0.wav\n")
    assert [(t.label, t.a, t.b) for t in read_trials(trials, tmp_path)] == [
        (1, "bob/s0/c0.wav", "bob/s1/c1.wav"),
        (0, "alice/s0/c0.wav", "bob/s0/c0.wav"),
    ]


def test_paths_leaving_the_data_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text("speaker,path\nalice,../secret.wav\n")
    listing = tmp_path / "list.txt"
    listing.write_text("alice alice/../../secret.wav\n")
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a.wav ../../etc/passwd\n")
    for read in (
        lambda: manifest_source(manifest, root),
        lambda: voxceleb_list_source(listing, root),
        lambda: read_trials(trials, root),
    ):
        with pytest.raises(DataError, match="outside the data root"):
            read()


def test_babble_draws_crops_of_the_readable_clips_only(tmp_path: Path) -> None:
    write_voices(tmp_path, ["alice", "bob"], clips=2)
    (tmp_path / "bob" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    utts = folder_source(tmp_path)
    store = AudioStore(utts, preload=True)
    draw = babble_source(store, utts, 4000)
    rng = np.random.default_rng(0)
    clips = [store.get(path) for path in sorted(store.readable)]
    for _ in range(10):
        crop = draw(rng)
        assert crop.shape == (4000,)
        assert any(
            np.array_equal(crop, clip[start : start + 4000])
            for clip in clips
            for start in np.flatnonzero(clip[: len(clip) - 3999] == crop[0])
        )


# ----------------------------------------------------------------------------- splits
def _utterances(tmp_path: Path, clips: dict[str, int]) -> list:
    for speaker, count in clips.items():
        for i in range(count):
            (tmp_path / speaker).mkdir(parents=True, exist_ok=True)
            (tmp_path / speaker / f"{i}.wav").touch()
    return folder_source(tmp_path)


def test_utterance_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    utts = _utterances(tmp_path, {"a": 10, "b": 20, "c": 2})
    train, val = utterance_split(utts, 0.2, seed=3)
    count = lambda part, s: sum(u.speaker == s for u in part)  # noqa: E731
    assert [count(val, s) for s in "abc"] == [2, 4, 0]
    assert [count(train, s) for s in "abc"] == [8, 16, 2]
    assert sorted(train + val, key=lambda u: u.path) == sorted(utts, key=lambda u: u.path)
    assert utterance_split(utts, 0.2, seed=3) == (train, val)
    assert {u.path for u in utterance_split(utts, 0.2, seed=4)[1]} != {u.path for u in val}


def test_speaker_disjoint_split_shares_no_speaker(tmp_path: Path) -> None:
    utts = _utterances(tmp_path, {s: 3 for s in "abcdefgh"})
    train, val = speaker_disjoint_split(utts, 3, seed=0)
    assert len({u.speaker for u in val}) == 3
    assert not {u.speaker for u in train} & {u.speaker for u in val}
    assert len(train) + len(val) == len(utts)
    assert speaker_disjoint_split(utts, 3, seed=0) == (train, val)
