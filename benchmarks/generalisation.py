"""Generalisation suite: each model on voices and conditions unlike its training data, in one run.

Every trial is between speakers the checkpoint never trained on:

- ``speechocean762``: ``trials_test.txt`` (the corpus' test speakers), whole clips.
- ``librispeech <condition>``: the LibriSpeech speakers the recipe holds out (``hold_out_speakers``
  of ``--recipe``, drawn with its seed exactly as ``python -m train fit`` draws them), in each
  recording condition of ``train.condition_trials`` (16 kHz 3-s segments, the same through an
  8 kHz phone line, 1-2 s segments, five 1-s words with pauses, noise + reverberation).

Per model and condition: EER and minDCF (p_target 0.01) on all pairs of the held-out speakers
(no threshold involved), and FAR / FRR **at the threshold a user meets**, on the pairs of the test
half of them only (``train.condition_trials.dev_test_split``: ``python -m train calibrate`` chooses
a checkpoint's threshold on the dev half). The threshold is a checkpoint's own (config.json); for
Resemblyzer, which ships no threshold, its EER threshold on speechocean762 measured in this run.
Checkpoints embed as ``python -m train evaluate`` does (whole clip, no speech gate) and score as
the app does: the cosine, normalised against the checkpoint's cohort where it has one, less the
checkpoint's shift for the pair's kind of clip as the app detects it (phone band, short; none for
a checkpoint calibrated without shifts or with a cohort). Resemblyzer embeds as
``embed_utterance(preprocess_wav(wav))`` and scores by cosine.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.accuracy import checkpoint_folders
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.conditions import pair_conditions
from speakerdemo.encoder import SpeakerEncoder, resolve_device
from speakerdemo.metrics import compute_eer, compute_min_dcf, error_rates
from speakerdemo.scoring import cosine
from train.condition_trials import condition_trials, dev_test_split, held_out
from train.data import read_trials
from train.trials import embed_clips

NAME = "generalisation"
DEFAULT_RECIPE = common.REPO_ROOT / "train" / "configs" / "ecapa-speechocean.yaml"

# A model's scores of the pairs (first[i], second[i]) of a list of clips.
Scorer = Callable[[list[np.ndarray], np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Row:
    """One model on one condition."""

    condition: str
    model: str
    n_target: int
    n_nontarget: int
    eer: float
    min_dcf: float
    threshold: float | None
    far: float | None
    frr: float | None


def row(
    condition: str,
    model: str,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float | None,
    tested: np.ndarray | None = None,
) -> Row:
    """The metrics of one model on one condition; FAR/FRR only with a threshold, and only on the
    ``tested`` trials (all by default)."""
    at = slice(None) if tested is None else tested
    far, frr = error_rates(scores[at], labels[at], threshold) if threshold is not None else (None, None)
    eer = compute_eer(scores, labels)[0]
    min_dcf = compute_min_dcf(scores, labels, 0.01)[0]
    return Row(condition, model, int(labels.sum()), int((1 - labels).sum()), eer, min_dcf, threshold, far, frr)


# ----------------------------------------------------------------------------- conditions
def speechocean(corpus: Path, max_trials: int | None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Every file of the trial list (audio), the index of each trial's two files, and its label."""
    trials = read_trials(corpus / "trials_test.txt", corpus)[:max_trials]
    files = sorted({t.a for t in trials} | {t.b for t in trials})
    index = {f: i for i, f in enumerate(files)}
    first = np.array([index[t.a] for t in trials])
    second = np.array([index[t.b] for t in trials])
    return [common.load_wav(corpus / f) for f in files], first, second, np.array([t.label for t in trials])


# ----------------------------------------------------------------------------- models
def checkpoint_scorer(encoder: SpeakerEncoder) -> Scorer:
    """Scores as the app makes them: each pair's score (the cosine, normalised against the
    checkpoint's cohort when it has one) less the checkpoint's shift for the pair's kind of clip as
    the app detects it (:func:`speakerdemo.conditions.pair_conditions`)."""

    def score(wavs: list[np.ndarray], first: np.ndarray, second: np.ndarray) -> np.ndarray:
        embeddings = embed_clips(encoder, [(SAMPLE_RATE, w) for w in wavs], desc="clips")
        scores = encoder.pair_scores(np.stack([e.vector for e in embeddings]), first, second)
        if encoder.calibration is None:
            return scores
        return encoder.calibration.adjusted(scores, list(pair_conditions(embeddings, first, second)))

    return score


