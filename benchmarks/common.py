"""What every benchmark shares: the header line, timing, memory, real-speech clips, tables, peers.

Timings are medians of repeated calls after warm-up, and every ratio a script prints is taken
between numbers measured in the same run, because shared machines drift by more than the
differences being measured.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import gc
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from speakerdemo.audio import SAMPLE_RATE

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
CHECKPOINTS = REPO_ROOT / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "ecapa-speechocean"
MIB = 2**20


# ----------------------------------------------------------------------------- header and arguments
def cpu_model() -> str:
    """The CPU's marketing name, so that numbers from different machines are not mixed up."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def print_header(name: str, extra: str = "") -> None:
    """``# benchmark: <name> | cpu ... | cores ... | torch ... | date``: first line of every script."""
    import torch

    parts = [
        f"# benchmark: {name}",
        f"cpu: {cpu_model()}",
        f"cores: {usable_cores()}",
        f"torch {torch.__version__}",
        f"torch threads: {torch.get_num_threads()}",
        datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    ]
    if torch.cuda.is_available():
        parts.append(f"gpu: {torch.cuda.get_device_name(0)}")
    if extra:
        parts.append(extra)
    print(" | ".join(parts), flush=True)


def note(text: str) -> None:
    """A comment line in the output (``# ...``), flushed so a subprocess reader sees it at once."""
    print(f"# {text}", flush=True)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows the script's docstring as written (what is timed) and every default."""


def base_parser(description: str | None, checkpoint: str | None = None) -> argparse.ArgumentParser:
    """Options every script has: ``--quick`` (tiny inputs, for the smoke test) and ``--data``; with
    ``checkpoint`` (its help text), ``--checkpoint`` too, which defaults to the shipped checkpoint."""
    parser = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny inputs: checks that the script runs")
    parser.add_argument("--data", type=Path, default=DATA_ROOT, help="the shared corpora (../shared/data)")
    if checkpoint is not None:
        parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help=checkpoint)
    return parser


def add_timing_options(parser: argparse.ArgumentParser, warmup: int) -> None:
    """``--repeats`` and ``--warmup``, as ``time_calls`` and ``time_interleaved`` take them."""
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls first")


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads so that every method in a run gets the same cores."""
    import torch

    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- checkpoints and data
def load_checkpoint(path: Path, device: str = "cpu", backend: str = "auto") -> Any:
    """A SpeakerEncoder, or exit 2 with the reason (a missing default checkpoint is a setup error)."""
    from speakerdemo.checkpoint import CheckpointError
    from speakerdemo.encoder import SpeakerEncoder

    if not (path / "config.json").is_file():
        sys.exit(f"error: no checkpoint at {path} (train one, or pass --checkpoint FOLDER)")
    try:
        return SpeakerEncoder.from_pretrained(path, device=device, backend=backend)
    except CheckpointError as err:
        sys.exit(f"error: {err}")


def data_or_skip(data_root: Path, corpus: str) -> Path | None:
    """The corpus folder, or None after saying that it is missing (callers then skip that part)."""
    folder = data_root / corpus
    if not (folder / "utterances.csv").is_file():
        note(f"SKIPPED: {folder}/utterances.csv not found; the real-speech part needs ../shared/data")
        return None
    return folder


def read_manifest(folder: Path) -> list[dict[str, str]]:
    """Rows of a corpus' utterances.csv, in file order."""
    with open(folder / "utterances.csv", newline="") as f:
        return list(csv.DictReader(f))


def load_wav(path: Path) -> np.ndarray:
    """A whole file as float32 mono at speakerdemo's sample rate, through the project's own loader (no limits)."""
    from speakerdemo.audio import load_audio

    return load_audio(path, SAMPLE_RATE, max_seconds=None, min_speech_seconds=0.0, max_bytes=None)


