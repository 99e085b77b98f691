"""CPU speed of ``SpeakerEncoder.embed`` against Resemblyzer and SpeechBrain's ECAPA-TDNN.

Answers two questions on the same real-speech clips (LibriSpeech, 16 kHz) in one run:

1. Is embedding a clip with our pipeline at least as fast as Resemblyzer's, end to end?
   ``ours embed torch`` times ``SpeakerEncoder.embed`` (batched: ``embed_batch``) from a float
   array: input checks, VAD, log-mel, the encoder over speech frames, pooling of windows;
   ``ours embed onnx`` the same with the encoder network in ONNX Runtime (the checkpoint's
   ``model.onnx``), ``ours embed onnx-int8`` with its int8 copy (``model.int8.onnx``, ``python -m
   train export --int8``); the app's default path is the int8 copy when the checkpoint has one,
   else ``model.onnx``, when onnxruntime is installed.
   ``resemblyzer`` times ``preprocess_wav`` (volume normalisation, webrtcvad silence trimming)
   plus ``VoiceEncoder.embed_utterance`` (mel, LSTM over 1.6-s partials); it has no batch API,
   so a "batch" is its clips one after another.
2. Is our ECAPA-TDNN no slower than SpeechBrain's at the same width? ``ours forward`` and
   ``speechbrain forward`` time the model's forward alone on the same features (our front end's
   mean-normalised 80-d log-mel of every frame, computed once, untimed); SpeechBrain's model is
   untrained, built at the checkpoint's channels and embedding size. ``ours forward onnx`` and
   ``ours forward onnx-int8`` are the same forward in ONNX Runtime. ``ours front end`` times the
   log-mel step that every forward would need, for context.

RTF = processing seconds / audio seconds (lower is faster). Repeats of all methods are taken in
turn, so the ratios are not biased by when each ran. Memory: peak RSS growth of one call (torch
tensors included) and the tracemalloc peak (Python and numpy) of another, both untimed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from benchmarks import common
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.onnx_runtime import ONNX_FILE, onnx_runtime_available

NAME = "embed_speed_cpu"
TIMED = {
    "ours embed torch": "SpeakerEncoder.embed (batch: embed_batch) from a float array: checks, VAD, log-mel, "
    "encoder over speech frames, pooling of windows; the encoder network in torch",
    "ours embed onnx": "the same, the encoder network in ONNX Runtime (backend='onnx')",
    "ours embed onnx-int8": "the same, the int8 network in ONNX Runtime (backend='onnx-int8')",
    "resemblyzer": f"preprocess_wav(wav, source_sr={SAMPLE_RATE}) + VoiceEncoder.embed_utterance, clip by clip",
    "ours front end": "our FrontEnd alone: log-mel + mean normalisation of every frame",
    "ours forward": "the checkpoint's ECAPA-TDNN forward alone, on the front end's features (all frames)",
    "ours forward onnx": "the same forward in ONNX Runtime",
    "ours forward onnx-int8": "the same forward, int8, in ONNX Runtime",
    "speechbrain forward": "SpeechBrain ECAPA_TDNN forward alone (untrained, same width), on the same features",
}


@dataclass
class Cell:
    """One method on one set of clips: its timing and memory."""

    method: str
    seconds: float
    clips: int
    timing: common.Timing
    rss_mib: float | None
    traced_mib: float

    @property
    def rtf(self) -> float:
        return self.timing.median / (self.seconds * self.clips)


def methods(
    encoders: dict[str, Any], voice: Any, resemblyzer: Any, speechbrain: Any, clips: list[np.ndarray]
) -> dict[str, Callable[[], Any]]:
    """The calls to time on these clips, by method name (peers and ONNX absent when not there).

    ``encoders`` maps a backend ("torch", "onnx", "onnx-int8") to the checkpoint loaded with it."""
    fns: dict[str, Callable[[], Any]] = {}
    for backend, encoder in encoders.items():
        if len(clips) == 1:
            fns[f"ours embed {backend}"] = partial(encoder.embed, clips[0], SAMPLE_RATE)
        else:
            fns[f"ours embed {backend}"] = partial(encoder.embed_batch, [(SAMPLE_RATE, c) for c in clips])
    encoder = encoders["torch"]
    if voice is not None:
        fns["resemblyzer"] = lambda: [
            voice.embed_utterance(resemblyzer.preprocess_wav(c, source_sr=SAMPLE_RATE)) for c in clips
        ]
    wav = torch.from_numpy(np.stack(clips))

    def front_end() -> Any:
        with torch.inference_mode():
            return encoder.frontend(wav)

    feats, mask = front_end()
    fns["ours front end"] = front_end

    def ours_forward() -> Any:
        with torch.inference_mode():
            return encoder.model(feats, mask)

    fns["ours forward"] = ours_forward
    for backend in ("onnx", "onnx-int8"):
        if backend in encoders:
            fns[f"ours forward {backend}"] = partial(encoders[backend].onnx, feats, mask)
    if speechbrain is not None:

        def speechbrain_forward() -> Any:
            with torch.inference_mode():
                return speechbrain(feats)

        fns["speechbrain forward"] = speechbrain_forward
    return fns


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__, checkpoint="checkpoint folder")
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 10.0, 60.0], help="clip lengths")
    parser.add_argument("--batch", type=int, default=8, help="clips per embed_batch call")
    common.add_timing_options(parser, warmup=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, for every method")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.batch, args.repeats, args.warmup = [3.0], 2, 2, 1
    common.set_threads(args.threads)
    common.print_header(NAME, f"checkpoint: {args.checkpoint}")
    corpus = common.data_or_skip(args.data, "librispeech-251")
    if corpus is None:
        return 0
    encoder = common.load_checkpoint(args.checkpoint, "cpu", backend="torch")
    encoders = {"torch": encoder}
    if not onnx_runtime_available():
        common.note("SKIPPED onnx rows: onnxruntime is not installed")
    elif not (args.checkpoint / ONNX_FILE).is_file():
        common.note(f"SKIPPED onnx rows: {args.checkpoint} has no {ONNX_FILE} (python -m train export)")
    else:
        encoders["onnx"] = common.load_checkpoint(args.checkpoint, "cpu", backend="onnx")
        if encoders["onnx"].onnx_config.get("int8"):
            encoders["onnx-int8"] = common.load_checkpoint(args.checkpoint, "cpu", backend="onnx-int8")
        else:
            common.note(f"SKIPPED onnx-int8 rows: {args.checkpoint} has no int8 copy (python -m train export --int8)")
    default = common.load_checkpoint(args.checkpoint, "cpu").backend  # what the app runs (backend="auto")
    width = common.ecapa_width(encoder)
    resemblyzer = common.import_peer("resemblyzer", "resemblyzer")
    voice = resemblyzer.VoiceEncoder("cpu", verbose=False) if resemblyzer else None
    speechbrain = None
    if width is None:
        common.note(
            f"SKIPPED speechbrain forward: the checkpoint's encoder is {encoder.encoder_config['name']}, "
            "not ECAPA-TDNN, so there is no equal-width model to compare"
        )
    elif common.import_peer("speechbrain.lobes.models.ECAPA_TDNN", "speechbrain"):
        speechbrain = common.speechbrain_ecapa(width[0], width[1], encoder.frontend.config.n_mels)
    if width is not None:
        common.note(
            f"ECAPA-TDNN width C={width[0]}, embedding {width[1]}-d (ours from the checkpoint, "
            "SpeechBrain's untrained at the same layout)"
        )
    common.note(f"median of {args.repeats} repeats after {args.warmup} warm-up call(s); methods interleaved")
    for method, timed in TIMED.items():
        common.note(f"{method}: {timed}")

    cells: list[Cell] = []
    for seconds in args.seconds:
        batch = common.speech_clips(corpus, seconds, args.batch)
        for clips in ([batch[0]], batch):
            fns = methods(encoders, voice, resemblyzer, speechbrain, clips)
            timings = common.time_interleaved(fns, args.repeats, args.warmup)
            for name, fn in fns.items():
                cells.append(
                    Cell(name, seconds, len(clips), timings[name], common.peak_rss_delta(fn), common.traced_peak(fn))
                )

    common.print_table(
        ["method", "clip s", "clips", "median ms", "RTF", "spread", "peak RSS +MiB", "tracemalloc MiB"],
        [
            [
                c.method,
                common.fmt(c.seconds, 0),
                c.clips,
                common.fmt(1000 * c.timing.median, 1),
                common.fmt(c.rtf, 4),
                common.fmt(c.timing.spread, 2),
                common.fmt(c.rss_mib, 1),
                common.fmt(c.traced_mib, 1),
            ]
            for c in cells
        ],
    )
    by_key = {(c.method, c.seconds, c.clips): c for c in cells}
    print("\nRatios of medians (<= 1.0 means ours is at least as fast):")
    ratio_rows = []
    for seconds in args.seconds:
        for clips in (1, args.batch):
            rtf = {method: cell.rtf for (method, s, n), cell in by_key.items() if (s, n) == (seconds, clips)}
            ratio_rows.append(
                [
                    common.fmt(seconds, 0),
                    clips,
                    common.ratio(rtf.get(f"ours embed {default}"), rtf.get("resemblyzer")),
                    common.ratio(rtf.get("ours embed onnx"), rtf.get("ours embed torch")),
                    common.ratio(rtf.get("ours embed onnx-int8"), rtf.get("ours embed onnx")),
                    common.ratio(rtf.get("ours forward"), rtf.get("speechbrain forward")),
                ]
            )
    common.print_table(
        [
            "clip s",
            "clips",
            f"ours embed ({default}, the app's path) / resemblyzer",
            "ours embed onnx / torch",
            "ours embed onnx-int8 / onnx",
            "ours forward / speechbrain forward",
        ],
        ratio_rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
