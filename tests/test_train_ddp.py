"""``torchrun --nproc_per_node 2 -m train fit`` with gloo on CPU: two real processes train together,
and only rank 0 writes (one checkpoint folder, one metrics.jsonl, one TensorBoard log).

Kept in its own file so it can be selected (or left out) as a whole: ``pytest tests/test_train_ddp.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.encoder import SpeakerEncoder

REPO = Path(__file__).resolve().parent.parent


def coloured_clips(root: Path, clips: int) -> None:
    """Two "speakers": low-passed and high-passed noise, one second per clip."""
    rng = np.random.default_rng(0)
    freqs = np.fft.rfftfreq(SAMPLE_RATE, 1 / SAMPLE_RATE)
    shapes = {"low": 1.0 / (1.0 + (freqs / 500.0) ** 4), "high": 1.0 / (1.0 + (2000.0 / np.maximum(freqs, 1)) ** 4)}
    for speaker, shape in shapes.items():
        (root / speaker).mkdir(parents=True)
        for i in range(clips):
            wav = np.fft.irfft(np.fft.rfft(rng.standard_normal(SAMPLE_RATE)) * shape, SAMPLE_RATE)
            sf.write(root / speaker / f"{i}.flac", (0.5 * wav / np.max(np.abs(wav))).astype(np.float32), SAMPLE_RATE)


def test_ddp_on_two_cpu_processes_writes_one_checkpoint_and_one_log(tmp_path: Path) -> None:
    coloured_clips(tmp_path / "data", clips=5)
    run_dir = tmp_path / "run"
    settings = {
        "data.sources": [{"type": "folder", "root": str(tmp_path / "data")}],
        "data.split": {"kind": "utterance", "val_fraction": 0.2},
        "data.crop_seconds": 0.5,
        "frontend": {"n_mels": 40},
        "encoder": {"name": "ecapa_tdnn", "channels": 16, "embed_dim": 16, "scale": 4},
        "head": {"name": "aam_softmax"},
        "train.steps": 3,
        "train.batch_size": 2,
        "train.num_workers": 0,
        "train.log_every": 1,
        "train.validate_every": 2,
        "train.checkpoint_every": 2,
        "train.best_metric": "val_accuracy",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "train",
        "fit",
        "--run-dir",
        str(run_dir),
    ]
    for key, value in settings.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    done = subprocess.run(
        command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best",
        "config.yaml",
        "curves.png",
        "metrics.jsonl",
        "model",
        "split.csv",
        "state.pt",
        "tensorboard",
        "train.log",
    ]
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "val_accuracy" in r] == [2, 3]
    # 8 training clips in batches of 2 per process: 2 steps per epoch with two processes (4 with one).
    progress = torch.load(run_dir / "state.pt", weights_only=True)["progress"]
    assert (progress["step"], progress["epoch"], progress["batch"]) == (3, 1, 1)
    assert SpeakerEncoder.from_pretrained(run_dir / "model", device="cpu").classes == ["high", "low"]
