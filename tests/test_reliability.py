"""Reliability and security: untrusted files, paths that try to leave the data root, SIGKILL during
training and during gallery writes, size and length limits, and the app under concurrent load.

What the other test files already cover is not repeated here (one truncated gallery, a list-based
pickle trap in a gallery, ``../`` in three list types, one SIGKILL/resume, one over-long WAV);
this file goes further: every truncation length, random damage, lying headers, pickle traps in
every file format the project reads, symlinks and absolute paths in every list format, repeated
kills at chosen points of a checkpoint write, and a running app with concurrent sessions.

Each subprocess test is bounded (timeouts on every wait); the whole file runs in about 80 s on two
idle cores (with the trained checkpoint; the load test uses a tiny untrained one without it).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import voiced, write_voices
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import speakerdemo.audio as audio_module
from benchmarks.load_test import wav_header
from speakerdemo.app_state import Models, SharedGallery
from speakerdemo.audio import SAMPLE_RATE, AudioError, load_audio
from speakerdemo.checkpoint import CheckpointError
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.gallery import Gallery, GalleryError
from speakerdemo.ui import Demo, Session
from train.checkpoints import StateError, restore_state
from train.data import (
    AudioStore,
    DataError,
    folder_source,
    manifest_source,
    read_trials,
    safe_path,
    voxceleb_list_source,
)
from train.hw4 import load_hw4

REPO = Path(__file__).resolve().parent.parent
SR = SAMPLE_RATE
PYTHON = sys.executable


def subprocess_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO),
        **extra,
    }


@pytest.fixture(scope="module")
def demo(app_checkpoint: Path) -> Demo:
    return Demo(Models(str(app_checkpoint), {}, device="cpu"))


# ============================================================================ untrusted files
class PickleTrap:
    """Unpickling this object creates the directory ``marker``: proof that a loader executed a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.marker,))


@pytest.fixture
def trap(tmp_path: Path) -> tuple[PickleTrap, Path]:
    marker = tmp_path / "UNPICKLED"
    obj = PickleTrap(marker)
    pickle.loads(pickle.dumps({"x": obj}))  # the trap works ...
    assert marker.is_dir()
    marker.rmdir()
    buffer = io.BytesIO()
    torch.save({"x": obj}, buffer)  # ... in torch's zip format too
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert marker.is_dir()
    marker.rmdir()
    return obj, marker


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def small_gallery(dim: int = 8) -> Gallery:
    rng = np.random.default_rng(0)
    g = Gallery()
    g.enroll("alice", rng.standard_normal((2, dim)))
    g.enroll("bob", rng.standard_normal((3, dim)))
    return g


def test_gallery_truncated_at_every_length_is_refused(tmp_path: Path) -> None:
    data = small_gallery().to_bytes()
    for n in range(len(data)):
        with pytest.raises(GalleryError, match="Not a valid safetensors gallery file"):
            Gallery.from_bytes(data[:n])
    path = tmp_path / "g.safetensors"
    for n in (0, 7, 8, 100, len(data) - 1):
        path.write_bytes(data[:n])
        with pytest.raises(GalleryError):
            Gallery.load(path)
    assert Gallery.from_bytes(data).clip_counts() == {"alice": 2, "bob": 3}


