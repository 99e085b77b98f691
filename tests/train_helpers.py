"""What several train test files share: tiny models for ``python -m train fit`` on generated voices,
reading a run folder, and undoing the logging set-up of an in-process run."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from conftest import write_voices

from train.__main__ import main

# The augmentation setting of the command that trained the shipped checkpoint, before its recipe had
# a file of its own: the augmented recipe file plus --set of this (see checkpoints/ecapa-speechocean/EXPERIMENTS.md).
SHIPPED_CHECKPOINT_AUGMENT = (
    "augment={prob: 0.0, coloured_noise: false, babble: false, gain_db: 0.0, "
    "spec_freq_mask: 0, spec_time_mask: 0, spec_prob: 0.0}"
)
TINY_ENCODERS = {
    "ecapa_tdnn": {"name": "ecapa_tdnn", "channels": 16, "embed_dim": 16, "scale": 4, "attention_bottleneck": 8},
    "conformer": {
        "name": "conformer",
        "dim": 32,
        "heads": 2,
        "num_layers": 1,
        "kernel_size": 7,
        "ffn_mult": 2,
        "embed_dim": 16,
    },
    "transformer": {"name": "transformer", "d_model": 32, "nhead": 2, "dim_feedforward": 64, "embed_dim": 16},
    "resnet34": {"name": "resnet34", "width": 4, "embed_dim": 16, "attention_bottleneck": 8},
    "res2net50": {"name": "res2net50", "width": 4, "embed_dim": 16, "attention_bottleneck": 8},
}
TINY_HEADS = {
    "softmax": {"name": "softmax"},
    "am_softmax": {"name": "am_softmax", "scale": 30.0, "margin": 0.2},
    "aam_softmax": {"name": "aam_softmax", "scale": 30.0, "margin": 0.2},
}


def fit_settings(
    sources: list[dict], encoder: str = "conformer", head: str = "aam_softmax", steps: int = 24, **train: object
) -> list[str]:
    """``--set`` arguments for a tiny model on 0.5 s crops of ``sources``; ``train`` overrides the loop settings."""
    loop = {
        "steps": steps,
        "batch_size": 8,
        "num_workers": 0,
        "log_every": 1,
        "validate_every": 1000,
        "checkpoint_every": 1000,
        **train,
    }
    settings = {
        "data.sources": sources,
        "data.crop_seconds": 0.5,
        "frontend": {"n_mels": 40},
        "encoder": TINY_ENCODERS[encoder],
        "head": TINY_HEADS[head],
        "optim": {"name": "adamw", "lr": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": 0},
        **{f"train.{k}": v for k, v in loop.items()},
    }
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def fit_args(run_dir: Path, sources: list[dict], *args: str, **kwargs: object) -> list[str]:
    """``python -m train fit`` arguments: a run folder and ``fit_settings``."""
    return ["fit", "--run-dir", str(run_dir), *fit_settings(sources, *args, **kwargs)]


class TinyRun(NamedTuple):
    voices: Path  # conftest's three voices, six one-second clips each, a folder per speaker
    model: Path  # a tiny checkpoint trained on them through the CLI; its run folder is its parent


def train_on_voices(folder: Path) -> TinyRun:
    """Write the voices and train a tiny model on them for 30 steps, in-process."""
    voices, run_dir = folder / "voices", folder / "run"
    write_voices(voices, seed=1)
    with logging_restored():
        assert main(fit_args(run_dir, [{"type": "folder", "root": str(voices)}], steps=30)) == 0
    return TinyRun(voices, run_dir / "model")


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@contextmanager
def logging_restored() -> Iterator[None]:
    """``fit`` points the root logger at the run's train.log; put the test's handlers and level back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
