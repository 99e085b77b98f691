"""Fixtures shared by the whole test suite."""

import csv
import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property-based tests run from a fixed seed and without an example database unless
# HYPOTHESIS_PROFILE=explore: CI should not meet a case nobody has looked for before; what an
# exploring run finds is fixed and kept as a plain test.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared corpora, ``<repo>/../shared/data``.

    The corpora live outside the repository (they must never be copied into it), so tests on
    real audio skip, instead of failing, on machines that do not have them.
    """
    root = REPO_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip("../shared/data not found: real-audio tests skipped")
    return root


# ---------------------------------------------------------------- the web app's tests
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "ecapa-speechocean"
TEST_MODEL_ENV = "SPEAKERDEMO_TEST_MODEL"

# Fixed speechocean762 *test*-split adults (never seen in training) whose clips the UI tests use:
# two of different gender for the clear cases, a third (same gender as the first) for more
# different-speaker pairs. Clips are the speaker's test files of 4-8 s, in utterance order.
SPEAKERS = ("so9626", "so9608", "so1109")
CLIPS_PER_SPEAKER = 4
CLIP_SECONDS = (4.0, 8.0)


@pytest.fixture(scope="session")
def trained_checkpoint() -> Path:
    """The checkpoint the UI tests run on: the default trained one, else $SPEAKERDEMO_TEST_MODEL.

    Score-level assertions (same speaker scores higher, identification) are written for the
    trained model; an untrained checkpoint given through the environment only exercises the
    plumbing, and those assertions may fail with it.
    """
    if (DEFAULT_CHECKPOINT / "config.json").is_file():
        return DEFAULT_CHECKPOINT
    override = os.environ.get(TEST_MODEL_ENV)
    if override:
        path = Path(override)
        if not (path / "config.json").is_file():
            pytest.fail(f"${TEST_MODEL_ENV}={override} is not a checkpoint folder (no config.json).")
        return path.resolve()
    pytest.skip(f"no trained checkpoint at {DEFAULT_CHECKPOINT.relative_to(REPO_ROOT)} and "
                f"${TEST_MODEL_ENV} is not set: web-app tests skipped")


@pytest.fixture(scope="session")
def app_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained checkpoint when there is one, else a tiny untrained one: for tests of the app's
    robustness (bad input, load), which hold with any model."""
    try:
        return request.getfixturevalue("trained_checkpoint")
    except pytest.skip.Exception:
        import torch

        from speakerdemo.encoder import SpeakerEncoder

        folder = tmp_path_factory.mktemp("app-checkpoint") / "tiny"
        torch.manual_seed(0)
        SpeakerEncoder(encoder={"name": "ecapa_tdnn", "channels": 32}).save_pretrained(folder)
        return folder


@pytest.fixture(scope="session")
def speech_clips(shared_data: Path) -> dict[str, list[Path]]:
    """``{speaker: [clip paths]}`` for SPEAKERS, read in place from ../shared/data/speechocean762."""
    root = shared_data / "speechocean762"
    table = root / "utterances.csv"
    if not table.is_file():
        pytest.skip(f"{table} not found: real-audio UI tests skipped")
    with table.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["speaker"] in SPEAKERS]
    clips: dict[str, list[Path]] = {}
    for speaker in SPEAKERS:
        mine = sorted((r for r in rows if r["speaker"] == speaker), key=lambda r: r["utt"])
        assert mine and all(r["split"] == "test" for r in mine), f"{speaker} must be a test-split speaker"
        chosen = [root / r["path"] for r in mine
                  if CLIP_SECONDS[0] <= float(r["duration_s"]) <= CLIP_SECONDS[1]][:CLIPS_PER_SPEAKER]
        assert len(chosen) == CLIPS_PER_SPEAKER, f"{speaker} has too few {CLIP_SECONDS} s test clips"
        missing = [p for p in chosen if not p.is_file()]
        if missing:
            pytest.skip(f"speechocean762 audio missing, e.g. {missing[0]}")
        clips[speaker] = chosen
    return clips