def _safetensors_with_header(header: dict, payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ({"clips": {"dtype": "F32", "shape": [2**40, 8], "data_offsets": [0, 64]}}, bytes(64)),
        ({"clips": {"dtype": "F32", "shape": [2, 8], "data_offsets": [0, 2**40]}}, bytes(64)),
        ({"clips": {"dtype": "F32", "shape": [2, 8], "data_offsets": [32, 0]}}, bytes(64)),
        ({"clips": {"dtype": "F32", "shape": [-2, 8], "data_offsets": [0, 64]}}, bytes(64)),
        (
            {
                "clips": {"dtype": "F32", "shape": [2, 2, 4], "data_offsets": [0, 64]},
                "__metadata__": {
                    "speakerdemo_gallery": json.dumps({"version": 1, "dim": 8, "speakers": [{"name": "a", "clips": 2}]})
                },
            },
            bytes(64),
        ),
        (
            {
                "clips": {"dtype": "I32", "shape": [2, 8], "data_offsets": [0, 64]},
                "__metadata__": {
                    "speakerdemo_gallery": json.dumps({"version": 1, "dim": 8, "speakers": [{"name": "a", "clips": 2}]})
                },
            },
            bytes(64),
        ),
        ({"clips": {"dtype": "XX", "shape": [2, 8], "data_offsets": [0, 64]}}, bytes(64)),
    ],
    ids=["2^40-rows", "offsets-past-end", "offsets-reversed", "negative-shape", "3-D", "int32", "unknown-dtype"],
)
def test_gallery_headers_that_lie_about_shapes_are_refused(header: dict, payload: bytes) -> None:
    with pytest.raises(GalleryError):
        Gallery.from_bytes(_safetensors_with_header(header, payload))


def test_gallery_header_length_prefix_of_exabytes_is_refused() -> None:
    data = small_gallery().to_bytes()
    for length in (2**63 - 1, 2**40, len(data)):
        with pytest.raises(GalleryError):
            Gallery.from_bytes(struct.pack("<Q", length) + data[8:])


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8))
def test_damaged_gallery_is_refused_or_loads_valid(flips: list[tuple[int, int]]) -> None:
    """Any damage is either caught (GalleryError) or leaves a gallery whose invariants hold."""
    data = bytearray(small_gallery().to_bytes())
    for at, value in flips:
        data[at % len(data)] ^= value
    try:
        g = Gallery.from_bytes(bytes(data))
    except GalleryError as err:
        assert str(err)
        return
    assert g.dim == 8
    for name in g.names():
        clips = g.clips(name)
        assert clips.shape[1] == 8 and np.isfinite(clips).all()
        np.testing.assert_allclose(np.linalg.norm(clips, axis=1), 1.0, atol=1e-3)
        assert name == name.strip() and 0 < len(name) <= 64


def test_nothing_is_ever_unpickled(
    trap: tuple[PickleTrap, Path], tmp_path: Path, demo: Demo, tiny_checkpoint: Callable[..., Path]
) -> None:
    """A pickle (plain or torch's zip format) wherever the project reads a file: galleries (file,
    upload in the app, persistent gallery at start-up), checkpoints (weights, config, a stray
    pytorch_model.bin) and training states. Every one is refused with a message; the trap never fires."""
    obj, marker = trap
    payloads = {"pickle": pickle.dumps({"clips": obj, "speakers": ["a"]}), "torch": torch_bytes({"clips": obj})}

    for kind, payload in payloads.items():
        path = tmp_path / f"{kind}.safetensors"
        path.write_bytes(payload)
        with pytest.raises(GalleryError, match="Not a valid safetensors"):
            Gallery.load(path)
        with pytest.raises(gr.Error, match="Cannot load that gallery"):
            demo.load(Session(demo.models.default), str(path))
        with pytest.raises(GalleryError):
            SharedGallery(path)

    good = tiny_checkpoint()
    for kind, payload in payloads.items():
        weights = tmp_path / f"weights-{kind}"
        shutil.copytree(good, weights)
        (weights / "model.safetensors").write_bytes(payload)
        with pytest.raises(CheckpointError, match="not a readable safetensors file"):
            SpeakerEncoder.from_pretrained(weights, device="cpu")
        with pytest.raises(gr.Error, match="not a readable safetensors file"):
            Models(str(weights), {}, device="cpu")
        config = tmp_path / f"config-{kind}"
        shutil.copytree(good, config)
        (config / "config.json").write_bytes(payload)
        with pytest.raises(CheckpointError, match="does not describe a speakerdemo model"):
            SpeakerEncoder.from_pretrained(config, device="cpu")
    bin_only = tmp_path / "bin-only"
    shutil.copytree(good, bin_only)
    (bin_only / "model.safetensors").unlink()
    (bin_only / "pytorch_model.bin").write_bytes(payloads["torch"])
    with pytest.raises(CheckpointError, match="checkpoints must ship model.safetensors"):
        SpeakerEncoder.from_pretrained(bin_only, device="cpu")

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    state = tmp_path / "state.pt"
    for payload in (payloads["torch"], torch_bytes({"model": obj, "progress": {"step": 1}}), payloads["pickle"]):
        state.write_bytes(payload)
        with pytest.raises(StateError, match="not a readable training state"):
            restore_state(state, model, opt, sched, None)
    assert not marker.exists()


