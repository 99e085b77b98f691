"""train/loop.py through ``python -m train fit``: every encoder/head pair learning a toy set, the
logged training accuracy, one optimizer step, exact resume after SIGKILL, and fine-tuning from a
checkpoint."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_voices
from train_helpers import (
    TINY_ENCODERS,
    TINY_HEADS,
    TinyRun,
    fit_args,
    fit_settings,
    logging_restored,
    metric_rows,
    train_on_voices,
)

from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.losses import HEADS as HEAD_CLASSES
from speakerdemo.losses import CosineHead
from train.__main__ import main
from train.config import OPTIMIZERS, build, load_config
from train.logs import MetricLog
from train.loop import AccuracyTally, TrainModel, train_step

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return train_on_voices(tmp_path_factory.mktemp("tiny"))


# ----------------------------------------------------------------------------- every encoder/head pair
@pytest.mark.parametrize("head", list(TINY_HEADS))
@pytest.mark.parametrize("encoder", list(TINY_ENCODERS))
def test_every_encoder_and_head_learns_two_speakers(tmp_path: Path, encoder: str, head: str) -> None:
    data = tmp_path / "data"
    write_voices(data, ["alice", "bob"], clips=4)
    run_dir = tmp_path / "run"
    assert main(fit_args(run_dir, [{"type": "folder", "root": str(data)}], encoder, head)) == 0
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, 25))
    assert rows[0]["accuracy"] < 1.0 and rows[-1]["accuracy"] == 1.0
    assert rows[-1]["loss"] < rows[0]["loss"]
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "metrics.jsonl",
        "curves.png",
        "config.yaml",
        "split.csv",
        "state.pt",
    ):
        assert (run_dir / name).is_file(), name
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["encoder"] == TINY_ENCODERS[encoder] and resolved["head"] == TINY_HEADS[head]
    trained = SpeakerEncoder.from_pretrained(run_dir / "model", device="cpu")
    assert trained.classes == ["alice", "bob"] and type(trained.head) is HEAD_CLASSES[head]


def test_accuracy_tally_counts_every_crop_since_the_last_log() -> None:
    tally = AccuracyTally()
    assert tally.accuracy != tally.accuracy  # NaN before any labelled crop
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    tally.add(logits, torch.tensor([0, 2, 2, 1]))  # right: rows 0 and 2
    tally.add(logits[:2], torch.tensor([0, 1]))  # right: both
    assert tally.accuracy == 4 / 6
    assert tally.take() == 4 / 6
    tally.add(logits[3:], torch.tensor([0]))
    assert tally.take() == 1.0  # counting started again at the last take


@pytest.mark.parametrize("scale", [10.0, 30.0])
def test_res2net50_with_am_softmax_logs_an_accuracy_that_moves_on_real_clips(
    tmp_path: Path, speech_clips: dict[str, list[Path]], shared_data: Path, scale: float
) -> None:
    """The Q&A-site complaint: a Res2Net50 with AM-Softmax whose training accuracy reads only 0 or
    100 %. Logged every 3 steps of 8 crops, it is a fraction of the 24 crops since the last log."""
    root = shared_data / "speechocean762"
    manifest = tmp_path / "clips.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["speaker", "path"])
        writer.writerows([speaker, str(p.relative_to(root))] for speaker, ps in speech_clips.items() for p in ps)
    run_dir = tmp_path / "run"
    args = fit_args(
        run_dir,
        [{"type": "manifest", "root": str(root), "manifest": str(manifest)}],
        "res2net50",
        "am_softmax",
        steps=12,
        log_every=3,
    )
    args += ["--set", f"head={{name: am_softmax, scale: {scale}, margin: 0.2}}"]
    assert main(args) == 0
    accuracy = [r["accuracy"] for r in metric_rows(run_dir)]
    assert len(accuracy) == 4
    assert all(0.0 <= a <= 1.0 and abs(a * 24 - round(a * 24)) < 1e-9 for a in accuracy), accuracy
    assert len(set(accuracy)) > 1, accuracy  # it moves


def test_train_step_takes_one_clipped_optimizer_step() -> None:
    """Loss and logits of the batch, the gradient norm before clipping, and parameters moved by
    exactly one AdamW step on the clipped gradient."""
    cfg = load_config(None, [f"encoder={TINY_ENCODERS['ecapa_tdnn']}", "frontend={n_mels: 40}"])
    torch.manual_seed(0)
    model = TrainModel.from_config(cfg, ["a", "b", "c"]).train()
    opt = build(OPTIMIZERS, {"name": "adamw", "lr": 0.01, "weight_decay": 0.0}, model.parameters())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    crops, labels = 0.1 * torch.randn(4, 8000), torch.tensor([0, 1, 2, 0])
    result = train_step(model, opt, crops, labels, amp="bf16", grad_clip=1e-3)
    assert result.loss.ndim == 0 and result.logits.shape == (4, 3)
    assert float(result.grad_norm) > 1e-3
    clipped = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))
    assert float(clipped) == pytest.approx(1e-3, rel=1e-3)
    after = {name: p.detach() for name, p in model.named_parameters()}
    assert any(not torch.equal(after[name], before[name]) for name in before)
    assert max(float((after[name] - before[name]).abs().max()) for name in before) <= 0.01 + 1e-6


# ----------------------------------------------------------------------------- margin warm-up
def test_the_loop_tells_the_head_each_step_and_the_head_warms_its_margin_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schedule is the head's (configured in ``head``, saved with it); fit only counts steps."""
    data = tmp_path / "data"
    write_voices(data, ["alice", "bob"], clips=4)
    told: list[tuple[int, float]] = []
    set_step = CosineHead.set_step

    def recording(head: CosineHead, step: int) -> None:
        set_step(head, step)
        told.append((step, head.current_margin))

    monkeypatch.setattr(CosineHead, "set_step", recording)
    warm_up = ["--set", "head.margin_warmup_start=1", "--set", "head.margin_warmup_steps=2"]
    assert main(fit_args(tmp_path / "run", [{"type": "folder", "root": str(data)}], steps=5) + warm_up) == 0
    # margin 0.2 (TINY_HEADS): 0 through step 1, then 0.2 * (step - 1) / 2 up to the full margin
    assert [step for step, _ in told] == [0, 1, 2, 3, 4]
    assert [margin for _, margin in told] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.2])
    trained = SpeakerEncoder.from_pretrained(tmp_path / "run" / "model", device="cpu")
    assert trained.head_config == {**TINY_HEADS["aam_softmax"], "margin_warmup_start": 1, "margin_warmup_steps": 2}
    assert trained.head.margin_at(2) == pytest.approx(0.1) and trained.head.current_margin == 0.2


