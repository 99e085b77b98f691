"""GPU throughput of embedding (seconds of audio per second) by batch size and precision.

What is timed, for each model, batch size (1, 2, 4, ... 256 clips of ``--seconds``) and precision
(fp32, and bf16 / fp16 autocast): a batch of waveforms already on the GPU -> our front end's
log-mel (on the GPU, always fp32) -> the model's forward -> embeddings, synchronised. Models:

- ``ours ecapa 512``: our ECAPA-TDNN at the paper's 512 channels, untrained (speed only);
- ``ours <checkpoint>``: the checkpoint's encoder (``--checkpoint``; skipped if absent);
- ``speechbrain ecapa C``: SpeechBrain's ECAPA_TDNN, untrained, at the same widths, on the same
  features.

Two further rows put these in context: ``ours embed_batch`` is the whole public API
(``SpeakerEncoder.embed_batch`` from float arrays: input checks and VAD on the CPU, windows batched
under its own bf16 autocast) on real speech; ``resemblyzer`` is ``preprocess_wav`` +
``embed_utterance`` with its LSTM on the GPU, clip by clip (it has no batch API), fp32.

The forward-path rows use real speech when ../shared/data is there, else random noise (their
speed does not depend on the content; the note line says which). Batch sizes that run out of
memory are reported as OOM and larger ones skipped. Without CUDA the script says so and exits 0;
``--device cpu`` runs the same measurements on the CPU (to check the script itself).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks import common
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.encoder import SpeakerEncoder, resolve_device

NAME = "embed_speed_gpu"
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TARGET_X_REAL_TIME = 20000  # README target for ours ecapa 512, batched, on an H100


@dataclass
class Row:
    model: str
    dtype: str
    batch: int
    seconds_per_call: float | None  # None: out of memory
    audio_seconds: float
    peak_mib: float | None
    finite: bool | None

    @property
    def throughput(self) -> float | None:
        """Seconds of audio embedded per second (= times faster than real time)."""
        return None if self.seconds_per_call is None else self.audio_seconds / self.seconds_per_call


def forward_fn(
    frontend: Any, model: Any, speechbrain: bool, wav: torch.Tensor, dtype: torch.dtype | None
) -> Callable[[], torch.Tensor]:
    """Waveforms on the device -> log-mel -> forward -> embeddings, under the chosen autocast."""

    def run() -> torch.Tensor:
        with torch.inference_mode():
            feats, mask = frontend(wav)
            with torch.autocast(wav.device.type, dtype or torch.float32, enabled=dtype is not None):
                return model(feats) if speechbrain else model(feats, mask).embedding

    return run


def peak_memory(fn: Callable[[], Any], device: torch.device) -> float | None:
    """MiB the device allocator peaked at during one call (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    return torch.cuda.max_memory_allocated(device) / common.MIB


def sweep(
    name: str,
    make: Callable[[int, torch.dtype | None], Callable[[], Any]],
    batches: list[int],
    dtypes: dict[str, torch.dtype | None],
    args: Any,
    device: torch.device,
) -> list[Row]:
    """Every batch size and precision for one model; running out of memory ends that precision's sweep.

    ``make(batch, dtype)`` returns the call to time.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rows = []
    for dtype_name, dtype in dtypes.items():
        for batch in batches:
            fn = make(batch, dtype)
            try:
                out = fn()
                finite = bool(torch.isfinite(out).all()) if isinstance(out, torch.Tensor) else None
                timing = common.time_calls(fn, args.repeats, args.warmup, sync)
                rows.append(
                    Row(name, dtype_name, batch, timing.median, batch * args.seconds, peak_memory(fn, device), finite)
                )
            except torch.OutOfMemoryError:
                rows.append(Row(name, dtype_name, batch, None, batch * args.seconds, None, None))
                torch.cuda.empty_cache()
                break
        best = max(
            (r for r in rows if r.dtype == dtype_name and r.throughput), key=lambda r: r.throughput, default=None
        )
        if best is not None:
            common.note(f"{name} {dtype_name}: best {best.throughput:,.0f}x real time at batch {best.batch}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__, checkpoint="checkpoint folder")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--batches", type=int, nargs="+", default=[2**k for k in range(9)], help="batch sizes")
    parser.add_argument(
        "--e2e-batches",
        type=int,
        nargs="+",
        default=[1, 8, 64],
        help="batch sizes for the embed_batch and resemblyzer rows",
    )
    common.add_timing_options(parser, warmup=3)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to check the script without a GPU")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.batches, args.e2e_batches, args.repeats, args.warmup = 1.0, [1, 2], [1, 2], 2, 1
    common.print_header(NAME, f"{args.seconds:g}-s clips")
    common.note(
        "forward rows time: waveforms on the device -> log-mel (fp32) -> forward under the autocast -> "
        "embeddings; embed_batch rows: SpeakerEncoder.embed_batch from float arrays (CPU checks and VAD, "
        "its own bf16 autocast); resemblyzer: preprocess_wav + embed_utterance clip by clip; "
        "peak MiB: the CUDA allocator's peak during one call, weights and all input clips included"
    )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        common.note(
            "SKIPPED: no CUDA device (torch.cuda.is_available() is False); this benchmark needs a GPU "
            "(--device cpu runs it on the CPU)"
        )
        return 0
    device = resolve_device(args.device)
    dtypes = dict(DTYPES)
    if device.type == "cuda":
        common.note(
            f"cuDNN {torch.backends.cudnn.version()}, cudnn.benchmark={torch.backends.cudnn.benchmark} (default)"
        )
        if not torch.cuda.is_bf16_supported():
            common.note("bf16 is not supported on this GPU: skipped")
            dtypes.pop("bf16")

    corpus = common.data_or_skip(args.data, "librispeech-251")
    count = max(args.batches + args.e2e_batches)
    if corpus is not None:
        clips = common.speech_clips(corpus, args.seconds, count)
        common.note(f"audio: {count} clips of real speech (LibriSpeech), {args.seconds:g} s each")
    else:
        rng = np.random.default_rng(0)
        clips = [0.1 * rng.standard_normal(int(args.seconds * SAMPLE_RATE)).astype(np.float32) for _ in range(count)]
        common.note("audio: random noise for the forward rows; embed_batch and resemblyzer rows skipped")
    wav = torch.from_numpy(np.stack(clips[: max(args.batches)])).to(device)

    ours512 = SpeakerEncoder(encoder={"name": "ecapa_tdnn", "preset": "512"}).to(device).eval()
    frontend = ours512.frontend
    models: list[tuple[str, Any, bool]] = [("ours ecapa 512", ours512.model, False)]
    pairs = [("ours ecapa 512", 512, ours512.model.embed_dim)]
    checkpoint = None
    if (args.checkpoint / "config.json").is_file():
        checkpoint = common.load_checkpoint(args.checkpoint, args.device)
        models.append((f"ours {args.checkpoint.name}", checkpoint.model, False))
        width = common.ecapa_width(checkpoint)
        if width is not None:
            pairs.append((f"ours {args.checkpoint.name}", *width))
    else:
        common.note(f"SKIPPED checkpoint rows: no checkpoint at {args.checkpoint}")
    twins: list[tuple[str, str]] = []
    if common.import_peer("speechbrain.lobes.models.ECAPA_TDNN", "speechbrain"):
        for ours, channels, embed_dim in pairs:
            name = f"speechbrain ecapa {channels}"
            if name not in {m for m, _, _ in models}:
                sb = common.speechbrain_ecapa(channels, embed_dim, frontend.config.n_mels).to(device)
                models.append((name, sb, True))
            twins.append((ours, name))

    rows: list[Row] = []
    for name, model, is_speechbrain in models:
        rows += sweep(
            name,
            lambda b, d, m=model, sb=is_speechbrain: forward_fn(frontend, m, sb, wav[:b], d),
            args.batches,
            dtypes,
            args,
            device,
        )
    if corpus is not None:
        api = checkpoint or ours512
        label = f"ours embed_batch ({args.checkpoint.name if checkpoint else 'ecapa 512'})"
        rows += sweep(
            label,
            lambda b, d: lambda: api.embed_batch([(SAMPLE_RATE, c) for c in clips[:b]]),
            args.e2e_batches,
            {"built in (bf16 on CUDA)": None},
            args,
            device,
        )
        resemblyzer = common.import_peer("resemblyzer", "resemblyzer")
        if resemblyzer is not None:
            voice = resemblyzer.VoiceEncoder(args.device, verbose=False)
            rows += sweep(
                "resemblyzer (clip by clip)",
                lambda b, d: (
                    lambda: [
                        voice.embed_utterance(resemblyzer.preprocess_wav(c, source_sr=SAMPLE_RATE)) for c in clips[:b]
                    ]
                ),
                args.e2e_batches,
                {"fp32": None},
                args,
                device,
            )

    common.print_table(
        ["model", "precision", "batch", "ms/call", "x real time", "peak MiB", "finite"],
        [
            [
                r.model,
                r.dtype,
                r.batch,
                "OOM" if r.seconds_per_call is None else common.fmt(1000 * r.seconds_per_call, 2),
                "OOM" if r.throughput is None else f"{r.throughput:,.0f}",
                common.fmt(r.peak_mib, 0),
                "n/a" if r.finite is None else ("yes" if r.finite else "NO"),
            ]
            for r in rows
        ],
    )
    print_ratios(rows, [name for name, _, _ in models], twins, list(dtypes))
    return 0


def largest_common_batch(
    speed: dict[tuple[str, str, int], float | None], models: list[str], dtypes: list[str]
) -> int | None:
    """The largest batch size every given model measured in every given precision."""
    batches = {b for (_, _, b) in speed}
    common = [b for b in batches if all(speed.get((m, d, b)) for m in models for d in dtypes)]
    return max(common, default=None)


def print_ratios(rows: list[Row], models: list[str], twins: list[tuple[str, str]], dtypes: list[str]) -> None:
    """Precision speed-ups per model, ours vs SpeechBrain at equal width, and the target."""
    speed = {(r.model, r.dtype, r.batch): r.throughput for r in rows}
    table = []
    for model in models:
        for dtype in dtypes[1:]:
            b = largest_common_batch(speed, [model], ["fp32", dtype])
            if b is not None:
                table.append(
                    [model, f"{dtype} / fp32", b, common.ratio(speed[(model, dtype, b)], speed[(model, "fp32", b)])]
                )
    for ours, theirs in twins:
        for dtype in dtypes:
            b = largest_common_batch(speed, [ours, theirs], [dtype])
            if b is not None:
                table.append(
                    [f"{ours} / {theirs}", dtype, b, common.ratio(speed[(ours, dtype, b)], speed[(theirs, dtype, b)])]
                )
    print("\nThroughput ratios at the largest batch both sides measured (> 1.0: the first is faster):")
    common.print_table(["comparison", "precision", "batch", "throughput common.ratio"], table)
    best = max(
        (r for r in rows if r.model == "ours ecapa 512" and r.throughput), key=lambda r: r.throughput, default=None
    )
    if best is not None:
        common.note(
            f"ours ecapa 512 best: {best.throughput:,.0f}x real time ({best.dtype}, batch {best.batch}); "
            f"target >= {TARGET_X_REAL_TIME:,}x on an H100"
        )


if __name__ == "__main__":
    sys.exit(main())
