"""``python -m train evaluate``: EER and minDCF of a checkpoint on a trial list, beside it adaptive
s-norm against a cohort, closed-set identification, and the calibration written into the checkpoint.

The trials and their embeddings come from :mod:`train.trials`, the library that validation during
``fit`` and ``calibrate`` share, so that a checkpoint scores the same here as there.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from speakerdemo.encoder import Embedding, SpeakerEncoder
from speakerdemo.gallery import Gallery
from speakerdemo.metrics import compute_eer, compute_min_dcf, top_k_accuracy
from speakerdemo.scoring import Calibration, adaptive_snorm, cosine, pair_cosines

from .checkpoints import atomic_save_pretrained
from .data import DataError, Trial, Utterance, folder_source, read_trials
from .logs import setup_logging
from .trials import embed_clips, trial_embeddings, trial_scores


# ----------------------------------------------------------------------------- metrics
def trial_list_name(path: str) -> str:
    """``corpus/trials.txt``: how a trial list is named in results and in a checkpoint's calibration."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def verification_metrics(scores: np.ndarray, labels: np.ndarray, trials: str) -> dict:
    eer, threshold = compute_eer(scores, labels)
    return {
        "trials": trial_list_name(trials),
        "n_trials": int(len(scores)),
        "eer": eer,
        "eer_threshold": threshold,
        "min_dcf_0.01": compute_min_dcf(scores, labels, 0.01)[0],
        "min_dcf_0.05": compute_min_dcf(scores, labels, 0.05)[0],
    }


def snorm_scores(
    trials: list[Trial],
    emb: dict[str, Embedding],
    cohort_dir: Path,
    encoder: SpeakerEncoder,
    top_n: int,
) -> np.ndarray:
    """Adaptive s-norm of the trials' cosines against a cohort folder (one folder per speaker;
    each speaker's mean embedding is a cohort member), in place of any cohort the checkpoint has."""
    cohort_utts = folder_source(cohort_dir)
    embs = embed_clips(encoder, [u.file for u in cohort_utts], desc="cohort")
    speakers = sorted({u.speaker for u in cohort_utts})
    centres = np.stack(
        [np.mean([e.vector for u, e in zip(cohort_utts, embs) if u.speaker == s], axis=0) for s in speakers]
    )
    a = np.stack([emb[t.a].vector for t in trials])
    b = np.stack([emb[t.b].vector for t in trials])
    return adaptive_snorm(pair_cosines(a, b), cosine(a, centres), cosine(b, centres), top_n)


def identification(encoder: SpeakerEncoder, root: Path, per_speaker: int, seed: int) -> dict:
    """Closed-set identification: enrol ``per_speaker`` clips per speaker, identify the rest."""
    utts = folder_source(root)
    rng = random.Random(seed)
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, []).append(u)
    gallery, tests = Gallery(), []
    for speaker, clips in sorted(by_speaker.items()):
        clips = clips[:]
        rng.shuffle(clips)
        if len(clips) <= per_speaker:
            continue
        enrol = embed_clips(encoder, [c.file for c in clips[:per_speaker]], desc=f"enrol {speaker}")
        gallery.enroll(speaker, [e.vector for e in enrol])
        tests += [(speaker, c) for c in clips[per_speaker:]]
    if len(gallery) < 2:
        raise DataError(f"Identification needs 2+ speakers with more than {per_speaker} clips each.")
    names = gallery.names()
    centres = np.stack([gallery.centroid(n) for n in names])
    embs = embed_clips(encoder, [c.file for _, c in tests], desc="identify")
    scores = cosine(np.stack([e.vector for e in embs]), centres)
    labels = np.array([names.index(s) for s, _ in tests])
    return {
        "speakers": len(names),
        "test_clips": len(tests),
        "enrolment_clips_per_speaker": per_speaker,
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, min(5, len(names))),
    }


# ----------------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``evaluate`` sub-command."""
    parser.description = (
        "Embed every file of a trial list at full length and report EER, its threshold and minDCF "
        "(p_target 0.01 and 0.05); optionally store the calibration in the checkpoint; optionally "
        "closed-set identification on a folder per speaker."
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub repo id")
    parser.add_argument("--trials", help="trial list: 'label path1 path2' per line")
    parser.add_argument("--root", default=".", help="folder the trial paths are relative to")
    parser.add_argument("--cohort", help="folder per speaker used as the adaptive s-norm cohort")
    parser.add_argument("--cohort-top-n", type=int, default=100, help="cohort scores kept per side (AS-Norm)")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="store the EER threshold and FAR/FRR curve in the checkpoint's config.json",
    )
    parser.add_argument("--identify", help="folder per speaker for closed-set identification accuracy")
    parser.add_argument("--enroll-per-speaker", type=int, default=3, help="clips enrolled per speaker (--identify)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--output", help="write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``: the results are printed as JSON (and written to ``--output``)."""
    setup_logging(None)
    encoder = SpeakerEncoder.from_pretrained(args.checkpoint, device=args.device)
    results: dict = {"checkpoint": str(args.checkpoint)}
    if args.trials:
        root = Path(args.root)
        trials = read_trials(Path(args.trials), root)
        embeddings = trial_embeddings(encoder, trials, root)
        scores, labels = trial_scores(encoder, trials, root, embeddings)
        results.update(verification_metrics(scores, labels, args.trials))
        if args.cohort:
            normed = snorm_scores(trials, embeddings, Path(args.cohort), encoder, args.cohort_top_n)
            results["snorm"] = verification_metrics(normed, labels, args.trials)
        if args.calibrate:
            encoder.calibration = Calibration.from_scores(scores, labels, trials=trial_list_name(args.trials))
            atomic_save_pretrained(encoder.cpu(), Path(args.checkpoint))
            results["calibration_written"] = str(args.checkpoint)
    if args.identify:
        results["identification"] = identification(encoder, Path(args.identify), args.enroll_per_speaker, args.seed)
    if len(results) == 1:
        raise SystemExit("Nothing to evaluate: give --trials (with --root) and/or --identify.")
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0
