"""``python -m train calibrate``: one decision threshold for every recording condition, stored in
the checkpoint with what it means in each.

With ``--cohort`` (how the shipped checkpoint is calibrated) it first builds a score cohort from the
recipe's own training speakers, at most two clips of each in each recording condition
(:mod:`train.cohort`), and stores it in the checkpoint (``cohort.safetensors``,
:mod:`speakerdemo.cohort`): a pair's score is then its cosine normalised against the cohort
(adaptive s-norm), under which strangers score alike in every condition. The dev half of the
speakers the recipe holds out (:mod:`train.condition_trials`: never trained on, never in the
suite's FAR/FRR) is cut into the conditions of :mod:`speakerdemo.conditions`; the cohort's floors
are set at the 10th percentile of those dev clips' cohort statistics
(:meth:`speakerdemo.cohort.Cohort.with_floors`), and the threshold is the lowest at which every
condition accepts at most ``--max-far`` of its different-speaker pairs
(:meth:`speakerdemo.scoring.Calibration.across_conditions`, every pair counted under one kind, so
no score shift is kept). The checkpoint keeps the pooled curves and each condition's own, so that
the app can say what the threshold means for clips like the user's.

Without ``--cohort`` the scores stay plain cosines, any cohort the checkpoint had is dropped, and
the threshold comes with a score shift per kind of clip the app detects: the method of the
checkpoints calibrated before the cohort, which still load and score as they did.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.conditions import CONDITIONS, WIDEBAND, pair_conditions
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.metrics import compute_eer, error_rates
from speakerdemo.scoring import Calibration

from .checkpoints import atomic_save_pretrained
from .cohort import build_cohort
from .condition_trials import condition_trials, dev_test_split, held_out
from .config import ConfigError
from .data import DataError
from .logs import setup_logging
from .trials import embed_clips

MAX_FAR = 0.05  # leaves room under the 10 % a demo may let through on speakers it has not seen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``calibrate`` sub-command."""
    parser.description = __doc__.split("\n\n")[0].replace("``", "")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder to calibrate (written in place)")
    parser.add_argument("--recipe", required=True, type=Path, help="the checkpoint's training recipe (YAML)")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path("../shared/data/librispeech-251"),
        help="the corpus whose held-out speakers are the dev set (a source of the recipe)",
    )
    parser.add_argument(
        "--max-far", type=float, default=MAX_FAR, help="false accepts allowed in every condition (default 0.05)"
    )
    parser.add_argument(
        "--binding",
        nargs="+",
        choices=CONDITIONS,
        help="conditions whose false accepts set the threshold (default: all; the others are measured only)",
    )
    parser.add_argument(
        "--cohort",
        action="store_true",
        help="normalise scores against a cohort of the recipe's training speakers in every condition "
        "(stored in the checkpoint) and keep one threshold without shifts",
    )
    parser.add_argument("--max-speakers", type=int, help="only the first N dev speakers (a quick look)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--output", help="write the per-condition results as JSON here")


def run(args: argparse.Namespace) -> int:
    """Run ``calibrate``: per-condition results printed as JSON; the checkpoint rewritten atomically."""
    setup_logging(None)
    if not 0.0 < args.max_far < 1.0:
        raise ConfigError(f"--max-far must lie between 0 and 1, got {args.max_far}.")
    encoder = SpeakerEncoder.from_pretrained(args.checkpoint, device=args.device)
    encoder.cohort = None
    utts = held_out(args.recipe, args.corpus)
    dev, _ = dev_test_split([u.speaker for u in utts])
    conditions = condition_trials([u for u in utts if u.speaker in dev], args.max_speakers)
    speakers = len({s for trials in conditions.values() for s in trials.speakers})
    embedded = {
        name: embed_clips(encoder, [(SAMPLE_RATE, w) for w in trials.segments], desc=name)
        for name, trials in conditions.items()
    }
    vectors = {name: np.stack([e.vector for e in embeddings]) for name, embeddings in embedded.items()}
    if args.cohort:
        encoder.cohort = build_cohort(encoder, args.recipe).with_floors(np.concatenate(list(vectors.values())))
    scored, detected = {}, {}
    for name, trials in conditions.items():
        first, second = trials.pairs
        detected[name] = pair_conditions(embedded[name], first, second)
        # With a cohort every pair votes for the one threshold: normalised, no kind needs a shift.
        kinds = np.full(len(first), WIDEBAND) if args.cohort else detected[name]
        scored[name] = (encoder.pair_scores(vectors[name], first, second), trials.labels, kinds)
    try:
        calibration = encoder.calibration = Calibration.across_conditions(
            scored,
            WIDEBAND,
            args.max_far,
            trials=f"{speakers} {args.corpus.name} dev speakers, {len(scored)} conditions",
        )
    except ValueError as err:
        raise DataError(f"Too few dev trials to calibrate on ({speakers} speakers): {err}") from None
    results = {
        "checkpoint": str(args.checkpoint),
        "threshold": calibration.threshold,
        "shifts": calibration.shifts,
        "rule": calibration.rule,
        "cohort": encoder.cohort.config() if encoder.cohort is not None else None,
        "pooled": dict(zip(("far", "frr"), calibration.rates_at(calibration.threshold))),
        "conditions": {},
    }
    for name, (scores, labels, kinds) in scored.items():
        far, frr = error_rates(calibration.adjusted(scores, list(kinds)), labels, calibration.threshold)
        results["conditions"][name] = {
            "target": int(labels.sum()),
            "nontarget": int((1 - labels).sum()),
            "kinds": {str(k): int(n) for k, n in zip(*np.unique(detected[name], return_counts=True))},
            "eer": compute_eer(scores, labels)[0],
            "far": far,
            "frr": frr,
        }
    atomic_save_pretrained(encoder.cpu(), Path(args.checkpoint))
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0
