"""The shipped default checkpoint: small, calibrated, and separating speakers it never heard."""

import json
from pathlib import Path

import numpy as np
import pytest

from speakerdemo import SpeakerEncoder, compute_eer
from train.data import read_trials
from train.evaluate import trial_scores

CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "ecapa-speechocean"
SAMPLE_TRIALS = 200  # the first 200 of speechocean762/trials_test.txt (test speakers only)
SAMPLE_EER_BOUND = 0.10  # full-list EER is in the model card; 200 trials are a noisy estimate of it


@pytest.fixture(scope="module")
def encoder():
    return SpeakerEncoder.from_pretrained(CHECKPOINT, device="cpu")


def test_checkpoint_is_small_and_complete():
    files = {p.name for p in CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= files
    assert (CHECKPOINT / "model.safetensors").stat().st_size <= 30 * 2**20
    card = (CHECKPOINT / "README.md").read_text()
    assert "library_name: speakerdemo" in card and "CC BY 4.0" in card and "Apache-2.0" in card


def test_checkpoint_is_calibrated(encoder):
    config = json.loads((CHECKPOINT / "config.json").read_text())
    calibration = config["calibration"]
    assert calibration["trials"] == "speechocean762/trials_test.txt"
    assert encoder.threshold == pytest.approx(calibration["threshold"])
    far, frr = encoder.calibration.rates_at(encoder.threshold)
    assert far == pytest.approx(calibration["eer"], abs=0.01) and frr == pytest.approx(calibration["eer"], abs=0.01)


def test_separates_unseen_speakers_on_real_trials(encoder, shared_data):
    root = shared_data / "speechocean762"
    trials = read_trials(root / "trials_test.txt", root)[:SAMPLE_TRIALS]
    scores, labels = trial_scores(encoder, trials, root)
    same, different = scores[labels == 1], scores[labels == 0]
    assert len(same) > 50 and len(different) > 50
    assert same.mean() > different.mean() + 0.2
    eer, _ = compute_eer(scores, labels)
    print(f"EER on the first {SAMPLE_TRIALS} trials: {100 * eer:.2f} % (bound {100 * SAMPLE_EER_BOUND:.0f} %)")
    assert eer < SAMPLE_EER_BOUND
    assert np.isfinite(scores).all()
