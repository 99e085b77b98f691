"""The shipped default checkpoint: small, calibrated across recording conditions with its score
cohort, exported for ONNX Runtime, separating speakers it never heard, and keeping strangers out
at its threshold in every condition."""

import json
from pathlib import Path

import numpy as np
import pytest

from speakerdemo import SpeakerEncoder, compute_eer
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.cohort import COHORT_FILE
from speakerdemo.conditions import CONDITIONS, WIDEBAND, pair_conditions
from speakerdemo.metrics import error_rates
from train.condition_trials import condition_trials, dev_test_split, held_out
from train.data import read_trials
from train.trials import embed_clips, trial_scores

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = REPO / "checkpoints" / "ecapa-speechocean"
RECIPE = REPO / "train" / "configs" / "ecapa-speechocean.yaml"
SAMPLE_TRIALS = 200  # the first 200 of speechocean762/trials_test.txt (test speakers only)
SAMPLE_EER_BOUND = 0.05  # measured 2.00 % on these 200 (full list 3.74 %, the card); 200 trials are a noisy estimate
MAX_FAR = 0.05  # `python -m train calibrate --max-far`: every dev condition keeps to it
TEST_SPEAKERS = 10  # test-half LibriSpeech speakers (never trained on, never calibrated on)
# Issue 13's bar. Measured on these 10 speakers (16 kHz / 8 kHz / 1-2 s / words / noise):
# 1.5 / 3.7 / 0.9 / 7.9 / 3.1 %; on all 24-25 of the test half (the suite): 1.5 / 5.0 / 1.1 / 5.9 / 3.5 %.
FAR_BOUND = 0.10


@pytest.fixture(scope="module")
def encoder():
    return SpeakerEncoder.from_pretrained(CHECKPOINT, device="cpu")


def test_checkpoint_is_small_and_complete():
    files = {p.name for p in CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "model.onnx", "model.int8.onnx", COHORT_FILE, "README.md"} <= files
    assert (CHECKPOINT / "model.safetensors").stat().st_size <= 30 * 2**20
    assert (CHECKPOINT / COHORT_FILE).stat().st_size <= 4 * 2**20
    card = (CHECKPOINT / "README.md").read_text()
    assert "library_name: speakerdemo" in card and "CC BY 4.0" in card and "Apache-2.0" in card
    assert "python -m train calibrate" in card  # the card says how the threshold was chosen


def test_checkpoint_is_calibrated_across_conditions(encoder):
    config = json.loads((CHECKPOINT / "config.json").read_text())
    cal = encoder.calibration
    assert encoder.threshold == pytest.approx(config["calibration"]["threshold"])
    assert cal.trials.endswith("librispeech-251 dev speakers, 5 conditions")
    assert set(cal.conditions) == set(CONDITIONS)
    # Normalised against the cohort, one threshold serves every condition: no kind is shifted.
    assert cal.shifts == {WIDEBAND: 0.0}
    assert f"{100 * MAX_FAR:g} %" in cal.rule
    cohort = encoder.cohort
    assert cohort is not None and len(cohort.vectors) >= 1000 and cohort.dim == encoder.model.embed_dim
    assert 0.0 < cohort.mean_floor < 1.0 and 0.0 < cohort.std_floor < 0.2


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


def test_strangers_stay_out_at_the_threshold_on_speakers_it_never_heard(encoder, shared_data, monkeypatch):
    """Test-half LibriSpeech speakers (neither trained nor calibrated on), scored as the app scores:
    the cosine normalised against the cohort, less the shift of the pair's detected kind (none).
    At the shipped threshold at most FAR_BOUND of the different-speaker pairs pass in every
    condition."""
    monkeypatch.chdir(REPO)  # the recipe names the data relative to the repository root
    utts = held_out(RECIPE, shared_data / "librispeech-251")
    _, test = dev_test_split([u.speaker for u in utts])
    trials = condition_trials([u for u in utts if u.speaker in test], TEST_SPEAKERS)
    for condition in CONDITIONS:
        embeddings = embed_clips(encoder, [(SAMPLE_RATE, w) for w in trials[condition].segments], desc=condition)
        first, second = trials[condition].pairs
        raw = encoder.pair_scores(np.stack([e.vector for e in embeddings]), first, second)
        scores = encoder.calibration.adjusted(raw, list(pair_conditions(embeddings, first, second)))
        far, frr = error_rates(scores, trials[condition].labels, encoder.threshold)
        print(f"{condition}: FAR {100 * far:.1f} %, FRR {100 * frr:.1f} % at {encoder.threshold:.3f}")
        assert far <= FAR_BOUND, condition
