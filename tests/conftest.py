"""Fixtures shared by the whole test suite."""

import csv
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import settings

from benchmarks.common import voiced
from speakerdemo.audio import SAMPLE_RATE

# Property-based tests run from a fixed seed and without an example database unless
# HYPOTHESIS_PROFILE=explore: CI should not meet a case nobody has looked for before; what an
# exploring run finds is fixed and kept as a plain test. No deadline: speed is measured in
# benchmarks/, and a per-example time limit only fails when the machine is busy.
settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- synthetic speech and tiny models
# Pitch and formant (Hz) of the generated training voices.
VOICES = {"alice": (110.0, 600.0), "bob": (180.0, 1600.0), "carol": (290.0, 2800.0)}


def write_voices(
    root: Path,
    speakers: list[str] | None = None,
    clips: int = 6,
    seconds: float = 1.0,
    seed: int = 0,
    suffixes: tuple[str, ...] = (".wav",),
    sessions: bool = True,
) -> list[Path]:
    """A folder per speaker of ``VOICES``: ``root/<speaker>/s<session>/c<i><suffix>`` (or
    ``root/<speaker>/c<i><suffix>`` without ``sessions``), each clip with its own phases, a
    slightly jittered pitch and a little noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for speaker in speakers or list(VOICES):
        f0, formant = VOICES[speaker]
        for i in range(clips):
            folder = root / speaker / (f"s{i % 2}" if sessions else "")
            path = folder / f"c{i}{suffixes[i % len(suffixes)]}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(
                path,
                voiced(seconds, f0=f0 * rng.uniform(0.97, 1.03), formant=formant, noise=0.01, seed=rng),
                SAMPLE_RATE,
            )
            paths.append(path)
    return paths


def tiny_encoder(channels: int = 16, seed: int = 0, **options):
    """An untrained ECAPA-TDNN ``SpeakerEncoder`` of ``channels`` channels; ``options`` go to the
    constructor (``head``, ``classes``, ``frontend``, ``encoder`` settings merged in)."""
    import torch

    from speakerdemo.encoder import SpeakerEncoder

    encoder = {"name": "ecapa_tdnn", "channels": channels, **options.pop("encoder", {})}
    torch.manual_seed(seed)
    return SpeakerEncoder(encoder=encoder, **options).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``tiny_checkpoint(channels=16, **options)`` saves a ``tiny_encoder`` in a fresh
    folder and returns the folder."""

    def make(channels: int = 16, **options) -> Path:
        folder = tmp_path_factory.mktemp("tiny-checkpoint") / "model"
        tiny_encoder(channels, **options).save_pretrained(folder)
        return folder

    return make


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
    pytest.skip(
        f"no trained checkpoint at {DEFAULT_CHECKPOINT.relative_to(REPO_ROOT)} and "
        f"${TEST_MODEL_ENV} is not set: web-app tests skipped"
    )


@pytest.fixture(scope="session")
def app_checkpoint(request: pytest.FixtureRequest) -> Path:
    """The trained checkpoint when there is one, else a tiny untrained one: for tests of the app's
    robustness (bad input, load), which hold with any model."""
    try:
        return request.getfixturevalue("trained_checkpoint")
    except pytest.skip.Exception:
        return request.getfixturevalue("tiny_checkpoint")(32)


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
        chosen = [root / r["path"] for r in mine if CLIP_SECONDS[0] <= float(r["duration_s"]) <= CLIP_SECONDS[1]][
            :CLIPS_PER_SPEAKER
        ]
        assert len(chosen) == CLIPS_PER_SPEAKER, f"{speaker} has too few {CLIP_SECONDS} s test clips"
        missing = [p for p in chosen if not p.is_file()]
        if missing:
            pytest.skip(f"speechocean762 audio missing, e.g. {missing[0]}")
        clips[speaker] = chosen
    return clips
