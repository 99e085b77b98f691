"""train.distill: the Resemblyzer teacher is Resemblyzer (same features, same network, same
embeddings), the distillation losses against hand-computed values, and a distilling run through
the CLI that logs its terms, resumes, and leaves teacher and projection out of the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import voiced, write_voices
from safetensors import safe_open
from train_helpers import fit_args, logging_restored, metric_rows

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.encoder import SpeakerEncoder
from train.__main__ import main
from train.config import ConfigError, load_config
from train.distill import ResemblyzerTeacher, distillation_losses, standardised_similarities
from train.loop import TrainModel, train_step

resemblyzer = pytest.importorskip("resemblyzer", reason="resemblyzer (the teacher's weights) is not installed")


@pytest.fixture(scope="module")
def teacher() -> ResemblyzerTeacher:
    return ResemblyzerTeacher()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """Four seconds of a voice at a low level (Resemblyzer raises it to -30 dBFS)."""
    return voiced(4.0, f0=140.0, formant=900.0, peak=0.05, noise=0.02, seed=3)


def test_teacher_features_are_resemblyzers(teacher: ResemblyzerTeacher, clip: np.ndarray) -> None:
    from resemblyzer import audio

    loud = audio.normalize_volume(clip, -30, increase_only=True)
    expected = audio.wav_to_mel_spectrogram(loud)
    ours = teacher.features(torch.from_numpy(clip)[None])[0].numpy()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-5 * float(expected.max()))


def test_teacher_network_is_resemblyzers(teacher: ResemblyzerTeacher, clip: np.ndarray) -> None:
    from resemblyzer import audio

    mels = torch.from_numpy(audio.wav_to_mel_spectrogram(clip)[None, :160])
    voice = resemblyzer.VoiceEncoder("cpu", verbose=False)
    with torch.no_grad():
        torch.testing.assert_close(teacher.embed_frames(mels), voice(mels))


def test_teacher_embeds_a_clip_as_resemblyzer_does(teacher: ResemblyzerTeacher, clip: np.ndarray) -> None:
    """Whole-clip embeddings agree; they differ only in where the 1.6-s partials start."""
    from resemblyzer import audio

    voice = resemblyzer.VoiceEncoder("cpu", verbose=False)
    expected = voice.embed_utterance(audio.normalize_volume(clip, -30, increase_only=True))
    ours = teacher(torch.from_numpy(clip)[None])[0].numpy()
    assert float(np.linalg.norm(ours)) == pytest.approx(1.0, abs=1e-5)
    assert float(ours @ expected) > 0.99


def test_teacher_is_frozen(teacher: ResemblyzerTeacher) -> None:
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_distillation_losses_by_hand() -> None:
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Projected student: the first crop agrees with its target, the second is orthogonal to it, the
    # third is at 45 degrees: 1 - mean(1, 0, cos 45) = 1 - (1 + 0.70711) / 3.
    projected = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    cosine, similarity = distillation_losses(teacher, projected, teacher)
    assert float(cosine) == pytest.approx(1 - (1 + 2**-0.5) / 3, abs=1e-6)
    assert float(similarity) == pytest.approx(0.0, abs=1e-10)


def test_similarity_loss_ignores_the_level_of_similarities_not_their_order() -> None:
    """Three vectors at pairwise cosines (0.8, 0.6, 0.5) and a batch with the same cosines lowered
    and spread by an affine map have the same standardised similarities; swapping which pair is
    closest does not."""
    gram = torch.tensor([[1.0, 0.8, 0.6], [0.8, 1.0, 0.5], [0.6, 0.5, 1.0]])
    teacher = torch.linalg.cholesky(gram)  # rows with exactly these cosines
    level = torch.tensor([[1.0, 0.8 * 2 - 1.2, 0.6 * 2 - 1.2], [0.0, 1.0, 0.5 * 2 - 1.2], [0.0, 0.0, 1.0]])
    lowered = level + level.T - torch.eye(3)
    student = torch.linalg.cholesky(lowered)
    torch.testing.assert_close(standardised_similarities(student), standardised_similarities(teacher))
    swapped = torch.linalg.cholesky(torch.tensor([[1.0, 0.5, 0.6], [0.5, 1.0, 0.8], [0.6, 0.8, 1.0]]))
    assert float(distillation_losses(swapped, teacher, teacher)[1]) > 1.0


def test_distill_is_off_by_default_and_checked() -> None:
    assert load_config(None, [])["distill"]["teacher"] is None
    with pytest.raises(ConfigError, match="Unknown distill.teacher 'resemblizer'"):
        load_config(None, ["distill.teacher=resemblizer"])
    with pytest.raises(ConfigError, match="HW4 sources"):
        load_config(None, ["distill.teacher=resemblyzer", "data.sources=[{type: hw4, root: .}]"])
    with pytest.raises(ConfigError, match="distill.projection"):
        load_config(None, ["distill.projection=256"])


def test_train_step_adds_the_weighted_distillation_terms(teacher: ResemblyzerTeacher) -> None:
    cfg = load_config(
        None,
        [
            "encoder={name: ecapa_tdnn, channels: 16, embed_dim: 16}",
            "frontend={n_mels: 40}",
            "distill={teacher: resemblyzer, cosine_weight: 2.0, similarity_weight: 0.5}",
        ],
    )
    torch.manual_seed(0)
    model = TrainModel.from_config(cfg, ["a", "b"]).train()
    assert model.projection.in_features == 16 and model.projection.out_features == ResemblyzerTeacher.embed_dim
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    crops = torch.from_numpy(np.stack([voiced(1.0, f0=f0, seed=i) for i, f0 in enumerate((110, 180, 290, 150))]))
    result = train_step(model, opt, crops, torch.tensor([0, 1, 0, 1]), amp="bf16", grad_clip=5.0, teacher=teacher)
    terms = {name: float(value.detach()) for name, value in result.terms.items()}
    assert set(terms) == {"class_loss", "distill_cosine", "distill_similarity"}
    expected = terms["class_loss"] + 2.0 * terms["distill_cosine"] + 0.5 * terms["distill_similarity"]
    assert result.loss.item() == pytest.approx(expected, rel=1e-5)
    assert model.projection.weight.grad is not None and model.projection.weight.grad.abs().sum() > 0


def test_a_distilling_run_logs_its_terms_resumes_and_ships_no_teacher(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    write_voices(voices, clips=4, seconds=1.0)
    sources = [{"type": "folder", "root": str(voices)}]
    settings = ["--set", "distill={teacher: resemblyzer}"]
    run_dir = tmp_path / "run"
    with logging_restored():
        assert main([*fit_args(run_dir, sources, "ecapa_tdnn", steps=4, checkpoint_every=2), *settings]) == 0
    rows = metric_rows(run_dir)
    assert all({"class_loss", "distill_cosine", "distill_similarity"} <= set(r) for r in rows if "loss" in r)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["distill"]["teacher"] == "resemblyzer"
    with safe_open(str(run_dir / "model" / "model.safetensors"), "pt") as f:
        parts = {name.split(".")[0] for name in f.keys()}
    assert parts == {"model", "head"}, parts
    state = torch.load(run_dir / "state.pt", weights_only=True)
    assert "projection.weight" in state["model"]
    with logging_restored():
        assert main(["fit", "--resume", str(run_dir), "--set", "train.steps=6"]) == 0
    assert [r["step"] for r in metric_rows(run_dir) if "loss" in r][-1] == 6


def test_teacher_sees_the_sample_rate_it_was_trained_on() -> None:
    assert SAMPLE_RATE == 16000 == resemblyzer.hparams.sampling_rate


def test_unlabelled_clips_teach_through_the_teacher_only(tmp_path: Path) -> None:
    """An unlabelled source (a CSV of paths) adds crops that the head never sees: the classes are
    the labelled speakers, and without a teacher such a source is refused."""
    labelled, unknown = tmp_path / "voices", tmp_path / "unknown"
    write_voices(labelled, speakers=["alice", "bob"], clips=4)
    clips = write_voices(unknown, speakers=["carol"], clips=6, sessions=False)
    manifest = tmp_path / "unlabelled.csv"
    manifest.write_text("path,word\n" + "".join(f"{p.relative_to(unknown)},hello\n" for p in clips))
    sources = [
        {"type": "folder", "root": str(labelled)},
        {"type": "unlabelled", "manifest": str(manifest), "root": str(unknown)},
    ]
    with pytest.raises(ConfigError, match="set distill.teacher"):
        load_config(None, [f"data.sources={json.dumps(sources)}"])
    run_dir = tmp_path / "run"
    with logging_restored():
        args = [*fit_args(run_dir, sources, "ecapa_tdnn", steps=3), "--set", "distill={teacher: resemblyzer}"]
        assert main(args) == 0
    trained = SpeakerEncoder.from_pretrained(run_dir / "model", device="cpu")
    assert trained.classes == ["alice", "bob"]
    split = (run_dir / "split.csv").read_text().splitlines()
    assert sum(line.endswith(f",unlabelled,{unknown}") for line in split) == 6
