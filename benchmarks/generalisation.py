"""Generalisation suite: each model on voices and conditions unlike its training data, in one run.

Every trial is between speakers the checkpoint never trained on:

- ``speechocean762``: ``trials_test.txt`` (the corpus' test speakers), whole clips.
- ``librispeech 16 kHz``: the LibriSpeech speakers the recipe holds out (``hold_out_speakers`` of
  ``--recipe``, drawn with its seed exactly as ``python -m train fit`` draws them), each speaker's
  recording cut into non-overlapping 3-s segments; every pair of segments is a trial.
- ``librispeech 8 kHz``: the same segments through an 8 kHz phone line (``train.augment.telephone``).
- ``librispeech 1-2 s``: non-overlapping segments of 1 to 2 s (lengths drawn with a fixed seed).
- ``librispeech 5 x 1 s words``: five consecutive 1-s pieces joined by 0.2-0.6 s pauses of quiet
  noise, like a user saying a few words into a microphone.

LibriSpeech clips the app would refuse (silent, or under 0.5 s of detected speech: a pause cut out
of a recording) are left out of every condition, for every model alike.
- ``librispeech noise + reverb``: the 3-s segments in a simulated room (pyroomacoustics) with
  coloured noise at 5-15 dB SNR (``train.augment``'s own functions, seeded).

Per model and condition: EER, minDCF (p_target 0.01), and FAR / FRR **at the threshold a user
meets**: for a checkpoint its calibrated threshold (config.json); for Resemblyzer, which ships no
threshold, its EER threshold on speechocean762 measured in this run (calibrated the way our
checkpoints are). Checkpoints embed as ``python -m train evaluate`` does (whole clip, no speech
gate); Resemblyzer as ``embed_utterance(preprocess_wav(wav))``. Scores are cosines.
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
from speakerdemo.audio import MIN_SPEECH_SECONDS, SAMPLE_RATE, AudioError, load_audio
from speakerdemo.encoder import resolve_device
from speakerdemo.metrics import compute_eer, compute_min_dcf, det_curve
from speakerdemo.scoring import cosine
from train.augment import coloured_noise, mix_at_snr, simulate_rirs, telephone
from train.config import load_config
from train.data import read_trials
from train.evaluate import SegmentTrials, embed_arrays
from train.prepare import load_source

NAME = "generalisation"
DEFAULT_RECIPE = common.REPO_ROOT / "train" / "configs" / "ecapa-speechocean.yaml"
SEGMENT_SECONDS = 3.0
SHORT_SECONDS = (1.0, 2.0)
WORDS, WORD_SECONDS, PAUSE_SECONDS = 5, 1.0, (0.2, 0.6)
PAUSE_LEVEL = 1e-3  # pause noise RMS relative to the speech's: -60 dB, a quiet room
SNR_DB = (5.0, 15.0)
ROOMS = 50
SEED = 0

Embedder = Callable[[list[np.ndarray]], np.ndarray]


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


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) when accepting ``score >= threshold``, read off the exact DET curve."""
    points, far, frr = det_curve(scores, labels)
    i = min(int(np.searchsorted(points, threshold, side="left")), len(points) - 1)
    return float(far[i]), float(frr[i])


def row(condition: str, model: str, scores: np.ndarray, labels: np.ndarray, threshold: float | None) -> Row:
    """The metrics of one model on one condition; no FAR/FRR without a threshold."""
    far, frr = rates_at(scores, labels, threshold) if threshold is not None else (None, None)
    eer = compute_eer(scores, labels)[0]
    min_dcf = compute_min_dcf(scores, labels, 0.01)[0]
    return Row(condition, model, int(labels.sum()), int((1 - labels).sum()), eer, min_dcf, threshold, far, frr)


# ----------------------------------------------------------------------------- conditions
def held_out_speakers(recipe: Path, corpus: Path) -> set[str]:
    """The speakers of ``corpus`` that ``recipe`` keeps out of training, drawn as ``fit`` draws them."""
    cfg = load_config(recipe, [])
    for spec in cfg["data"]["sources"]:
        if spec.get("hold_out_speakers") and Path(spec["root"]).resolve() == corpus.resolve():
            return {u.speaker for u in load_source(spec, cfg["seed"])[1]}
    sys.exit(f"error: {recipe} holds out no speakers of {corpus}")


def accepted(wav: np.ndarray) -> bool:
    """Whether the app would score this clip: not silent, at least MIN_SPEECH_SECONDS of speech.

    A 1-s piece of a recording can be a pause; the app answers such a clip with an error, not a
    score, so it is no trial of what users meet.
    """
    try:
        load_audio((SAMPLE_RATE, wav), SAMPLE_RATE, max_seconds=None, min_speech_seconds=MIN_SPEECH_SECONDS)
    except AudioError:
        return False
    return True


