"""Verification accuracy: EER and minDCF of every checkpoint and of Resemblyzer, in one run.

The main table scores ``speechocean762/trials_test.txt`` (20,000 trials over the corpus' test
speakers). Checkpoints go through ``train.loop.trial_scores``, the code ``python -m train
evaluate`` runs: every file embedded once at full length, cosine scores. Resemblyzer embeds each
file with ``embed_utterance(preprocess_wav(path))``; its scores are cosines too.

``--ood`` adds an out-of-domain check on LibriSpeech readers (native adult speakers, another
recording chain): each speaker's long utterance is cut into segments; every pair of segments is a
trial (same speaker = target). It runs at 16 kHz and again after a round trip through 8 kHz
(telephone bandwidth), to show how much each model relies on the band above 4 kHz. With
``--split RUN/split.csv`` only the run's held-out speakers are used, so the check is on speakers
the checkpoint never saw; without it, all 251 speakers (some of them training speakers).
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import soxr

from benchmarks.common import (
    CHECKPOINTS, SAMPLE_RATE, base_parser, data_or_skip, fmt, import_peer, load_checkpoint, load_wav,
    note, print_header, print_table, ratio, read_manifest,
)
from speakerdemo.metrics import compute_eer, compute_min_dcf

NAME = "accuracy"
EMBED_BATCH = 16  # as train.loop.embed_files


@dataclass
class Result:
    """Verification metrics of one model on one trial list."""

    model: str
    trials: str
    n_target: int
    n_nontarget: int
    eer: float
    min_dcf: float
    seconds: float


def metrics(model: str, trials: str, scores: np.ndarray, labels: np.ndarray, seconds: float) -> Result:
    return Result(model, trials, int(labels.sum()), int((1 - labels).sum()),
                  compute_eer(scores, labels)[0], compute_min_dcf(scores, labels, 0.01)[0], seconds)


def cosine_pairs(emb: dict[Any, np.ndarray], pairs: list[tuple[Any, Any]]) -> np.ndarray:
    """Cosine score of each (a, b) pair of keys of ``emb``."""
    a = np.stack([emb[x] for x, _ in pairs])
    b = np.stack([emb[y] for _, y in pairs])
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def checkpoint_folders(named: list[Path] | None) -> dict[str, Path]:
    """Checkpoints by label: those named on the command line (labelled as given), else every
    folder in checkpoints/ with a config.json (labelled by folder name)."""
    if named:
        return {str(p): p for p in named}
    found = sorted(p for p in CHECKPOINTS.iterdir() if (p / "config.json").is_file()) if CHECKPOINTS.is_dir() else []
    if not found:
        note(f"no checkpoints in {CHECKPOINTS}: only the peers are scored (or pass --checkpoint)")
    return {p.name: p for p in found}


# ----------------------------------------------------------------------------- in-domain trial list
def trial_list(args: Any, checkpoints: dict[str, Path], resemblyzer: Any) -> list[Result]:
    """EER/minDCF on the speechocean762 test trials for every checkpoint and Resemblyzer."""
    from train.data import read_trials
    from train.loop import trial_scores

    corpus = data_or_skip(args.data, "speechocean762")
    if corpus is None:
        return []
    trials = read_trials(corpus / "trials_test.txt", corpus)[: args.max_trials]
    name = f"speechocean762/trials_test.txt[:{len(trials)}]"
    note(f"{name}: {len(trials)} trials, {len({t.a for t in trials} | {t.b for t in trials})} files")
    results = []
    for label, folder in checkpoints.items():
        encoder = load_checkpoint(folder, args.device)
        start = time.perf_counter()
        scores, labels = trial_scores(encoder, trials, corpus)
        results.append(metrics(label, name, scores, labels, time.perf_counter() - start))
    if resemblyzer is not None:
        voice = resemblyzer.VoiceEncoder(args.device, verbose=False)
        start = time.perf_counter()
        files = sorted({t.a for t in trials} | {t.b for t in trials})
        emb = {f: voice.embed_utterance(resemblyzer.preprocess_wav(corpus / f)) for f in files}
        scores = cosine_pairs(emb, [(t.a, t.b) for t in trials])
        labels = np.array([t.label for t in trials])
        results.append(metrics("resemblyzer", name, scores, labels, time.perf_counter() - start))
    return results


# ----------------------------------------------------------------------------- out of domain
def holdout_speakers(split: Path) -> set[str]:
    """Speakers of a run's split.csv marked ``holdout`` (never trained on)."""
    with open(split, newline="") as f:
        speakers = {row["speaker"] for row in csv.DictReader(f) if row["split"] == "holdout"}
    if not speakers:
        sys.exit(f"error: {split} lists no holdout speakers")
    return speakers


def ood_segments(corpus: Path, speakers: set[str] | None, seconds: float,
                 per_speaker: int, max_speakers: int | None) -> list[tuple[str, np.ndarray]]:
    """Up to ``per_speaker`` consecutive, non-overlapping segments of each speaker's utterances."""
    rows = [r for r in read_manifest(corpus) if speakers is None or r["speaker"] in speakers]
    length = int(round(seconds * SAMPLE_RATE))
    segments: list[tuple[str, np.ndarray]] = []
    by_speaker: dict[str, int] = {}
    for row in rows:
        speaker = row["speaker"]
        if by_speaker.get(speaker, 0) >= per_speaker:
            continue
        if speaker not in by_speaker and max_speakers is not None and len(by_speaker) >= max_speakers:
            continue
        wav = load_wav(corpus / row["path"])
        for start in range(0, len(wav) - length + 1, length):
            if by_speaker.get(speaker, 0) >= per_speaker:
                break
            segments.append((speaker, wav[start : start + length]))
            by_speaker[speaker] = by_speaker.get(speaker, 0) + 1
    return segments