def scorers(args: object, device: str) -> dict[str, tuple[Scorer, float | None]]:
    """Each model's scorer and shipped threshold (None: measured on speechocean762 in this run)."""
    models: dict[str, tuple[Scorer, float | None]] = {}
    for label, folder in checkpoint_folders(args.checkpoint).items():
        encoder = common.load_checkpoint(folder, device)
        models[label] = (checkpoint_scorer(encoder), encoder.threshold)
    resemblyzer = common.import_peer("resemblyzer", "resemblyzer")
    if resemblyzer is not None:
        voice = resemblyzer.VoiceEncoder(device, verbose=False)

        def score(wavs: list[np.ndarray], first: np.ndarray, second: np.ndarray) -> np.ndarray:
            vectors = np.stack(
                [voice.embed_utterance(resemblyzer.preprocess_wav(w, source_sr=SAMPLE_RATE)) for w in wavs]
            )
            return cosine(vectors, vectors)[first, second]

        models["resemblyzer"] = (score, None)
    return models


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument(
        "--checkpoint", type=Path, action="append", help="checkpoint folder (repeatable); default: all in checkpoints/"
    )
    parser.add_argument(
        "--recipe", type=Path, default=DEFAULT_RECIPE, help="recipe whose held-out LibriSpeech speakers are tested"
    )
    parser.add_argument("--max-trials", type=int, help="speechocean762: only the first N trials (--quick: 200)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--output", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    device = str(resolve_device(args.device))
    if args.quick:
        args.max_trials = args.max_trials or 200
    common.print_header(NAME, f"device: {device}")
    models = scorers(args, device)
    rows: list[Row] = []
    so = common.data_or_skip(args.data, "speechocean762")
    if so is not None:
        wavs, first, second, labels = speechocean(so, args.max_trials)
        common.note(f"speechocean762: {len(labels)} trials over {len(wavs)} files")
        for model, (score, threshold) in list(models.items()):
            start = time.perf_counter()
            scores = score(wavs, first, second)
            if threshold is None:
                threshold = compute_eer(scores, labels)[1]
                models[model] = (score, threshold)
            rows.append(row("speechocean762", model, scores, labels, threshold))
            common.note(f"{model}: speechocean762 scored in {time.perf_counter() - start:.0f} s")
    ls = common.data_or_skip(args.data, "librispeech-251")
    if ls is not None:
        utts = held_out(args.recipe, ls)
        _, test = dev_test_split([u.speaker for u in utts])
        for condition, trials in condition_trials(utts, 4 if args.quick else None).items():
            labels, tested = trials.labels, trials.pairs_within(test)
            common.note(
                f"librispeech {condition}: {len(set(trials.speakers))} speakers, {len(trials.segments)} clips, "
                f"{int(labels.sum())} target and {int((1 - labels).sum())} non-target pairs; FAR/FRR on the "
                f"{int(labels[tested].sum())} target and {int((1 - labels[tested]).sum())} non-target pairs "
                f"of the {len(test & set(trials.speakers))} test-half speakers"
            )
            for model, (score, threshold) in models.items():
                scores = score(trials.segments, *trials.pairs)
                rows.append(row(f"librispeech {condition}", model, scores, labels, threshold, tested))
    if not rows:
        common.note("nothing was scored")
        return 0
    report(rows)
    if args.output:
        args.output.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


def report(rows: list[Row]) -> None:
    """The table, then each checkpoint's EER over Resemblyzer's per condition."""
    percent = partial(common.fmt, digits=1)
    common.print_table(
        ["condition", "model", *common.VERIFICATION_HEADERS, "threshold", "FAR %", "FRR %"],
        [
            [r.condition, r.model, *common.verification_cells(r.n_target, r.n_nontarget, r.eer, r.min_dcf)]
            + [common.fmt(r.threshold, 3), percent(None if r.far is None else 100 * r.far)]
            + [percent(None if r.frr is None else 100 * r.frr)]
            for r in rows
        ],
    )
    common.print_eer_ratios([(r.model, r.condition, r.eer) for r in rows], "condition")


if __name__ == "__main__":
    sys.exit(main())