def cut(wav: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    """Consecutive, non-overlapping pieces of ``wav`` of the given lengths, as many as fit."""
    pieces, start = [], 0
    for n in lengths:
        if start + n > len(wav):
            break
        pieces.append(wav[start : start + n])
        start += n
    return pieces


def words(wav: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Clips of ``WORDS`` consecutive 1-s pieces of ``wav`` joined by pauses of quiet noise."""
    piece = int(WORD_SECONDS * SAMPLE_RATE)
    pieces = cut(wav, [piece] * (len(wav) // piece))
    level = PAUSE_LEVEL * float(np.sqrt(np.mean(wav**2)))
    clips = []
    for first in range(0, len(pieces) - WORDS + 1, WORDS):
        parts = [pieces[first]]
        for p in pieces[first + 1 : first + WORDS]:
            pause = int(rng.uniform(*PAUSE_SECONDS) * SAMPLE_RATE)
            parts += [(level * rng.standard_normal(pause)).astype(np.float32), p]
        clips.append(np.concatenate(parts))
    return clips


def noisy_reverberant(segments: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each segment in a simulated room, plus coloured noise at a random SNR in ``SNR_DB``."""
    rng = np.random.default_rng(seed)
    rirs = simulate_rirs(ROOMS, SAMPLE_RATE, seed)
    out = []
    for wav in segments:
        rir = rirs[int(rng.integers(len(rirs)))]
        delay = int(np.argmax(np.abs(rir)))
        wet = np.convolve(wav, rir)[delay : delay + len(wav)]
        noisy = mix_at_snr(wet, coloured_noise(len(wav), rng), rng.uniform(*SNR_DB))
        out.append((0.5 * noisy / max(float(np.max(np.abs(noisy))), 1e-6)).astype(np.float32))
    return out


def librispeech_conditions(corpus: Path, speakers: set[str], max_speakers: int | None) -> dict[str, SegmentTrials]:
    """The LibriSpeech conditions of the suite, on the recordings of ``speakers``."""
    rng = np.random.default_rng(SEED)
    rows = [r for r in common.read_manifest(corpus) if r["speaker"] in speakers][:max_speakers]
    segment = int(SEGMENT_SECONDS * SAMPLE_RATE)
    kinds: dict[str, SegmentTrials] = {k: SegmentTrials([], []) for k in ("3 s", "1-2 s", "words")}
    for r in rows:
        wav = common.load_wav(corpus / r["path"])
        short = [int(rng.uniform(*SHORT_SECONDS) * SAMPLE_RATE) for _ in range(len(wav) // SAMPLE_RATE)]
        for kind, clips in (
            ("3 s", cut(wav, [segment] * (len(wav) // segment))),
            ("1-2 s", cut(wav, short)),
            ("words", words(wav, rng)),
        ):
            clips = [c for c in clips if accepted(c)]
            kinds[kind].speakers.extend([r["speaker"]] * len(clips))
            kinds[kind].segments.extend(clips)
    base = kinds["3 s"]
    phone = [telephone(w, SAMPLE_RATE, mu_law=False) for w in base.segments]
    return {
        "librispeech 16 kHz": base,
        "librispeech 8 kHz": SegmentTrials(base.speakers, phone),
        "librispeech 1-2 s": kinds["1-2 s"],
        f"librispeech {WORDS} x 1 s words": kinds["words"],
        "librispeech noise + reverb": SegmentTrials(base.speakers, noisy_reverberant(base.segments, SEED)),
    }


def speechocean(corpus: Path, max_trials: int | None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Every file of the trial list (audio), the index of each trial's two files, and its label."""
    trials = read_trials(corpus / "trials_test.txt", corpus)[:max_trials]
    files = sorted({t.a for t in trials} | {t.b for t in trials})
    index = {f: i for i, f in enumerate(files)}
    first = np.array([index[t.a] for t in trials])
    second = np.array([index[t.b] for t in trials])
    return [common.load_wav(corpus / f) for f in files], first, second, np.array([t.label for t in trials])


# ----------------------------------------------------------------------------- models
def embedders(args: object, device: str) -> dict[str, tuple[Embedder, float | None]]:
    """Each model's embedder and shipped threshold (None: measured on speechocean762 in this run)."""
    models: dict[str, tuple[Embedder, float | None]] = {}
    for label, folder in checkpoint_folders(args.checkpoint).items():
        encoder = common.load_checkpoint(folder, device)
        models[label] = (partial(embed_arrays, encoder), encoder.threshold)
    resemblyzer = common.import_peer("resemblyzer", "resemblyzer")
    if resemblyzer is not None:
        voice = resemblyzer.VoiceEncoder(device, verbose=False)
        models["resemblyzer"] = (
            lambda wavs: np.stack(
                [voice.embed_utterance(resemblyzer.preprocess_wav(w, source_sr=SAMPLE_RATE)) for w in wavs]
            ),
            None,
        )
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
    models = embedders(args, device)
    rows: list[Row] = []
    so = common.data_or_skip(args.data, "speechocean762")
    if so is not None:
        wavs, first, second, labels = speechocean(so, args.max_trials)
        common.note(f"speechocean762: {len(labels)} trials over {len(wavs)} files")
        for model, (embed, threshold) in list(models.items()):
            start = time.perf_counter()
            vectors = embed(wavs)
            scores = cosine(vectors, vectors)[first, second]
            if threshold is None:
                threshold = compute_eer(scores, labels)[1]
                models[model] = (embed, threshold)
            rows.append(row("speechocean762", model, scores, labels, threshold))
            common.note(f"{model}: speechocean762 scored in {time.perf_counter() - start:.0f} s")
    ls = common.data_or_skip(args.data, "librispeech-251")
    if ls is not None:
        speakers = held_out_speakers(args.recipe, ls)
        for condition, trials in librispeech_conditions(ls, speakers, 4 if args.quick else None).items():
            labels = trials.labels
            common.note(
                f"{condition}: {len(set(trials.speakers))} speakers, {len(trials.segments)} clips, "
                f"{int(labels.sum())} target and {int((1 - labels).sum())} non-target pairs"
            )
            for model, (embed, threshold) in models.items():
                scores = trials.pair_scores(embed(trials.segments))
                rows.append(row(condition, model, scores, labels, threshold))
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
