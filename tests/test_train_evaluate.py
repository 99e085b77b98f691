"""train/evaluate.py: ``python -m train evaluate`` on a checkpoint trained on generated voices."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import VOICES
from train_helpers import TinyRun, logging_restored, train_on_voices

from speakerdemo.encoder import SpeakerEncoder
from train.__main__ import main


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


def _trial_list(voices: Path) -> Path:
    """Three trials per speaker pair: clip i against clip i+1 of the same speaker or i+3 of another."""
    lines = []
    for a in VOICES:
        for b in VOICES:
            for i in range(3):
                j = i + 1 if a == b else i + 3
                lines.append(f"{int(a == b)} {a}/s{i % 2}/c{i}.wav {b}/s{j % 2}/c{j}.wav")
    path = voices.parent / f"{voices.name}_trials.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluate(checkpoint: Path, *options: str) -> int:
    """``python -m train evaluate`` of ``checkpoint`` on the CPU, in-process."""
    return main(["evaluate", "--checkpoint", str(checkpoint), "--device", "cpu", *options])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return train_on_voices(tmp_path_factory.mktemp("tiny"))


def test_evaluate_reports_eer_and_min_dcf(tiny: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    voices, trained = tiny
    trials = _trial_list(voices)
    output = tmp_path / "results.json"
    assert evaluate(trained, "--trials", str(trials), "--root", str(voices), "--output", str(output)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(output.read_text())
    assert printed["n_trials"] == 27
    assert {"eer", "eer_threshold", "min_dcf_0.01", "min_dcf_0.05"} <= printed.keys()
    assert 0.0 <= printed["eer"] < 0.2
    assert 0.0 <= printed["min_dcf_0.05"] <= printed["min_dcf_0.01"] <= 1.0
    assert -1.0 <= printed["eer_threshold"] <= 1.0


def test_evaluate_calibrate_stores_the_threshold_in_the_checkpoint(tiny: TinyRun, tmp_path: Path, capsys) -> None:
    voices, trained = tiny
    checkpoint = tmp_path / "model"
    shutil.copytree(trained, checkpoint)
    assert SpeakerEncoder.from_pretrained(checkpoint, device="cpu").calibration is None
    assert evaluate(checkpoint, "--trials", str(_trial_list(voices)), "--root", str(voices), "--calibrate") == 0
    results = json.loads(capsys.readouterr().out)
    assert results["calibration_written"] == str(checkpoint)
    stored = json.loads((checkpoint / "config.json").read_text())["calibration"]
    assert stored["threshold"] == pytest.approx(results["eer_threshold"])
    encoder = SpeakerEncoder.from_pretrained(checkpoint, device="cpu")
    assert encoder.threshold == pytest.approx(results["eer_threshold"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_evaluate_identify_reports_top1_and_top5(tiny: TinyRun, capsys) -> None:
    voices, trained = tiny
    assert evaluate(trained, "--identify", str(voices), "--enroll-per-speaker", "2") == 0
    result = json.loads(capsys.readouterr().out)["identification"]
    assert result["speakers"] == 3 and result["test_clips"] == 12 and result["enrolment_clips_per_speaker"] == 2
    assert result["top1"] == 1.0 and result["top5"] == 1.0


def test_evaluate_with_a_cohort_reports_s_normalised_metrics(tiny: TinyRun, capsys) -> None:
    voices, trained = tiny
    assert (
        evaluate(
            trained,
            "--trials",
            str(_trial_list(voices)),
            "--root",
            str(voices),
            "--cohort",
            str(voices),
            "--cohort-top-n",
            "2",
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert results["snorm"]["n_trials"] == 27 and 0.0 <= results["snorm"]["eer"] <= 1.0