def telephone(wav: np.ndarray) -> np.ndarray:
    """Down to 8 kHz and back up to 16 kHz: the same length, nothing left above 4 kHz."""
    narrow = soxr.resample(wav, SAMPLE_RATE, 8000, quality="HQ")
    return soxr.resample(narrow, 8000, SAMPLE_RATE, quality="HQ")[: len(wav)].astype(np.float32)


def ours_embedder(encoder: Any) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """Arrays -> vectors with the settings ``train.loop.embed_files`` uses (no limits, no VAD gate)."""
    def embed(wavs: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i in range(0, len(wavs), EMBED_BATCH):
            chunk = [(SAMPLE_RATE, w) for w in wavs[i : i + EMBED_BATCH]]
            out += [e.vector for e in encoder.embed_batch(chunk, max_seconds=None, min_speech_seconds=0.0)]
        return out

    return embed


def out_of_domain(args: Any, checkpoints: dict[str, Path], resemblyzer: Any) -> list[Result]:
    """EER on all segment pairs of LibriSpeech speakers, at 16 kHz and through 8 kHz."""
    corpus = data_or_skip(args.data, "librispeech-251")
    if corpus is None:
        return []
    speakers = holdout_speakers(args.split) if args.split else None
    segments = ood_segments(corpus, speakers, args.ood_seconds, args.ood_per_speaker,
                            4 if args.quick else None)
    n_speakers = len({s for s, _ in segments})
    note(f"out of domain: {n_speakers} LibriSpeech speakers "
         f"({'holdout of ' + str(args.split) if args.split else 'all, training speakers included'}), "
         f"{len(segments)} segments of {args.ood_seconds:g} s, all pairs as trials")
    first, second = np.triu_indices(len(segments), k=1)  # every pair once
    speaker_ids = np.array([s for s, _ in segments])
    labels = (speaker_ids[first] == speaker_ids[second]).astype(int)
    embedders: list[tuple[str, Callable[[list[np.ndarray]], list[np.ndarray]]]] = [
        (label, ours_embedder(load_checkpoint(folder, args.device))) for label, folder in checkpoints.items()
    ]
    if resemblyzer is not None:
        voice = resemblyzer.VoiceEncoder(args.device, verbose=False)
        embedders.append(("resemblyzer", lambda wavs: [
            voice.embed_utterance(resemblyzer.preprocess_wav(w, source_sr=SAMPLE_RATE)) for w in wavs
        ]))
    results = []
    for condition, transform in (("16 kHz", lambda w: w), ("8 kHz round trip", telephone)):
        wavs = [transform(w) for _, w in segments]
        for model, embed in embedders:
            start = time.perf_counter()
            unit = np.stack(embed(wavs))
            unit /= np.linalg.norm(unit, axis=1, keepdims=True)
            scores = (unit @ unit.T)[first, second]
            results.append(metrics(model, f"librispeech {condition}", scores, labels, time.perf_counter() - start))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, action="append",
                        help="checkpoint folder (repeatable); default: every one in checkpoints/")
    parser.add_argument("--max-trials", type=int, help="score only the first N trials (--quick: 200 unless given)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for every model")
    parser.add_argument("--ood", action="store_true", help="also the LibriSpeech 16 kHz / 8 kHz check")
    parser.add_argument("--split", type=Path, help="a run's split.csv: --ood on its holdout speakers only")
    parser.add_argument("--ood-seconds", type=float, default=3.0, help="segment length for --ood")
    parser.add_argument("--ood-per-speaker", type=int, default=4, help="segments per speaker for --ood")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_trials = args.max_trials or 200
        args.ood_seconds, args.ood_per_speaker = 2.0, 2
    print_header(NAME, f"device: {args.device}")
    checkpoints = checkpoint_folders(args.checkpoint)
    resemblyzer = import_peer("resemblyzer", "resemblyzer")
    results = trial_list(args, checkpoints, resemblyzer)
    if args.ood:
        results += out_of_domain(args, checkpoints, resemblyzer)
    if not results:
        note("nothing was scored")
        return 0
    print_table(
        ["model", "trials", "target", "non-target", "EER %", "minDCF 0.01", "embed+score s"],
        [[r.model, r.trials, r.n_target, r.n_nontarget, fmt(100 * r.eer, 2), fmt(r.min_dcf, 3), fmt(r.seconds, 1)]
         for r in results],
    )
    reference = {r.trials: r.eer for r in results if r.model == "resemblyzer"}
    ratios = [[r.model, r.trials, ratio(r.eer, reference[r.trials])]
              for r in results if r.model != "resemblyzer" and r.trials in reference]
    if ratios:
        print("\nEER ratios (< 1.0 means fewer errors than Resemblyzer):")
        print_table(["model", "trials", "EER / resemblyzer EER"], ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