def test_a_checkpoint_saved_before_the_head_had_a_warm_up_loads_without_one(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    SpeakerEncoder(
        encoder=TINY_ENCODERS["ecapa_tdnn"], head=TINY_HEADS["am_softmax"], classes=["a", "b"]
    ).save_pretrained(tmp_path)
    assert "margin_warmup_start" not in config.read_text()
    head = SpeakerEncoder.from_pretrained(tmp_path, device="cpu").head
    assert (head.margin_warmup_start, head.margin_warmup_steps) == (0, 0)
    assert [head.margin_at(step) for step in (0, 1000)] == [0.2, 0.2] and head.current_margin == 0.2


# ----------------------------------------------------------------------------- resume after SIGKILL
def _python_m_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "train", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_resume_after_sigkill_repeats_the_uninterrupted_losses_exactly(tmp_path: Path) -> None:
    """Dropout, SpecAugment, a loader worker and epoch boundaries: a resumed run must not notice."""
    data = tmp_path / "data"
    write_voices(data, ["alice", "bob"], clips=4)
    steps = 30
    args = fit_settings(
        [{"type": "folder", "root": str(data), "repeats": 6}], steps=steps, num_workers=1, checkpoint_every=4
    )
    args += [
        "--set",
        "augment={spec_freq_mask: 6, spec_time_mask: 8, spec_prob: 1.0}",
        "--set",
        "encoder.dropout=0.2",
        "--set",
        "data.split={kind: utterance, val_fraction: 0.25}",
        "--set",
        "train.validate_every=10",
        "--set",
        "train.best_metric=val_accuracy",
        "--set",  # the margin changes across the kill: the resumed head must get the step's margin
        "head.margin_warmup_start=2",
        "--set",
        "head.margin_warmup_steps=20",
    ]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    started = [
        subprocess.Popen(
            _python_m_train("fit", "--run-dir", str(run_dir), *args),
            cwd=REPO,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for run_dir in (reference, killed)
    ]
    ref, victim = started
    deadline = time.monotonic() + 120
    while not (killed / "state.pt").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    interrupted_at = torch.load(killed / "state.pt", weights_only=True)["progress"]["step"]
    assert 0 < interrupted_at < steps and not (killed / "model").exists()

    resumed = subprocess.run(
        _python_m_train("fit", "--resume", str(killed)),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ref.wait(timeout=300) == 0
    assert f"resumed from step {interrupted_at} " in (killed / "train.log").read_text()
    recorded = yaml.safe_load((killed / "config.yaml").read_text())["command"]
    assert recorded.startswith(f"python -m train fit --run-dir {killed} "), "the starting command was lost"
    assert torch.load(killed / "state.pt", weights_only=True)["progress"]["step"] == steps
    want, got = metric_rows(reference), metric_rows(killed)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    losses = [(r["step"], r["loss"], s["loss"]) for r, s in zip(want, got) if "loss" in r]
    assert [step for step, _, _ in losses] == list(range(1, steps + 1))
    assert max(abs(a - b) for _, a, b in losses) <= 1e-5
    assert [r.get("val_accuracy") for r in got] == [r.get("val_accuracy") for r in want]
    weights = "model/model.safetensors"
    assert (killed / weights).read_bytes() == (reference / weights).read_bytes()


def test_torn_metrics_line_of_a_killed_run_is_dropped_on_resume(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = MetricLog(tmp_path, enabled=True, resumed_at=2)
    log.truncate_after(2)
    assert metric_rows(tmp_path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


# ----------------------------------------------------------------------------- fine-tuning
def _parameters(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    model = SpeakerEncoder.from_pretrained(folder, device="cpu")
    return {k: v for k, v in model.named_parameters() if k.startswith(prefix)}


def test_init_from_a_checkpoint_fine_tunes_it(tiny: TinyRun, tmp_path: Path, capsys) -> None:
    """With a zero learning rate one step changes nothing: the run starts exactly from the checkpoint,
    head included when the classes are the same; other speakers get a fresh head."""
    voices, trained = tiny
    frozen = ["--set", "optim.lr=0", "--set", f"train.init_from={trained}"]
    same = tmp_path / "same"
    assert main(fit_args(same, [{"type": "folder", "root": str(voices)}], steps=1) + frozen) == 0
    for prefix in ("model.", "head."):
        want, got = _parameters(trained, prefix), _parameters(same / "model", prefix)
        assert want and all(torch.equal(want[k], got[k]) for k in want), prefix

    two = tmp_path / "two"
    write_voices(two, ["alice", "bob"], clips=4)
    other = tmp_path / "other"
    assert main(fit_args(other, [{"type": "folder", "root": str(two)}], steps=1) + frozen) == 0
    want, got = _parameters(trained, "model."), _parameters(other / "model", "model.")
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert _parameters(other / "model", "head.")["head.weight"].shape[0] == 2
    assert "encoder; new head" in (other / "train.log").read_text()

    wider = fit_args(tmp_path / "wider", [{"type": "folder", "root": str(voices)}], steps=1) + frozen
    assert main(wider + ["--set", "encoder.dim=48"]) == 2
    assert "has another front end or encoder than this run" in capsys.readouterr().err
