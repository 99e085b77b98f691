"""The training module on generated data: sources and splits, augmentation, config, every
encoder/head pair learning a toy set through the CLI, exact resume after SIGKILL, evaluate, HW4.

Every fixture is written here (harmonic "voices" with their own pitch and formant, HW4-style
feature files with their own mean spectrum); models are tiny so that the file runs in well under
two minutes on one core.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.losses import HEADS as HEAD_CLASSES
from train.__main__ import load_source, main, prepare_data
from train.augment import AugmentConfig, Augmenter, SpecAugment, babble_source, mix_at_snr, telephone
from train.config import ConfigError, apply_override, load_config
from train.data import (
    AudioStore, CropDataset, DataError, folder_source, label_map, manifest_source, random_crop, read_trials,
    speaker_disjoint_split, utterance_split, voxceleb_list_source,
)
from train.hw4 import N_MELS, load_features
from train.loop import Dist, MetricLog
from train.predict import batch_logits

SR = 16000
REPO = Path(__file__).resolve().parent.parent
# Pitch (Hz) and formant centre (Hz) of each generated voice.
VOICES = {"alice": (110.0, 600.0), "bob": (180.0, 1600.0), "carol": (290.0, 2800.0)}
TINY_ENCODERS = {
    "ecapa_tdnn": {"name": "ecapa_tdnn", "channels": 16, "embed_dim": 16, "scale": 4, "attention_bottleneck": 8},
    "conformer": {"name": "conformer", "dim": 32, "heads": 2, "num_layers": 1, "kernel_size": 7, "ffn_mult": 2,
                  "embed_dim": 16},
    "transformer": {"name": "transformer", "d_model": 32, "nhead": 2, "dim_feedforward": 64, "embed_dim": 16},
}
TINY_HEADS = {"softmax": {"name": "softmax"}, "am_softmax": {"name": "am_softmax", "scale": 30.0, "margin": 0.2},
         "aam_softmax": {"name": "aam_softmax", "scale": 30.0, "margin": 0.2}}


# ----------------------------------------------------------------------------- fixtures
def voice(speaker: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonics of the speaker's pitch under its formant, with a syllable-rate loudness contour."""
    f0, formant = VOICES[speaker]
    f0 *= rng.uniform(0.97, 1.03)
    t = np.arange(int(seconds * SR)) / SR
    wav = np.zeros_like(t)
    for k in range(1, int(4000 / f0)):
        amplitude = np.exp(-0.5 * ((k * f0 - formant) / 250.0) ** 2) + 0.05
        wav += amplitude * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    wav *= 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 2 * np.pi))
    wav += 0.01 * rng.standard_normal(len(t))
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


def write_voices(root: Path, speakers: list[str], clips: int, seconds: float = 1.0, seed: int = 0,
                 suffixes: tuple[str, ...] = (".wav",)) -> list[Path]:
    """``root/<speaker>/s<session>/c<i><suffix>``: a folder per speaker, with nested session folders."""
    rng = np.random.default_rng(seed)
    paths = []
    for speaker in speakers:
        for i in range(clips):
            path = root / speaker / f"s{i % 2}" / f"c{i}{suffixes[i % len(suffixes)]}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, voice(speaker, seconds, rng), SR)
            paths.append(path)
    return paths