def voiced(
    seconds: float,
    *,
    f0: float = 120.0,
    formant: float = 700.0,
    sample_rate: int = SAMPLE_RATE,
    peak: float = 0.5,
    noise: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """A vowel-like "voice": harmonics of ``f0`` (random phases) under a formant at ``formant`` Hz,
    with a 4 Hz syllable contour and optional white ``noise`` (relative to the harmonics).

    Pitch and formant make voices tell apart, so a tiny model can learn them; the harmonics and
    the contour make the VAD take the signal for speech. float32, absolute peak ``peak``. The one
    synthetic voice of the project: the load test's clips and the test suite's (tests/conftest.py).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wav = np.zeros_like(t)
    for k in range(1, int(min(3800.0, sample_rate / 2 - 1) / f0) + 1):
        amplitude = np.exp(-0.5 * ((k * f0 - formant) / 250.0) ** 2) + 0.05
        wav += amplitude * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    wav *= 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    if noise:
        wav += noise * rng.standard_normal(len(t))
    top = np.max(np.abs(wav)) if wav.size else 0.0
    return (peak * wav / (top or 1.0)).astype(np.float32)


def speech_clips(corpus: Path, seconds: float, count: int) -> list[np.ndarray]:
    """``count`` clips of real speech, exactly ``seconds`` long, clip ``i`` starting at file ``i``.

    A clip longer than its file continues with the next files (other speakers): for speed
    measurements only the length and the presence of speech matter.
    """
    rows = read_manifest(corpus)
    need = int(round(seconds * SAMPLE_RATE))
    cache: dict[int, np.ndarray] = {}
    clips = []
    for i in range(count):
        parts, have, j = [], 0, i
        while have < need:
            index = j % len(rows)
            if index not in cache:
                cache[index] = load_wav(corpus / rows[index]["path"])
            parts.append(cache[index])
            have += len(cache[index])
            j += 1
        clips.append(np.concatenate(parts)[:need].astype(np.float32))
    return clips


# ----------------------------------------------------------------------------- timing and memory
@dataclass
class Timing:
    """Seconds per call: the median and every repeat, so the spread can be shown too."""

    median: float
    runs: list[float]

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the machine was during these repeats."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median > 0 else 0.0


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None] | None = None) -> Timing:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock reading, so that queued
    GPU work is counted in the call that queued it.
    """
    return time_interleaved({"": fn}, repeats, warmup, sync)[""]


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, sync: Callable[[], None] | None = None
) -> dict[str, Timing]:
    """``time_calls`` for several methods, their repeats taken in turn, in a new order each round.

    Interleaving spreads slow phases of a shared machine over all methods alike, so the ratios
    between their medians are not biased by which one happened to run during a busy minute. The
    order is shuffled (seeded) because a fixed one is biased too: a call that always follows one
    with small allocations pays for fresh pages, while the one after it reuses what its
    predecessor freed (our forward read 52 ms after the front end and 24 ms alone, 3-s clip).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    shuffler = random.Random(0)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            fn = fns[name]
            if sync:
                sync()
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            runs[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(r), r) for name, r in runs.items()}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _release_freed_memory() -> None:
    """Hand memory that Python and malloc hold but no longer use back to the OS before measuring.

    ``gc.freeze`` moves the survivors out of the collector's reach, so that the next collection
    scans only new objects (a full one takes 0.2 s once torch and the peers are imported).
    """
    gc.collect()
    gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_delta(fn: Callable[[], Any]) -> float | None:
    """MiB by which the process' resident set grew at its peak during one call of ``fn``.

    Counts everything the call allocates, torch's CPU tensors included (which tracemalloc cannot
    see). Uses Linux's resettable high-water mark (``/proc/self/clear_refs``); None elsewhere.
    """
    _release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
    except (OSError, KeyError):
        return None
    fn()
    return max(0, _status_kib("VmHWM") - before) / 1024


def traced_peak(fn: Callable[[], Any]) -> float:
    """MiB of Python and numpy allocations at their peak during one call (tracemalloc).

    Measured in a separate call from the timed ones: tracing slows every allocation down.
    """
    _release_freed_memory()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------- output
def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table cell; ``n/a`` where nothing was measured."""
    if value is None:
        return "n/a"
    if value != 0 and abs(value) < 10**-digits:
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table (pastes straight into benchmarks/README.md)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def ratio(numerator: float | None, denominator: float | None) -> str:
    """``a/b`` to three digits, or n/a when either side was not measured."""
    if numerator is None or denominator is None or denominator == 0:
        return "n/a"
    return f"{numerator / denominator:.3f}"


# ----------------------------------------------------------------------------- peers
VERIFICATION_HEADERS = ["target", "non-target", "EER %", "minDCF 0.01"]


def verification_cells(n_target: int, n_nontarget: int, eer: float, min_dcf: float) -> list[Any]:
    """The cells under ``VERIFICATION_HEADERS``: trial counts, EER in percent, minDCF."""
    return [n_target, n_nontarget, fmt(100 * eer, 2), fmt(min_dcf, 3)]


def print_eer_ratios(rows: Sequence[tuple[str, str, float]], label: str) -> None:
    """Each model's EER over Resemblyzer's on the same trials, from ``(model, trials, eer)`` rows of
    one run (a row of model ``resemblyzer`` is the reference of its trials)."""
    reference = {trials: eer for model, trials, eer in rows if model == "resemblyzer"}
    ratios = [
        [model, trials, ratio(eer, reference[trials])]
        for model, trials, eer in rows
        if model != "resemblyzer" and trials in reference
    ]
    if ratios:
        print("\nEER ratios (< 1.0 means fewer errors than Resemblyzer):")
        print_table(["model", label, "EER / resemblyzer EER"], ratios)


def import_peer(module: str, install: str) -> ModuleType | None:
    """Import a peer toolkit, or say clearly that its rows are skipped and how to get them."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as err:  # a broken install of a peer must not stop our own measurements
        note(
            f"SKIPPED {module}: cannot import it ({type(err).__name__}: {err}); "
            f"install with: .venv/bin/pip install {install}"
        )
        return None


def speechbrain_ecapa(channels: int, embed_dim: int, n_mels: int) -> Any:
    """SpeechBrain's ECAPA_TDNN, untrained, at our layout: C,C,C,C,3C channels, 128-d attention and SE.

    Only its speed is compared, so no pretrained weights are fetched.
    """
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    return ECAPA_TDNN(
        n_mels,
        lin_neurons=embed_dim,
        channels=[channels] * 4 + [3 * channels],
        kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=128,
        res2net_scale=8,
        se_channels=128,
        global_context=True,
    ).eval()


def ecapa_width(encoder: Any) -> tuple[int, int] | None:
    """(channels, embed_dim) of a SpeakerEncoder's ECAPA-TDNN, None for other encoders."""
    from speakerdemo.models.ecapa_tdnn import EcapaTdnn

    model = encoder.model
    if not isinstance(model, EcapaTdnn):
        return None
    return model.layer1.conv.out_channels, model.embed_dim