def test_damaged_checkpoints_are_refused_with_a_checkpoint_error(
    tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    """Truncated weights (inside the header and inside the data), a tensor of the wrong shape, an
    extra tensor, and config.json files that are not what they claim: one clear CheckpointError each."""
    good = tiny_checkpoint()
    weights = (good / "model.safetensors").read_bytes()
    config = json.loads((good / "config.json").read_text())
    folder = tmp_path / "bad"

    def refused(write: Callable[[Path], None], words: str) -> None:
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(good, folder)
        write(folder)
        with pytest.raises(CheckpointError, match=words):
            SpeakerEncoder.from_pretrained(folder, device="cpu")

    header_end = 8 + struct.unpack("<Q", weights[:8])[0]
    cuts = sorted(
        {
            0,
            1,
            7,
            8,
            9,
            header_end // 2,
            header_end - 1,
            header_end,
            header_end + 1,
            len(weights) - 1,
            *np.linspace(header_end, len(weights) - 1, 12).astype(int).tolist(),
        }
    )
    for cut in cuts:
        refused(
            lambda f, cut=cut: (f / "model.safetensors").write_bytes(weights[:cut]), "not a readable safetensors file"
        )

    from safetensors.torch import load_file, save_file

    state = load_file(good / "model.safetensors")
    name = next(k for k, v in state.items() if v.dim() == 3)
    misshapen = {**state, name: state[name].transpose(0, 2).contiguous()}
    refused(lambda f: save_file(misshapen, f / "model.safetensors"), "does not match its config.json")
    refused(
        lambda f: save_file({**state, "extra": torch.zeros(3)}, f / "model.safetensors"),
        "does not match its config.json",
    )
    for bad in (
        [1, 2, 3],
        "ecapa",
        {**config, "encoder": {"name": "os.system"}},
        {**config, "encoder": {"name": "ecapa_tdnn", "channels": -16}},
        {**config, "frontend": {"n_mels": "80"}},
        {**config, "calibration": {"threshold": 0.5}},
        {**config, "window_seconds": "long"},
        {**config, "head": {"name": "softmax"}},
    ):
        refused(lambda f, bad=bad: (f / "config.json").write_text(json.dumps(bad)), "config.json|classes")
    refused(lambda f: (f / "config.json").write_bytes(b"\xff\xfe{}"), "does not describe a speakerdemo model")


# ============================================================================ paths
SEGMENTS = [
    "..",
    ".",
    "a",
    "b",
    "",
    "~",
    "...",
    "%2e%2e",
    "..\\..",
    "link_out",
    "link_in",
    "loop",
    "evil.wav",
    "etc",
    "passwd",
    "\x00",
    " ",
    "a\nb",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``outside/secret.wav`` next to ``root/`` whose links point out (and in, and at themselves)."""
    base = tmp_path_factory.mktemp("paths")
    outside = base / "outside"
    outside.mkdir()
    sf.write(outside / "secret.wav", voiced(1.0), SR)
    root = base / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "spk").mkdir()
    sf.write(root / "spk" / "ok.wav", voiced(1.0, seed=1), SR)
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in").symlink_to(root / "a", target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    (root / "evil.wav").symlink_to(outside / "secret.wav")
    (root / "spk" / "evil.wav").symlink_to(outside / "secret.wav")
    (root / "spk_out").symlink_to(outside, target_is_directory=True)
    return root


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=8), absolute=st.booleans())
def test_no_path_string_leaves_the_data_root(data_root: Path, segments: list[str], absolute: bool) -> None:
    relative = ("/" if absolute else "") + "/".join(segments)
    try:
        path = safe_path(data_root, relative)
    except DataError as err:
        assert str(err)
        return
    root = data_root.resolve()
    assert path == root or root in path.parents
    assert path == path.resolve()  # no link left to follow out


@pytest.mark.parametrize(
    "entry",
    [
        "../outside/secret.wav",
        "../../etc/passwd",
        "/etc/passwd",
        "link_out/secret.wav",
        "evil.wav",
        "spk/evil.wav",
        "spk_out/secret.wav",
        "a/../../outside/secret.wav",
        "loop/x.wav",
        "spk/ok.wav\x00.txt",
    ],
)
def test_every_list_format_refuses_entries_that_leave_the_root(data_root: Path, tmp_path: Path, entry: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"speaker,path\nalice,spk/ok.wav\nmallory,{entry}\n")
    listing = tmp_path / "list.txt"
    listing.write_text(f"alice spk/ok.wav\nmallory {entry}\n")
    trials = tmp_path / "trials.txt"
    trials.write_text(f"1 spk/ok.wav spk/ok.wav\n0 spk/ok.wav {entry}\n")
    hw4 = tmp_path / "hw4"
    shutil.copytree(data_root, hw4, symlinks=True)
    (hw4 / "mapping.json").write_text(json.dumps({"speaker2id": {"mallory": 0}}))
    (hw4 / "metadata.json").write_text(
        json.dumps({"n_mels": 40, "speakers": {"mallory": [{"feature_path": entry, "mel_len": 10}]}})
    )
    readers = {
        "manifest": lambda: manifest_source(manifest, data_root),
        "voxceleb list": lambda: voxceleb_list_source(listing, data_root),
        "trial list": lambda: read_trials(trials, data_root),
        "hw4 metadata": lambda: load_hw4(hw4),
    }
    if " " in entry:  # the whitespace-separated lists cannot even hold it
        readers = {"manifest": readers["manifest"], "hw4 metadata": readers["hw4 metadata"]}
    for read in readers.values():
        with pytest.raises(DataError, match="outside the data root|cannot be resolved"):
            read()


def test_folder_source_never_reads_through_links_that_leave_the_root(data_root: Path) -> None:
    utts = folder_source(data_root)
    listed = {u.path for u in utts}
    assert "spk/ok.wav" in listed  # links are listed (rglob follows them) ...
    store = AudioStore(utts, preload=True)
    assert store.readable == {str(data_root.resolve() / "spk" / "ok.wav")}  # ... but never read
    for u in utts:
        if u.path != "spk/ok.wav":
            with pytest.raises(DataError):
                _ = u.file


# ============================================================================ crash safety: training
KILLER = r"""
import io, os, signal, sys
import speakerdemo.atomic as atomic
import train.checkpoints as checkpoints

MODE, AT = os.environ.get("KILL_MODE", ""), int(os.environ.get("KILL_AT", "0"))
saves = 0
real_atomic_write = checkpoints.atomic_write


def die(*args):
    os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path, write):
    # Counts this process' training-state saves; at save AT, dies at the chosen point of the write.
    global saves
    saves += 1
    if saves == AT and MODE == "mid-write":
        def half(f):
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            die()
        return real_atomic_write(path, half)
    if saves == AT and MODE == "before-rename":
        os.replace = die
    if saves == AT and MODE == "after-rename":
        atomic.fsync_dir = die
    return real_atomic_write(path, write)


checkpoints.atomic_write = atomic_write
from train.__main__ import main
sys.exit(main(sys.argv[1:]))
"""
STEPS, EVERY = 90, 3
# (how, KILL_AT): injected kills die inside the process at the AT-th state save since it started;
# "tmp" kills from outside as soon as a new temporary state file appears; "random" at a random
# moment after the process has saved a state.
KILL_PLAN = [
    ("random", 0),
    ("mid-write", 2),
    ("tmp", 0),
    ("before-rename", 2),
    ("after-rename", 1),
    ("random", 0),
    ("mid-write", 1),
]


def fit_args(run_dir: Path, data: Path) -> list[str]:
    settings_ = {
        "seed": 3,
        "data.sources": [{"type": "folder", "root": str(data), "repeats": 4}],
        "data.crop_seconds": 0.5,
        "data.split": {"kind": "utterance", "val_fraction": 0.25},
        "frontend": {"n_mels": 40},
        "encoder": {"name": "ecapa_tdnn", "channels": 16, "embed_dim": 16, "scale": 4, "attention_bottleneck": 8},
        "augment": {"spec_freq_mask": 4, "spec_time_mask": 5, "spec_prob": 0.5},
        "head": {"name": "aam_softmax", "scale": 30.0, "margin": 0.2},
        "optim": {"name": "adamw", "lr": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": 5},
        "train": {
            "steps": STEPS,
            "batch_size": 8,
            "num_workers": 0,
            "log_every": 1,
            "validate_every": 15,
            "checkpoint_every": EVERY,
            "best_metric": "val_accuracy",
        },
    }
    overrides = [a for k, v in settings_.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    return ["fit", "--run-dir", str(run_dir), *overrides]


def metric_rows(run_dir: Path) -> list[dict]:
    """The metrics log; a line torn by a kill (the resumed run drops it) ends the list."""
    rows = []
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def state_step(run_dir: Path) -> int | None:
    path = run_dir / "state.pt"
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["progress"]["step"]


def temp_states(run_dir: Path) -> set[str]:
    return {p for p in os.listdir(run_dir) if p.startswith(".state.pt.") and p.endswith(".tmp")}


def _wait(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float, poll: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if predicate():
            return True
        if poll:
            time.sleep(poll)
    return False


def test_training_resumes_exactly_after_repeated_sigkills(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Seven SIGKILLs, three of them inside a state write (half the bytes written, before the
    rename, after the rename but before the directory fsync) and one the moment a temporary state
    file appears: every time state.pt loads, holds the last complete checkpoint, and the resumed
    run picks up there. The finished run matches an uninterrupted one step for step."""
    data = tmp_path / "data"
    write_voices(data, sessions=False)
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    ref = subprocess.Popen(
        [PYTHON, "-m", "train", *fit_args(reference, data)],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rng = random.Random(int(os.environ.get("CRASH_SEED", "0")))
    plan = KILL_PLAN[: int(os.environ.get("CRASH_KILLS", len(KILL_PLAN)))]
    kills: list[str] = []
    leftovers = 0
    previous = 0
    proc = None
    try:
        for how, at in plan + [("finish", 0)]:
            args = fit_args(victim, data) if not victim.exists() else ["fit", "--resume", str(victim)]
            env = subprocess_env(KILL_MODE=how if at else "", KILL_AT=str(at))
            before = temp_states(victim) if victim.exists() else set()
            start_step = previous
            proc = subprocess.Popen(
                [PYTHON, "-c", KILLER, *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if how in ("random", "tmp"):
                if how == "random":  # wait for this process' first save, then a random moment more
                    seen = _wait(
                        lambda s=start_step: _safe(lambda: state_step(victim) not in (None, s)), proc, 240, poll=0.02
                    )
                    time.sleep(rng.uniform(0.0, 0.4))
                else:
                    seen = _wait(lambda: (victim / "config.yaml").exists(), proc, 240, poll=0.02) and _wait(
                        lambda b=before: bool(temp_states(victim) - b), proc, 240, poll=0.0002
                    )
                assert seen, f"{how}: no new state was written (exit {proc.poll()}): {_stderr(proc)}"
                proc.send_signal(signal.SIGKILL)
            try:
                _, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            if how == "finish":
                assert proc.returncode == 0, err[-3000:]
                break
            assert proc.returncode == -signal.SIGKILL, f"{how}: exit {proc.returncode}\n{err[-3000:]}"
            new_temps = temp_states(victim) - before
            leftovers += len(new_temps)
            step = state_step(victim)  # loads: a complete checkpoint, never a torn one
            assert step is not None and step % EVERY == 0 and step >= previous, (how, step, previous)
            logged = max((r["step"] for r in metric_rows(victim)), default=0)
            if how == "mid-write" or how == "before-rename":
                assert step == start_step + (at - 1) * EVERY, (how, step, start_step)
                assert new_temps, "the interrupted write left no temporary file"
            elif how == "after-rename":
                assert step == start_step + at * EVERY, (how, step, start_step)
            else:  # the last checkpoint before the kill: at most one save behind the metrics log
                assert logged - EVERY <= step <= logged or step == start_step, (how, step, logged)
            kills.append(f"{how}@{step}" + (" (temp file left)" if new_temps else ""))
            previous = step
        assert ref.wait(timeout=300) == 0
    finally:
        for p in (ref, proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    resumed_from = [
        line.split("resumed from step ")[1].split()[0]
        for line in (victim / "train.log").read_text().splitlines()
        if "resumed from step" in line
    ]
    assert [int(s) for s in resumed_from] == [int(k.split("@")[1].split()[0]) for k in kills]
    want, got = metric_rows(reference), metric_rows(victim)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    losses = [(a["loss"], b["loss"]) for a, b in zip(want, got) if "loss" in a]
    assert len(losses) == STEPS and max(abs(a - b) for a, b in losses) <= 1e-5
    assert [r.get("val_accuracy") for r in got] == [r.get("val_accuracy") for r in want]
    assert state_step(victim) == STEPS
    for name in ("model/model.safetensors", "best/model.safetensors"):
        assert (victim / name).read_bytes() == (reference / name).read_bytes(), name
    # A state damaged some other way (disk, copy) is refused in one line, not with a traceback.
    damaged = tmp_path / "damaged"
    shutil.copytree(victim, damaged)
    (damaged / "state.pt").write_bytes((victim / "state.pt").read_bytes()[:4096])
    out = subprocess.run(
        [PYTHON, "-m", "train", "fit", "--resume", str(damaged)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "is not a readable training state" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    with capsys.disabled():
        print(
            f"\n[crash] training: {len(kills)} SIGKILLs survived, resumed each time from the last complete "
            f"checkpoint: {', '.join(kills)}; {leftovers} interrupted temporary state file(s) left behind "
            f"and ignored; final losses/val accuracy/weights identical to the uninterrupted run"
        )
    assert len(kills) >= min(5, len(plan))


def _stderr(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        return "(still running)"
    return proc.stderr.read()[-3000:] if proc.stderr else ""


def _safe(predicate: Callable[[], bool]) -> bool:
    """A predicate that reads files another process is replacing: a race counts as 'not yet'."""
    try:
        return predicate()
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return False


# ============================================================================ crash safety: gallery
ZYGOTE = r"""
import os, sys
from pathlib import Path
import numpy as np
from speakerdemo.app_state import SharedGallery  # imported once; every writer is a fork of this process

path, dim, clips, keep = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def vectors(i):
    return np.random.default_rng(i).standard_normal((clips, dim))


for line in sys.stdin:
    command, *rest = line.split()
    if command == "fork":
        pid = os.fork()
        if pid == 0:
            try:
                shared = SharedGallery(path)
            except Exception as err:
                print("LOAD FAILED:", err, file=sys.stderr, flush=True)
                os._exit(3)
            names = shared.snapshot().names()
            n = int(names[-1][1:]) + 1 if names else 0
            while True:
                def change(g, n=n):
                    g.enroll(f"s{n}", vectors(n))
                    if len(g) > keep:
                        g.remove(g.names()[0])
                shared.update(change)
                n += 1
        print(pid, flush=True)
    elif command == "reap":
        print(os.waitpid(int(rest[0]), 0)[1], flush=True)
    else:
        break
"""
GALLERY_DIM, GALLERY_CLIPS, GALLERY_KEEP, GALLERY_KILLS = 192, 24, 40, 40


def expected_clips(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal((GALLERY_CLIPS, GALLERY_DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _identity(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def check_gallery_version(g: Gallery) -> int:
    """A gallery some writer fully wrote: consecutive speakers s<a>..s<b>, each with its own clips."""
    names = g.names()
    assert names, "empty gallery"
    index = [int(n[1:]) for n in names]
    assert index == list(range(index[0], index[0] + len(index)))
    assert len(index) == min(index[-1] + 1, GALLERY_KEEP)
    for i, name in zip(index, names):
        np.testing.assert_allclose(g.clips(name), expected_clips(i), atol=1e-6)
    return index[-1]


def test_persistent_gallery_is_old_or_new_after_sigkill_mid_write(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Forty processes looping SharedGallery updates (each write ~1 MB) are SIGKILLed at random
    moments; after each kill the file loads and is one complete version, never older than the
    one before the kill. Temporary files left behind show how many kills landed inside a write."""
    path = tmp_path / "shared.safetensors"
    zygote = subprocess.Popen(
        [PYTHON, "-c", ZYGOTE, str(path), str(GALLERY_DIM), str(GALLERY_CLIPS), str(GALLERY_KEEP)],
        cwd=REPO,
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rng = random.Random(0)
    mid_write = versions = 0
    last = -1
    try:
        for _ in range(GALLERY_KILLS):
            zygote.stdin.write("fork\n")
            zygote.stdin.flush()
            line = zygote.stdout.readline()
            assert line.strip().isdigit(), zygote.stderr.read() if zygote.poll() is not None else line
            pid = int(line)
            version = _identity(path)
            deadline = time.monotonic() + 5  # until the writer has replaced the file once (or 5 s)
            while _identity(path) == version and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.04))
            os.kill(pid, signal.SIGKILL)
            zygote.stdin.write(f"reap {pid}\n")
            zygote.stdin.flush()
            status = int(zygote.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"the writer did not run until killed (status {status}): a gallery it could not load?"
            )
            newest = check_gallery_version(Gallery.load(path))
            assert newest >= last
            versions += newest - last
            last = newest
            temps = list(tmp_path.glob(".shared.safetensors.*.tmp"))
            mid_write += len(temps)
            for temp in temps:
                temp.unlink()
    finally:
        if zygote.poll() is None:
            zygote.stdin.close()
            zygote.wait(timeout=30)
    with capsys.disabled():
        print(
            f"\n[crash] persistent gallery: {GALLERY_KILLS} SIGKILLs, {mid_write} of them inside a write; "
            f"{versions} versions written; the file loaded as one complete version every time"
        )
    assert mid_write > 0, "no kill landed inside a write: the test proved nothing"


# ============================================================================ limits
def _sparse_wav(path: Path, total_bytes: int, sample_rate: int = SR) -> Path:
    """A 16-bit mono WAV header declaring ``total_bytes``, then a hole (no disk space used)."""
    header = wav_header(total_bytes, sample_rate)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(total_bytes)
    return path


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any full decode fail the test: only header reads (sf.info) are allowed."""
    calls: list[str] = []

    def forbidden(*args: Any, **kwargs: Any) -> None:
        calls.append("decode")
        raise AssertionError("the file was decoded")

    monkeypatch.setattr(audio_module.sf, "read", forbidden)
    monkeypatch.setattr(audio_module.librosa, "load", forbidden)
    return calls


def test_200_mb_upload_is_refused_from_its_size_alone(
    tmp_path: Path, demo: Demo, no_decoding: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    big = _sparse_wav(tmp_path / "big.wav", 200 * 2**20)
    monkeypatch.setattr(audio_module.sf, "info", lambda *a, **k: pytest.fail("the header was read"))
    start = time.perf_counter()
    with pytest.raises(AudioError, match="'big.wav' is 200.0 MB; the limit is 50 MB"):
        load_audio(big)
    with pytest.raises(gr.Error, match="200.0 MB; the limit is 50 MB"):
        demo.inspect(Session(demo.models.default), str(big))
    with pytest.raises(gr.Error, match="200.0 MB"):
        demo.verify(Session(demo.models.default), (SR, voiced(2.0)), str(big), 0.5)
    gallery = tmp_path / "big.safetensors"
    with open(gallery, "wb") as f:
        f.truncate(200 * 2**20)
    with pytest.raises(GalleryError, match="the limit is"):
        Gallery.load(gallery)
    assert time.perf_counter() - start < 1.0 and no_decoding == []


@pytest.mark.parametrize("kind", ["wav", "flac", "ogg-vorbis", "ogg-opus", "mp3"])
def test_over_long_clip_is_refused_from_its_header_in_every_container(
    kind: str, tmp_path: Path, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 60 s by its header: refused before decoding, as a file path (upload) and as bytes."""
    if kind == "wav":  # 45 MB, under the size limit, 24 minutes by its header
        path = _sparse_wav(tmp_path / "long.wav", 45 * 2**20)
        words = r"The clip is 1474\.6 s long; the limit is 60 s\."
    else:
        fmt, subtype, rate = {
            "flac": ("FLAC", "PCM_16", 16000),
            "ogg-vorbis": ("OGG", "VORBIS", 16000),
            "ogg-opus": ("OGG", "OPUS", 48000),
            "mp3": ("MP3", "MPEG_LAYER_III", 16000),
        }[kind]
        path = tmp_path / f"long.{fmt.lower()}"
        sf.write(path, np.tile(voiced(1.0, sample_rate=rate), 75), rate, format=fmt, subtype=subtype)
        words = r"The clip is 75\.\d s long; the limit is 60 s\."
    data = path.read_bytes()
    calls: list[str] = []
    monkeypatch.setattr(audio_module.sf, "read", lambda *a, **k: calls.append("read") or pytest.fail("decoded"))
    start = time.perf_counter()
    for source in (path, data):
        with pytest.raises(AudioError, match=words):
            load_audio(source)
    with pytest.raises(gr.Error, match=words):
        demo.inspect(Session(demo.models.default), str(path))
    assert calls == [] and time.perf_counter() - start < 2.0


# ============================================================================ load (CI variant)
def test_app_serves_concurrent_sessions_without_failures_or_leaks(
    app_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """8 gradio_client sessions for 20 s against app.py on loopback (benchmarks/load_test.py runs
    the long version): no failed request but the deliberately bad ones, which are refused with the
    app's message; no session ever sees another's speaker; the oversize upload is refused (413 from
    the server itself); memory grows by less than 96 MiB over the second half of the run (20 s
    is still partly warm-up, so this is a coarse bound; the 2-minute benchmark holds the second
    minute to 64 MiB)."""
    from benchmarks.load_test import print_result, run

    clients, seconds = int(os.environ.get("LOAD_CLIENTS", "8")), float(os.environ.get("LOAD_SECONDS", "20"))
    result = run(app_checkpoint, clients, seconds, tmp_path, REPO.parent / "shared" / "data")
    with capsys.disabled():
        print(f"\n[load] {clients} clients x {seconds:g} s:")
        print_result(result)
    s = result.stats
    assert s.failures == [] and s.leaks == []
    assert s.refused_as_expected > 0 and s.sent > clients * 2
    assert "ACCEPTED" not in result.oversize and "HTTP 413" in result.oversize
    assert result.late_growth_mb < 96, result.rss_samples