def fit_settings(sources: list[dict], encoder: str = "conformer", head: str = "aam_softmax", steps: int = 24,
                 **train: object) -> list[str]:
    """``--set`` arguments for a tiny model on 0.5 s crops of ``sources``; ``train`` overrides the loop settings."""
    loop = {"steps": steps, "batch_size": 8, "num_workers": 0, "log_every": 1, "validate_every": 1000,
            "checkpoint_every": 1000, **train}
    settings = {
        "data.sources": sources, "data.crop_seconds": 0.5, "frontend": {"n_mels": 40},
        "encoder": TINY_ENCODERS[encoder], "head": TINY_HEADS[head], "optim": {"name": "adamw", "lr": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": 0}, **{f"train.{k}": v for k, v in loop.items()},
    }
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def fit_args(run_dir: Path, sources: list[dict], *args: str, **kwargs: object) -> list[str]:
    """``python -m train fit`` arguments: a run folder and ``fit_settings``."""
    return ["fit", "--run-dir", str(run_dir), *fit_settings(sources, *args, **kwargs)]


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def restore_logging():
    """``fit`` points the root logger at the run's train.log; undo that after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three speakers, six one-second clips each."""
    root = tmp_path_factory.mktemp("voices")
    write_voices(root, list(VOICES), clips=6, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, voices: Path) -> Path:
    """A checkpoint trained on the three voices through the CLI (its run folder is its parent)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert main(fit_args(run_dir, [{"type": "folder", "root": str(voices)}], steps=30)) == 0
    return run_dir / "model"


# ----------------------------------------------------------------------------- data sources
def test_folder_source_finds_clips_in_nested_folders_of_every_format(tmp_path: Path) -> None:
    written = write_voices(tmp_path, ["alice", "bob"], clips=3, suffixes=(".wav", ".flac", ".ogg"))
    (tmp_path / "alice" / "notes.txt").write_text("not audio")
    utts = folder_source(tmp_path)
    assert sorted(u.file for u in utts) == sorted(p.resolve() for p in written)
    assert {u.speaker for u in utts} == {"alice", "bob"}
    assert {u.file.suffix for u in utts} == {".wav", ".flac", ".ogg"}
    store = AudioStore(utts, preload=True)
    assert store.readable == {str(u.file) for u in utts}
    assert all(abs(len(store.get(str(u.file))) - SR) < 0.01 * SR for u in utts)


def test_manifest_source_keeps_the_split_column(tmp_path: Path) -> None:
    write_voices(tmp_path, ["alice", "bob"], clips=2)
    rows = [("alice", "alice/s0/c0.wav", "train"), ("alice", "alice/s1/c1.wav", "test"),
            ("bob", "bob/s0/c0.wav", "train"), ("bob", "bob/s1/c1.wav", "test")]
    manifest = tmp_path / "utterances.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("speaker", "path", "split"), *rows])
    assert [(u.speaker, u.path, u.split) for u in manifest_source(manifest, tmp_path)] == rows
    kept, held = load_source({"type": "manifest", "manifest": str(manifest), "root": str(tmp_path),
                              "split": "train"}, seed=0)
    assert [u.path for u in kept] == ["alice/s0/c0.wav", "bob/s0/c0.wav"] and held == []
    assert all(u.file.is_file() for u in kept)


def test_voxceleb_list_and_trial_list_are_read(tmp_path: Path) -> None:
    write_voices(tmp_path, ["alice", "bob"], clips=2)
    listing = tmp_path / "train_list.txt"
    listing.write_text("alice alice/s0/c0.wav\nbob bob/s0/c0.wav\n\nbob bob/s1/c1.wav\n")
    utts = voxceleb_list_source(listing, tmp_path)
    assert [(u.speaker, u.path) for u in utts] == [("alice", "alice/s0/c0.wav"), ("bob", "bob/s0/c0.wav"),
                                                  ("bob", "bob/s1/c1.wav")]
    trials = tmp_path / "trials.txt"
    trials.write_text("1 bob/s0/c0.wav bob/s1/c1.wav\n0 alice/s0/c0.wav bob/s0/c0.wav\n")
    assert [(t.label, t.a, t.b) for t in read_trials(trials, tmp_path)] == [
        (1, "bob/s0/c0.wav", "bob/s1/c1.wav"), (0, "alice/s0/c0.wav", "bob/s0/c0.wav")]


def test_paths_leaving_the_data_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text("speaker,path\nalice,../secret.wav\n")
    listing = tmp_path / "list.txt"
    listing.write_text("alice alice/../../secret.wav\n")
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a.wav ../../etc/passwd\n")
    for read in (lambda: manifest_source(manifest, root), lambda: voxceleb_list_source(listing, root),
                 lambda: read_trials(trials, root)):
        with pytest.raises(DataError, match="outside the data root"):
            read()


def test_unreadable_clip_is_skipped_and_counted_and_the_split_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_voices(data, ["alice", "bob"], clips=4)
    (data / "bob" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    run_dir = tmp_path / "run"
    assert main(fit_args(run_dir, [{"type": "folder", "root": str(data)}], steps=2, batch_size=4) +
                ["--set", "data.split={kind: utterance, val_fraction: 0.25}"]) == 0
    assert "skipped 1 unreadable clip(s)" in (run_dir / "train.log").read_text()
    with open(run_dir / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and any(r["path"] == "bob/broken.wav" for r in rows)
    assert sorted((r["speaker"], r["split"]) for r in rows if r["split"] == "val") == [("alice", "val"),
                                                                                     ("bob", "val")]
    assert (run_dir / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize(("manifest_rows", "message"), [
    ([("alice", "alice/s0/c0.wav", "train"), ("alice", "alice/s1/c1.wav", "train")],
     "Training needs at least 2 speakers; found 1"),
    ([("alice", "alice/s0/c0.wav", "test"), ("bob", "bob/s0/c0.wav", "test")], "The training split is empty"),
])
def test_unusable_training_split_is_a_clear_data_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      manifest_rows: list[tuple], message: str) -> None:
    write_voices(tmp_path, ["alice", "bob"], clips=2)
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("speaker", "path", "split"), *manifest_rows])
    source = {"type": "manifest", "manifest": str(manifest), "root": str(tmp_path), "split": "train"}
    assert main(fit_args(tmp_path / "run", [source], steps=1)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists()


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
    for name in ("model/config.json", "model/model.safetensors", "metrics.jsonl", "curves.png", "config.yaml",
                 "split.csv", "state.pt"):
        assert (run_dir / name).is_file(), name
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["encoder"] == TINY_ENCODERS[encoder] and resolved["head"] == TINY_HEADS[head]
    trained = SpeakerEncoder.from_pretrained(run_dir / "model", device="cpu")
    assert trained.classes == ["alice", "bob"] and type(trained.head) is HEAD_CLASSES[head]


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
    args = fit_settings([{"type": "folder", "root": str(data), "repeats": 6}], steps=steps, num_workers=1,
                        checkpoint_every=4)
    args += ["--set", "augment={spec_freq_mask: 6, spec_time_mask: 8, spec_prob: 1.0}",
             "--set", "encoder.dropout=0.2", "--set", "data.split={kind: utterance, val_fraction: 0.25}",
             "--set", "train.validate_every=10", "--set", "train.best_metric=val_accuracy"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref = subprocess.Popen(_python_m_train("fit", "--run-dir", str(reference), *args), cwd=REPO, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = subprocess.Popen(_python_m_train("fit", "--run-dir", str(killed), *args), cwd=REPO, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "state.pt").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    interrupted_at = torch.load(killed / "state.pt", weights_only=True)["progress"]["step"]
    assert 0 < interrupted_at < steps and not (killed / "model").exists()

    resumed = subprocess.run(_python_m_train("fit", "--resume", str(killed)), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=300)
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


def _parameters(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    model = SpeakerEncoder.from_pretrained(folder, device="cpu")
    return {k: v for k, v in model.named_parameters() if k.startswith(prefix)}


def test_init_from_a_checkpoint_fine_tunes_it(trained: Path, voices: Path, tmp_path: Path, capsys) -> None:
    """With a zero learning rate one step changes nothing: the run starts exactly from the checkpoint,
    head included when the classes are the same; other speakers get a fresh head."""
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


# ----------------------------------------------------------------------------- evaluate
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


def test_evaluate_reports_eer_and_min_dcf(trained: Path, voices: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    trials = _trial_list(voices)
    output = tmp_path / "results.json"
    assert main(["evaluate", "--checkpoint", str(trained), "--trials", str(trials), "--root", str(voices),
                 "--device", "cpu", "--output", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(output.read_text())
    assert printed["n_trials"] == 27
    assert {"eer", "eer_threshold", "min_dcf_0.01", "min_dcf_0.05"} <= printed.keys()
    assert 0.0 <= printed["eer"] < 0.2
    assert 0.0 <= printed["min_dcf_0.05"] <= printed["min_dcf_0.01"] <= 1.0
    assert -1.0 <= printed["eer_threshold"] <= 1.0


def test_evaluate_calibrate_stores_the_threshold_in_the_checkpoint(trained: Path, voices: Path,
                                                                   tmp_path: Path, capsys) -> None:
    checkpoint = tmp_path / "model"
    shutil.copytree(trained, checkpoint)
    assert SpeakerEncoder.from_pretrained(checkpoint, device="cpu").calibration is None
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--trials", str(_trial_list(voices)),
                 "--root", str(voices), "--device", "cpu", "--calibrate"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["calibration_written"] == str(checkpoint)
    stored = json.loads((checkpoint / "config.json").read_text())["calibration"]
    assert stored["threshold"] == pytest.approx(results["eer_threshold"])
    encoder = SpeakerEncoder.from_pretrained(checkpoint, device="cpu")
    assert encoder.threshold == pytest.approx(results["eer_threshold"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_evaluate_identify_reports_top1_and_top5(trained: Path, voices: Path, capsys) -> None:
    assert main(["evaluate", "--checkpoint", str(trained), "--identify", str(voices), "--enroll-per-speaker", "2",
                 "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)["identification"]
    assert result["speakers"] == 3 and result["test_clips"] == 12 and result["enrolment_clips_per_speaker"] == 2
    assert result["top1"] == 1.0 and result["top5"] == 1.0


# ----------------------------------------------------------------------------- augmentation
@pytest.fixture
def two_voices(tmp_path: Path) -> tuple[list, AudioStore]:
    write_voices(tmp_path, ["alice", "bob"], clips=3)
    utts = folder_source(tmp_path)
    return utts, AudioStore(utts, preload=True)


def test_augmenter_output_has_the_crop_length_and_stays_in_range(two_voices: tuple) -> None:
    utts, store = two_voices
    config = AugmentConfig(prob=1.0, coloured_noise=True, babble=True, simulated_rirs=3, reverb_prob=0.7,
                           speeds=[0.9, 1.1], speed_prob=0.5, gain_db=12.0)
    crop = 8000
    augmenter = Augmenter(config, SR, babble_source(store, utts, int(crop * 1.2)), seed=0)
    assert len(augmenter.rirs) == 3
    speeds = set()
    for i in range(40):
        rng = np.random.default_rng(i)
        clean = random_crop(store.get(str(utts[i % len(utts)].file)), int(np.ceil(crop * augmenter.length_factor)),
                            rng)
        wav, speed = augmenter(clean, crop, rng)
        speeds.add(speed)
        assert wav.shape == (crop,) and wav.dtype == np.float32
        assert np.isfinite(wav).all() and 0 < np.max(np.abs(wav)) <= 1.0
        assert not np.allclose(wav, clean[:crop])
    assert speeds == {0, 1, 2}


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 13.0])
def test_mix_at_snr_hits_the_requested_snr(snr_db: float) -> None:
    rng = np.random.default_rng(0)
    speech = voice("bob", 1.0, rng)
    noise = 3.0 * rng.standard_normal(SR).astype(np.float32)
    added = mix_at_snr(speech, noise, snr_db) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.01)


def test_telephone_keeps_the_band_below_4_khz_and_mu_law_costs_about_38_db() -> None:
    """White noise through the phone line: the length stays, nothing above 4.2 kHz survives, the band
    below 3.5 kHz passes whole, and 8-bit mu-law adds noise at G.711's ~38 dB SNR (hand value)."""
    x = (0.3 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    freqs = np.fft.rfftfreq(SR, 1 / SR)
    power_in = np.abs(np.fft.rfft(x)) ** 2
    line = telephone(x, SR, mu_law=False)
    coded = telephone(x, SR, mu_law=True)
    for y in (line, coded):
        assert y.shape == x.shape and y.dtype == np.float32
        power = np.abs(np.fft.rfft(y)) ** 2
        assert power[freqs > 4200].sum() < 1e-4 * power.sum()
        assert power[freqs < 3500].sum() / power_in[freqs < 3500].sum() == pytest.approx(1.0, abs=0.01)
    snr = 10 * np.log10(np.mean(line ** 2) / np.mean((line - coded) ** 2))
    assert 35 < snr < 41


def test_speeds_as_speakers_offset_labels_by_speaker_count_per_speed(two_voices: tuple) -> None:
    utts, store = two_voices
    labels = label_map(utts)
    config = AugmentConfig(prob=0.0, coloured_noise=False, babble=False, speeds=[0.9, 1.1], speed_prob=0.7,
                           speeds_as_speakers=True, gain_db=0.0)
    augmenter = Augmenter(config, SR)
    dataset = CropDataset(utts, labels, store, 0.5, augmenter, repeats=[5] * len(utts), speeds_as_speakers=True,
                          seed=5)
    seen = set()
    for i in range(len(dataset)):
        utt = dataset.utts[dataset.index[i]]
        rng = np.random.default_rng((5, 0, i))
        clean = random_crop(store.get(str(utt.file)), int(np.ceil(dataset.crop_samples * 1.1)), rng)
        _, speed = augmenter(clean, dataset.crop_samples, rng)
        wav, label = dataset[i]
        assert label == labels[utt.speaker] + speed * len(labels)
        assert wav.shape == (dataset.crop_samples,)
        seen.add(speed)
    assert seen == {0, 1, 2}


def test_speeds_as_speakers_add_one_class_per_speaker_and_speed(tmp_path: Path) -> None:
    write_voices(tmp_path / "data", ["alice", "bob"], clips=2)
    cfg = load_config(None, [f"data.sources=[{{type: folder, root: {tmp_path / 'data'}}}]",
                             "augment={speeds: [0.9, 1.1], speeds_as_speakers: true, babble: false}"])
    prepared = prepare_data(cfg, tmp_path, Dist())
    assert prepared.classes == ["alice", "bob", "alice@0.9", "bob@0.9", "alice@1.1", "bob@1.1"]


def test_spec_augment_masks_only_in_training_mode() -> None:
    specaug = SpecAugment(freq_mask=10, time_mask=20, prob=1.0)
    feats = torch.randn(4, 100, 40) + 5.0
    torch.manual_seed(0)
    masked = specaug(feats)
    assert masked.shape == feats.shape
    assert (masked == 0).any() and ((masked == feats) | (masked == 0)).all()
    specaug.eval()
    assert torch.equal(specaug(feats), feats)


# ----------------------------------------------------------------------------- config
def test_set_overrides_are_parsed_as_yaml() -> None:
    cfg = load_config(None, ["train.steps=500", "augment.speeds=[0.9, 1.1]", "data.preload=false",
                             "encoder.channels=256", "schedule.min_lr_ratio=2e-2", "data.split.kind=speaker",
                             "new.section.key=text"])
    assert cfg["train"]["steps"] == 500 and cfg["augment"]["speeds"] == [0.9, 1.1]
    assert cfg["data"]["preload"] is False and cfg["encoder"] == {"name": "ecapa_tdnn", "channels": 256}
    assert cfg["schedule"]["min_lr_ratio"] == 0.02 and cfg["data"]["split"]["kind"] == "speaker"
    assert cfg["data"]["split"]["val_fraction"] == 0.0 and cfg["new"] == {"section": {"key": "text"}}
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_override(cfg, "train.steps")


def test_a_file_naming_another_component_does_not_inherit_the_defaults_options(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"encoder": {"name": "conformer", "dim": 32}, "head": {"margin": 0.3},
                                    "optim": {"name": "sgd", "lr": 0.1}}))
    cfg = load_config(path, [])
    assert cfg["encoder"] == {"name": "conformer", "dim": 32}
    assert cfg["head"] == {"name": "aam_softmax", "scale": 30.0, "margin": 0.3}
    assert cfg["optim"] == {"name": "sgd", "lr": 0.1}


