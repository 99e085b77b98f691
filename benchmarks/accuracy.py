"""Verification accuracy: EER and minDCF of every checkpoint and of Resemblyzer, in one run.

The main table scores ``speechocean762/trials_test.txt`` (20,000 trials over the corpus' test
speakers). Checkpoints go through ``train.trials.trial_scores``, the code ``python -m train
evaluate`` runs: every file embedded once at full length, cosine scores. Resemblyzer embeds each
file with ``embed_utterance(preprocess_wav(path))``; its scores are cosines too.

``--ood`` adds an out-of-domain check on LibriSpeech readers (native adult speakers, another
recording chain): each speaker's long utterance is cut into segments; every pair of segments is a
trial (same speaker = target), as the validation EER of ``python -m train fit`` on held-out
speakers (``train.trials.segment_trials``). It runs at 16 kHz and again after a round trip through
8 kHz (``train.augment.telephone``: telephone bandwidth), to show how much each model relies on the
band above 4 kHz. With
``--split RUN/split.csv`` only the run's held-out speakers are used, so the check is on speakers
the checkpoint never saw; without it, all 251 speakers (some of them training speakers).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.encoder import resolve_device
from speakerdemo.metrics import compute_eer, compute_min_dcf
from speakerdemo.scoring import cosine
from train.augment import telephone
from train.data import read_trials
from train.trials import SegmentTrials, embed_arrays, segment_trials, trial_scores

NAME = "accuracy"


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
    return Result(
        model,
        trials,
        int(labels.sum()),
        int((1 - labels).sum()),
        compute_eer(scores, labels)[0],
        compute_min_dcf(scores, labels, 0.01)[0],
        seconds,
    )


def checkpoint_folders(named: list[Path] | None) -> dict[str, Path]:
    """Checkpoints by label: those named on the command line (labelled as given), else every
    folder in checkpoints/ with a config.json (labelled by folder name)."""
    if named:
        return {str(p): p for p in named}
    found = (
        sorted(p for p in common.CHECKPOINTS.iterdir() if (p / "config.json").is_file())
        if common.CHECKPOINTS.is_dir()
        else []
    )
    if not found:
        common.note(f"no checkpoints in {common.CHECKPOINTS}: only the peers are scored (or pass --checkpoint)")
    return {p.name: p for p in found}


# ----------------------------------------------------------------------------- in-domain trial list
def trial_list(args: Any, checkpoints: dict[str, Path], resemblyzer: Any) -> list[Result]:
    """EER/minDCF on the speechocean762 test trials for every checkpoint and Resemblyzer."""
    corpus = common.data_or_skip(args.data, "speechocean762")
    if corpus is None:
        return []
    trials = read_trials(corpus / "trials_test.txt", corpus)[: args.max_trials]
    name = f"speechocean762/trials_test.txt[:{len(trials)}]"
    common.note(f"{name}: {len(trials)} trials, {len({t.a for t in trials} | {t.b for t in trials})} files")
    results = []
    for label, folder in checkpoints.items():
        encoder = common.load_checkpoint(folder, args.device)
        start = time.perf_counter()
        scores, labels = trial_scores(encoder, trials, corpus)
        results.append(metrics(label, name, scores, labels, time.perf_counter() - start))
    if resemblyzer is not None:
        voice = resemblyzer.VoiceEncoder(args.device, verbose=False)
        start = time.perf_counter()
        files = sorted({t.a for t in trials} | {t.b for t in trials})
        emb = {f: voice.embed_utterance(resemblyzer.preprocess_wav(corpus / f)) for f in files}
        scores = np.array([cosine(emb[t.a], emb[t.b]) for t in trials])
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


def ood_trials(
    corpus: Path, speakers: set[str] | None, seconds: float, per_speaker: int, max_speakers: int | None
) -> SegmentTrials:
    """Up to ``per_speaker`` consecutive, non-overlapping segments of each speaker's utterances."""
    rows = [r for r in common.read_manifest(corpus) if speakers is None or r["speaker"] in speakers]
    clips = ((row["speaker"], partial(common.load_wav, corpus / row["path"])) for row in rows)
    return segment_trials(clips, int(round(seconds * SAMPLE_RATE)), per_speaker, max_speakers)


