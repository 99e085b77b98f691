"""Smoke tests of benchmarks/: every script runs with ``--quick`` and prints its header first.

They check that the scripts still run against the current code (a renamed argument or API breaks
them silently otherwise), not the numbers, which mean nothing on tiny inputs. Each script runs in
a subprocess, as a user runs it, with one torch thread so that the whole file stays short on a
two-core machine. The checkpoint is untrained, of the default architecture (ECAPA-TDNN, C=256),
so no training run is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / "shared" / "data"
HAS_DATA = (DATA / "librispeech-251" / "utterances.csv").is_file() and (
    DATA / "speechocean762" / "utterances.csv"
).is_file()
needs_data = pytest.mark.skipif(not HAS_DATA, reason="../shared/data not found: real-audio benchmarks skipped")
TIMEOUT = 150


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    """An untrained ECAPA-TDNN of the shipped checkpoint's size: the scripts' numbers mean nothing."""
    return tiny_checkpoint(256, encoder={"embed_dim": 192})


def run(script: str, *args: str) -> str:
    """``python -m benchmarks.<script> --quick ARGS``: asserts exit 0 and the header; returns stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", "--quick", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    assert lines and lines[0].startswith(f"# benchmark: {script} | cpu: "), proc.stdout[:500]
    return proc.stdout


def test_embed_speed_cpu(checkpoint: Path) -> None:
    out = run("embed_speed_cpu", "--checkpoint", str(checkpoint), "--threads", "1")
    if HAS_DATA:
        assert "the app's path) / resemblyzer" in out and "| ours forward " in out and "| ours embed torch " in out
    else:
        assert "SKIPPED" in out


def test_embed_speed_gpu_without_cuda_says_so() -> None:
    import torch

    out = run("embed_speed_gpu")
    if torch.cuda.is_available():
        assert "x real time" in out
    else:
        assert "no CUDA device" in out


def test_embed_speed_gpu_body_runs_on_cpu(checkpoint: Path) -> None:
    out = run("embed_speed_gpu", "--device", "cpu", "--checkpoint", str(checkpoint))
    assert "| ours ecapa 512 " in out and "Throughput ratios" in out


@needs_data
def test_accuracy(checkpoint: Path, tmp_path: Path) -> None:
    split = tmp_path / "split.csv"
    split.write_text(
        "speaker,path,split,root\n"
        + "".join(f"{s},{s}/x.opus,holdout,.\n" for s in ("ls103", "ls1034", "ls1040", "ls1069"))
    )
    out = run("accuracy", "--checkpoint", str(checkpoint), "--max-trials", "20", "--ood", "--split", str(split))
    assert "trials_test.txt[:20]" in out and "librispeech 8 kHz round trip" in out


@needs_data
def test_generalisation(checkpoint: Path, tmp_path: Path) -> None:
    """Every condition of the suite for the checkpoint and Resemblyzer, FAR/FRR at a threshold, JSON rows."""
    import json

    rows = tmp_path / "rows.json"
    out = run("generalisation", "--checkpoint", str(checkpoint), "--max-trials", "20", "--output", str(rows))
    conditions = ["speechocean762", "librispeech 16 kHz", "librispeech 8 kHz", "librispeech 1-2 s"]
    conditions += ["librispeech 5 x 1 s words", "librispeech noise + reverb"]
    written = json.loads(rows.read_text())
    assert {(r["condition"], r["model"]) for r in written} == {
        (c, m) for c in conditions for m in (str(checkpoint), "resemblyzer")
    }
    assert all(0.0 <= r["far"] <= 1.0 and 0.0 <= r["frr"] <= 1.0 for r in written)
    assert "EER ratios" in out


@needs_data
def test_diarization(checkpoint: Path) -> None:
    out = run("diarization", "--checkpoint", str(checkpoint), "--threads", "1")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    assert ["noise 5-15 dB", "enrolled (IER, names)", "2"] in [r[:3] for r in rows]
    assert ["diarize", "30"] in [r[:2] for r in rows]


@needs_data
def test_verdict(trained_checkpoint: Path) -> None:
    """The decision benchmark needs a calibrated checkpoint: the trained one."""
    out = run("verdict", "--checkpoint", str(trained_checkpoint))
    for table in ("Verify: the uncertain band", "Adapted on the dev half", "Identify: enrolled people found"):
        assert table in out
    assert "| speechocean762 | 20 |" in out and "| speechcommands |" in out


@needs_data
def test_app_latency(checkpoint: Path) -> None:
    out = run("app_latency", "--checkpoint", str(checkpoint))
    assert "| verify " in out and "| identify " in out


def test_train_throughput() -> None:
    out = run("train_throughput", "--threads", "1", "--workers", "1")
    assert "| ecapa_tdnn 512 " in out
    assert ("loader + step" in out) if HAS_DATA else ("SKIPPED" in out)
