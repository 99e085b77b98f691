"""train.condition_trials and ``python -m train calibrate``: the dev/test halves of the held-out
speakers, the recording conditions cut from their real recordings, and a checkpoint calibrated
across them."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT
from train_helpers import logging_restored

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.cohort import COHORT_FILE
from speakerdemo.conditions import CONDITIONS, NOISY, PHONE, SHORT, WIDEBAND, WORDS
from speakerdemo.encoder import SpeakerEncoder
from train.__main__ import main
from train.cohort import CLIPS_PER_CONDITION
from train.condition_trials import SEGMENT_SECONDS, dev_test_split, held_out
from train.condition_trials import condition_trials as build
from train.config import load_config
from train.prepare import load_source
from train.trials import embed_arrays

RECIPE = REPO_ROOT / "train" / "configs" / "ecapa-speechocean.yaml"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


@pytest.fixture
def librispeech(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO_ROOT)  # the recipes name the data relative to the repository root
    return shared_data / "librispeech-251"


def test_dev_and_test_halves_split_the_speakers_alike_every_time():
    speakers = [f"ls{i:03d}" for i in range(9, -1, -1)] * 2  # any order, repeats
    dev, test = dev_test_split(speakers)
    assert dev == {"ls000", "ls002", "ls004", "ls006", "ls008"} and test == {
        "ls001",
        "ls003",
        "ls005",
        "ls007",
        "ls009",
    }
    assert dev_test_split(list(reversed(speakers))) == (dev, test)


def test_held_out_speakers_are_those_fit_holds_out(librispeech: Path):
    utts = held_out(RECIPE, librispeech)
    cfg = load_config(RECIPE, [])
    trained = {u.speaker for spec in cfg["data"]["sources"] for u in load_source(spec, cfg["seed"])[0]}
    speakers = {u.speaker for u in utts}
    assert len(speakers) == 50 and not speakers & trained
    assert all(u.file.is_file() for u in utts)


def test_conditions_are_cut_from_the_same_recordings(librispeech: Path):
    utts = held_out(RECIPE, librispeech)
    trials = build(utts, max_speakers=2)
    assert tuple(trials) == CONDITIONS
    base = trials[WIDEBAND]
    assert len(set(base.speakers)) == 2 and len(base.segments) >= 4
    assert all(len(w) == SEGMENT_SECONDS * SAMPLE_RATE for w in base.segments)
    for derived in (PHONE, NOISY):  # the same segments, through a phone line or in a noisy room
        assert trials[derived].speakers == base.speakers
        assert [len(w) for w in trials[derived].segments] == [len(w) for w in base.segments]
        assert not any(np.allclose(a, b) for a, b in zip(trials[derived].segments, base.segments))
    assert all(1.0 <= len(w) / SAMPLE_RATE <= 2.0 for w in trials[SHORT].segments)
    # five 1-s words and four pauses of 0.2-0.6 s
    assert all(5.8 <= len(w) / SAMPLE_RATE <= 7.4 for w in trials[WORDS].segments)
    assert build(utts, max_speakers=2)[NOISY].segments[0] == pytest.approx(trials[NOISY].segments[0])  # seeded


def test_calibrate_stores_one_threshold_and_a_shift_per_kind(librispeech: Path, tiny_checkpoint, capsys):
    folder = tiny_checkpoint()
    before = SpeakerEncoder.from_pretrained(folder).embed((SAMPLE_RATE, np.sin(np.arange(48000) / 7.0) * 0.3)).vector
    out = folder.parent / "calibration.json"
    args = ["calibrate", "--checkpoint", str(folder), "--recipe", str(RECIPE), "--corpus", str(librispeech)]
    assert main([*args, "--max-speakers", "12", "--max-far", "0.1", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == results
    encoder = SpeakerEncoder.from_pretrained(folder)
    cal = encoder.calibration
    assert encoder.threshold == pytest.approx(results["threshold"]) and cal.shifts[WIDEBAND] == 0.0
    assert cal.shifts == pytest.approx(results["shifts"], abs=1e-6)
    assert set(cal.conditions) == set(CONDITIONS) and cal.trials == "12 librispeech-251 dev speakers, 5 conditions"
    for name, r in results["conditions"].items():
        voting = [k for k, n in r["kinds"].items() if k in cal.shifts]
        if voting == list(r["kinds"]):  # every kind of its pairs set a threshold: the bound holds
            assert r["far"] <= 0.1, name
        assert sum(r["kinds"].values()) == r["target"] + r["nontarget"]
    # The weights are untouched: only config.json's calibration changed.
    after = encoder.embed((SAMPLE_RATE, np.sin(np.arange(48000) / 7.0) * 0.3)).vector
    np.testing.assert_array_equal(before, after)


def test_calibrate_says_when_the_dev_set_is_too_small(librispeech: Path, tiny_checkpoint, capsys):
    args = ["calibrate", "--checkpoint", str(tiny_checkpoint()), "--recipe", str(RECIPE), "--corpus", str(librispeech)]
    assert main([*args, "--max-speakers", "2"]) == 2
    last = capsys.readouterr().err.splitlines()[-1].split("\r")[-1]  # after the progress bars
    assert last.startswith("error: Too few dev trials to calibrate on (2 speakers)")


def test_calibrate_refuses_a_bound_outside_zero_and_one(tiny_checkpoint, capsys):
    assert main(["calibrate", "--checkpoint", str(tiny_checkpoint()), "--recipe", str(RECIPE), "--max-far", "1.5"]) == 2
    assert capsys.readouterr().err == "error: --max-far must lie between 0 and 1, got 1.5.\n"


def test_calibrate_with_a_cohort_keeps_one_threshold_for_every_condition(
    librispeech: Path, tiny_checkpoint, tmp_path: Path
):
    """``--cohort``: the recipe's training speakers in every condition are stored as the cohort,
    its floors are the 10th percentile of the dev clips' cohort statistics, one threshold keeps
    every condition to the bound (no shifts), and a later calibration without it drops it."""
    recipe = _small_recipe(librispeech, tmp_path, speakers=60)  # 50 held out, 10 trained on
    folder = tiny_checkpoint()
    out = tmp_path / "calibration.json"
    args = ["calibrate", "--checkpoint", str(folder), "--recipe", str(recipe), "--corpus", str(librispeech)]
    assert main([*args, "--cohort", "--max-speakers", "12", "--max-far", "0.1", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    encoder = SpeakerEncoder.from_pretrained(folder)
    cohort = encoder.cohort
    assert results["cohort"] == json.loads((folder / "config.json").read_text())["cohort"]
    assert 10 * 3 <= len(cohort.vectors) <= 10 * len(CONDITIONS) * CLIPS_PER_CONDITION
    assert encoder.calibration.shifts == {WIDEBAND: 0.0}
    assert all(r["far"] <= 0.1 for r in results["conditions"].values())
    dev, _ = dev_test_split([u.speaker for u in held_out(recipe, librispeech)])
    trials = build([u for u in held_out(recipe, librispeech) if u.speaker in dev], max_speakers=12)
    mean, std = cohort.raw_stats(np.concatenate([embed_arrays(encoder, t.segments) for t in trials.values()]))
    assert cohort.mean_floor == pytest.approx(np.percentile(mean, 10), abs=2e-3)  # the cohort is stored as float16
    assert cohort.std_floor == pytest.approx(np.percentile(std, 10), abs=2e-3)
    assert main([*args, "--max-speakers", "12", "--max-far", "0.1"]) == 0
    assert SpeakerEncoder.from_pretrained(folder).cohort is None and not (folder / COHORT_FILE).exists()


def _small_recipe(librispeech: Path, folder: Path, speakers: int) -> Path:
    """The shipped recipe on the first ``speakers`` LibriSpeech speakers only (a quick cohort)."""
    with open(librispeech / "utterances.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keep = sorted({r["speaker"] for r in rows})[:speakers]
    manifest = folder / "utterances.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["speaker"] in keep)
    cfg = yaml.safe_load(RECIPE.read_text())
    cfg["data"]["sources"] = [
        {"type": "manifest", "manifest": str(manifest), "root": str(librispeech), "hold_out_speakers": 50}
    ]
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    return recipe