@pytest.mark.parametrize(("override", "message"), [
    ("encoder.name=resnet", "Unknown encoder 'resnet'; choose one of \\['conformer', 'ecapa_tdnn', 'transformer'\\]"),
    ("head.name=arcface", "Unknown head 'arcface'; choose one of \\['aam_softmax', 'am_softmax', 'softmax'\\]"),
    ("schedule.name=linear", "Unknown schedule 'linear'; choose one of \\['cosine', 'step'"),
    ("optim.name=adam", "Unknown optimizer 'adam'"),
    ("encoder.name=conformer", "encoder option\\(s\\) \\['channels'\\] do not apply to conformer"),
    ("frontend.n_mel=40", "frontend: .*n_mel"),
])
def test_unknown_names_are_a_clear_value_error(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_cli_reports_config_errors_in_one_line_before_reading_data(tmp_path: Path, capsys) -> None:
    args = fit_args(tmp_path / "run", [{"type": "folder", "root": str(tmp_path / "nowhere")}])
    assert main(args + ["--set", "schedule.name=linear"]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown schedule 'linear'")


# ----------------------------------------------------------------------------- HW4 features
HW4_SPEAKERS = ["id10003", "id10001", "id10002"]


def _hw4_features(speaker: int, frames: int, rng: np.random.Generator) -> torch.Tensor:
    """Log-mel-like frames around a per-speaker mean spectrum."""
    centre = np.linspace(-4, 4, N_MELS) * (speaker - 1) - 8.0
    return torch.from_numpy((centre + rng.standard_normal((frames, N_MELS))).astype(np.float32))


@pytest.fixture
def hw4(tmp_path: Path) -> Path:
    """A HW4 folder: 3 speakers x 6 utterances of 80-300 frames, 6 test utterances."""
    rng = np.random.default_rng(0)
    root = tmp_path / "hw4"
    root.mkdir()

    def save(name: str, speaker: int, frames: int) -> dict:
        torch.save(_hw4_features(speaker, frames, rng), root / name)
        return {"feature_path": name, "mel_len": frames}

    speakers = {s: [save(f"uttr-{s}-{i}.pt", k, int(rng.integers(80, 300))) for i in range(6)]
                for k, s in enumerate(HW4_SPEAKERS)}
    tests = [save(f"uttr-test{i}.pt", i % 3, int(rng.integers(60, 400))) for i in range(6)]
    (root / "mapping.json").write_text(json.dumps({"speaker2id": {s: i for i, s in enumerate(HW4_SPEAKERS)}}))
    (root / "metadata.json").write_text(json.dumps({"n_mels": N_MELS, "speakers": speakers}))
    (root / "testdata.json").write_text(json.dumps({"n_mels": N_MELS, "utterances": tests}))
    return root


def test_fit_on_hw4_features_then_predict_writes_a_submission(hw4: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = fit_args(run_dir, [{"type": "hw4", "root": str(hw4)}], encoder="transformer", head="softmax",
                    steps=24, validate_every=12, best_metric="val_accuracy")
    args[args.index("frontend={\"n_mels\": 40}")] = "frontend={}"
    args += ["--set", "data.split={kind: utterance, val_fraction: 0.34}",
             "--set", "augment={spec_freq_mask: 4, spec_time_mask: 5, spec_prob: 0.5, speeds: [0.9, 1.1]}"]
    assert main(args) == 0
    log_text = (run_dir / "train.log").read_text()
    assert "ignoring the waveform augmentation settings ['speeds']" in log_text
    assert "50-frame crops" in log_text
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["classes"] == HW4_SPEAKERS
    assert config["frontend"]["n_mels"] == N_MELS and config["frontend"]["trim_silence"] is True

    encoder = SpeakerEncoder.from_pretrained(run_dir / "model", device="cpu")
    with open(run_dir / "split.csv", newline="") as f:
        val = [r for r in csv.DictReader(f) if r["split"] == "val"]
    assert len(val) == 6
    hits = []
    for row in val:
        feats = load_features(hw4 / row["path"]).unsqueeze(0)
        logits = batch_logits(encoder, feats, torch.ones(feats.shape[:2], dtype=torch.bool))
        hits.append(HW4_SPEAKERS[int(logits.argmax())] == row["speaker"])
    logged = [r["val_accuracy"] for r in metric_rows(run_dir) if "val_accuracy" in r]
    assert len(logged) == 2 and logged[-1] == pytest.approx(np.mean(hits)) and logged[-1] == 1.0

    output = tmp_path / "submission.csv"
    assert main(["predict", "--checkpoint", str(run_dir / "model"), "--data", str(hw4), "--output", str(output),
                 "--device", "cpu"]) == 0
    with open(output, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"]
    assert rows[1:] == [[f"uttr-test{i}.pt", HW4_SPEAKERS[i % 3]] for i in range(6)]


def test_hw4_source_refuses_an_audio_front_end(hw4: Path, tmp_path: Path, capsys) -> None:
    args = fit_args(tmp_path / "run", [{"type": "hw4", "root": str(hw4)}])
    args += ["--set", "frontend={preset: default}"]
    assert main(args) == 2
    assert "HW4 features have 40 mel bands but frontend.n_mels is 80" in capsys.readouterr().err
