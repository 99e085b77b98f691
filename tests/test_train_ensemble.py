"""``python -m train ensemble``: checkpoints trained apart, joined into one whose score is the mean
of theirs; exported and quantised like any other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import voiced
from train_helpers import logging_restored

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.encoder import SpeakerEncoder
from train.__main__ import main
from train.hub import architecture_section


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


@pytest.fixture(scope="module")
def members(tiny_checkpoint) -> list[Path]:
    """Two differently sized, differently initialised tiny checkpoints, one with a head."""
    return [
        tiny_checkpoint(16, seed=1),
        tiny_checkpoint(24, seed=2, head={"name": "aam_softmax"}, classes=["a", "b", "c"]),
    ]


@pytest.fixture(scope="module")
def joined(members: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ensemble") / "model"
    with logging_restored():
        assert main(["ensemble", *map(str, members), "--output", str(folder)]) == 0
    return folder


def audio() -> list[tuple[int, np.ndarray]]:
    return [
        (SAMPLE_RATE, voiced(seconds, f0=f0, noise=0.02, seed=i))
        for i, (seconds, f0) in enumerate([(2.0, 110), (4.5, 190), (3.0, 240)])
    ]


def test_the_joined_score_is_the_mean_of_the_members_scores(members: list[Path], joined: Path):
    encoders = [SpeakerEncoder.from_pretrained(m, device="cpu", backend="torch") for m in members]
    ensemble = SpeakerEncoder.from_pretrained(joined, device="cpu", backend="torch")
    assert ensemble.model.embed_dim == 2 * 192 and ensemble.head is None
    ours = ensemble.embed_batch(audio())
    theirs = [e.embed_batch(audio()) for e in encoders]
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        mean = np.mean([e.score(t[i], t[j]) for e, t in zip(encoders, theirs)])
        assert ensemble.score(ours[i], ours[j]) == pytest.approx(mean, abs=1e-5)
    # The attention the app draws is the members' mean: still a distribution over the frames.
    for emb in ours:
        assert emb.attention.sum() == pytest.approx(1.0, abs=1e-4)


def test_the_joined_checkpoint_exports_and_onnx_embeds_as_torch_does(joined: Path):
    assert main(["export", str(joined)]) == 0
    onnx = SpeakerEncoder.from_pretrained(joined, device="cpu", backend="onnx")
    torch_encoder = SpeakerEncoder.from_pretrained(joined, device="cpu", backend="torch")
    for a, b in zip(onnx.embed_batch(audio()), torch_encoder.embed_batch(audio())):
        assert float(a.vector @ b.vector) > 0.9999


def test_members_must_share_a_front_end_and_be_plain(
    members: list[Path], joined: Path, tiny_checkpoint, tmp_path, capsys
):
    other = tiny_checkpoint(16, frontend={"n_mels": 40})
    assert main(["ensemble", str(members[0]), str(other), "--output", str(tmp_path / "x")]) == 2
    assert "different front ends" in capsys.readouterr().err
    assert main(["ensemble", str(members[0]), str(joined), "--output", str(tmp_path / "y")]) == 2
    assert "cannot be a member" in capsys.readouterr().err
    assert main(["ensemble", str(members[0]), "--output", str(tmp_path / "z")]) == 2
    assert "two checkpoints or more" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "xyz")
    assert json.loads((joined / "config.json").read_text())["encoder"]["name"] == "ensemble"


def test_a_generated_card_names_each_member(joined: Path):
    section = architecture_section(json.loads((joined / "config.json").read_text()), {"model": 1234})
    assert "`ensemble` (of `ecapa_tdnn` (channels=16); `ecapa_tdnn` (channels=24); the score" in section
    assert "mean of the members' cosines" in section and "Training head" not in section