def out_of_domain(args: Any, checkpoints: dict[str, Path], resemblyzer: Any) -> list[Result]:
    """EER on all segment pairs of LibriSpeech speakers, at 16 kHz and through 8 kHz."""
    corpus = common.data_or_skip(args.data, "librispeech-251")
    if corpus is None:
        return []
    speakers = holdout_speakers(args.split) if args.split else None
    held = ood_trials(corpus, speakers, args.ood_seconds, args.ood_per_speaker, 4 if args.quick else None)
    common.note(
        f"out of domain: {len(set(held.speakers))} LibriSpeech speakers "
        f"({'holdout of ' + str(args.split) if args.split else 'all, training speakers included'}), "
        f"{len(held.segments)} segments of {args.ood_seconds:g} s, all pairs as trials"
    )
    embedders: list[tuple[str, Callable[[list[np.ndarray]], Any]]] = [
        (label, partial(embed_arrays, common.load_checkpoint(folder, args.device)))
        for label, folder in checkpoints.items()
    ]
    if resemblyzer is not None:
        voice = resemblyzer.VoiceEncoder(args.device, verbose=False)
        embedders.append(
            (
                "resemblyzer",
                lambda wavs: [
                    voice.embed_utterance(resemblyzer.preprocess_wav(w, source_sr=SAMPLE_RATE)) for w in wavs
                ],
            )
        )
    results = []
    phone_line = partial(telephone, sample_rate=SAMPLE_RATE, mu_law=False)  # band-limited, not mu-law coded
    for condition, transform in (("16 kHz", lambda w: w), ("8 kHz round trip", phone_line)):
        trials = SegmentTrials(held.speakers, [transform(w) for w in held.segments])
        for model, embed in embedders:
            start = time.perf_counter()
            scores = trials.pair_scores(np.stack(embed(trials.segments)))
            results.append(
                metrics(model, f"librispeech {condition}", scores, trials.labels, time.perf_counter() - start)
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help="checkpoint folder (repeatable); default: every one in checkpoints/",
    )
    parser.add_argument("--max-trials", type=int, help="score only the first N trials (--quick: 200 unless given)")
    parser.add_argument("--device", help="cpu or cuda, for every model (default: cuda when available)")
    parser.add_argument("--ood", action="store_true", help="also the LibriSpeech 16 kHz / 8 kHz check")
    parser.add_argument("--split", type=Path, help="a run's split.csv: --ood on its holdout speakers only")
    parser.add_argument("--ood-seconds", type=float, default=3.0, help="segment length for --ood")
    parser.add_argument("--ood-per-speaker", type=int, default=4, help="segments per speaker for --ood")
    args = parser.parse_args(argv)
    args.device = str(resolve_device(args.device))
    if args.quick:
        args.max_trials = args.max_trials or 200
        args.ood_seconds, args.ood_per_speaker = 2.0, 2
    common.print_header(NAME, f"device: {args.device}")
    checkpoints = checkpoint_folders(args.checkpoint)
    resemblyzer = common.import_peer("resemblyzer", "resemblyzer")
    results = trial_list(args, checkpoints, resemblyzer)
    if args.ood:
        results += out_of_domain(args, checkpoints, resemblyzer)
    if not results:
        common.note("nothing was scored")
        return 0
    common.print_table(
        ["model", "trials", *common.VERIFICATION_HEADERS, "embed+score s"],
        [
            [r.model, r.trials, *common.verification_cells(r.n_target, r.n_nontarget, r.eer, r.min_dcf)]
            + [common.fmt(r.seconds, 1)]
            for r in results
        ],
    )
    common.print_eer_ratios([(r.model, r.trials, r.eer) for r in results], "trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
