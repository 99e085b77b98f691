"""What the decision does on speakers the checkpoint never trained on: the "uncertain" band per
condition, and open-set identification as the gallery grows.

**Verify** (LibriSpeech speakers the recipe holds out, test half only, each condition of
``train.condition_trials``; the band is read off the checkpoint's calibration, measured on the dev
half): per condition, the share of same- and different-speaker pairs left "uncertain", and the
false accepts and false rejects of the pairs decided, beside those of the plain threshold.

**Identify**: galleries of 5, 20 and 50 people drawn from the speechocean762 test speakers (each
enrolled with 2 clips, asked with 2 others), the remaining test speakers as strangers (2 clips
each, 50 strangers at most); and on each LibriSpeech condition half of the held-out speakers
enrolled, the other half strangers. Identification rate (an enrolled person's clip answered
with their name) and stranger rejection (a stranger answered "unknown"), at the checkpoint's
threshold as it is and at the open-set threshold for the gallery's size
(:func:`speakerdemo.verdict.open_set_threshold`), averaged over ``--draws`` seeded draws.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks import common
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.conditions import clip_condition, gallery_scorer, kind_shift, pair_conditions
from speakerdemo.encoder import Embedding, SpeakerEncoder, resolve_device
from speakerdemo.gallery import UNKNOWN, Gallery
from speakerdemo.verdict import DIFFERENT, SAME, UNCERTAIN, curve_for, rank, uncertain_band
from train.condition_trials import condition_trials, dev_test_split, held_out
from train.trials import embed_clips

NAME = "verdict"
DEFAULT_CHECKPOINT = common.REPO_ROOT / "checkpoints" / "ecapa-speechocean"
DEFAULT_RECIPE = common.REPO_ROOT / "train" / "configs" / "ecapa-speechocean.yaml"
GALLERY_SIZES = (5, 20, 50)
ENROL_CLIPS = 2
QUERY_CLIPS = 2
MAX_STRANGERS = 50


@dataclass
class VerifyRow:
    condition: str
    pairs: int
    undecided_same: float  # share of same-speaker pairs left uncertain
    undecided_different: float
    far_decided: float  # of the different-speaker pairs decided, the share called "same"
    frr_decided: float  # of the same-speaker pairs decided, the share called "different"
    far_plain: float  # the threshold alone
    frr_plain: float


@dataclass
class IdentifyRow:
    source: str
    enrolled: int
    strangers: int
    found_plain: float
    rejected_plain: float
    found_open_set: float
    rejected_open_set: float


def decisions(encoder: SpeakerEncoder, scores: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Each pair's decision at the checkpoint's threshold, with the band of its kind of clip."""
    out = np.empty(len(scores), dtype=object)
    for kind in np.unique(kinds):
        low, high = uncertain_band(curve_for(encoder.calibration, str(kind)), encoder.threshold)
        at = kinds == kind
        out[at] = np.where(scores[at] >= high, SAME, np.where(scores[at] < low, DIFFERENT, UNCERTAIN))
    return out


def verify_row(
    condition: str, encoder: SpeakerEncoder, embeddings: list[Embedding], first, second, labels
) -> VerifyRow:
    vectors = np.stack([e.vector for e in embeddings])
    kinds = pair_conditions(embeddings, first, second)
    scores = encoder.calibration.adjusted(encoder.pair_scores(vectors, first, second), list(kinds))
    made = decisions(encoder, scores, kinds)
    same, other = labels == 1, labels == 0
    decided = made != UNCERTAIN
    return VerifyRow(
        condition,
        len(labels),
        float(np.mean(made[same] == UNCERTAIN)),
        float(np.mean(made[other] == UNCERTAIN)),
        float(np.mean(made[other & decided] == SAME)),
        float(np.mean(made[same & decided] == DIFFERENT)),
        float(np.mean(scores[other] >= encoder.threshold)),
        float(np.mean(scores[same] < encoder.threshold)),
    )


def identify_row(
    source: str, encoder: SpeakerEncoder, clips: dict[str, list[Embedding]], enrolled_count: int, draws: int
) -> IdentifyRow:
    """Galleries of ``enrolled_count`` people drawn from ``clips`` (speaker -> embeddings)."""
    usable = sorted(s for s, c in clips.items() if len(c) >= ENROL_CLIPS + 1)
    totals = np.zeros(4)
    strangers_seen = 0
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        chosen = list(rng.choice(usable, size=enrolled_count, replace=False))
        strangers = [s for s in usable if s not in chosen][:MAX_STRANGERS]
        gallery = Gallery()
        for s in chosen:
            gallery.enroll(s, [e.vector for e in clips[s][:ENROL_CLIPS]])
        asked = [(s, e) for s in chosen for e in clips[s][ENROL_CLIPS : ENROL_CLIPS + QUERY_CLIPS]]
        strange = [e for s in strangers for e in clips[s][:QUERY_CLIPS]]
        results = []
        for query, truth in [(e, s) for s, e in asked] + [(e, UNKNOWN) for e in strange]:
            scorer = gallery_scorer(encoder, kind_shift(encoder, clip_condition(query)))
            plain = gallery.rank(query.vector, 1, encoder.threshold, scorer).best
            results.append((truth, plain, rank(encoder, query, gallery, top_k=2).best))
        known = [r for r in results if r[0] != UNKNOWN]
        unknown = [r for r in results if r[0] == UNKNOWN]
        totals += [
            np.mean([t == p for t, p, _ in known]),
            np.mean([p == UNKNOWN for _, p, _ in unknown]) if unknown else np.nan,
            np.mean([t == o for t, _, o in known]),
            np.mean([o == UNKNOWN for _, _, o in unknown]) if unknown else np.nan,
        ]
        strangers_seen = len(strangers)
    found_plain, rejected_plain, found_open, rejected_open = (totals / draws).tolist()
    return IdentifyRow(source, enrolled_count, strangers_seen, found_plain, rejected_plain, found_open, rejected_open)


def speechocean_clips(encoder: SpeakerEncoder, corpus: Path) -> dict[str, list[Embedding]]:
    """Embeddings of the test speakers' clips, ENROL_CLIPS + QUERY_CLIPS per speaker (utterance order)."""
    with (corpus / "utterances.csv").open(newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == "test"), key=lambda r: (r["speaker"], r["utt"]))
    chosen: dict[str, list[Path]] = {}
    for r in rows:
        mine = chosen.setdefault(r["speaker"], [])
        if len(mine) < ENROL_CLIPS + QUERY_CLIPS:
            mine.append(corpus / r["path"])
    paths = [p for ps in chosen.values() for p in ps]
    embeddings = iter(embed_clips(encoder, [(SAMPLE_RATE, common.load_wav(p)) for p in paths], desc="speechocean762"))
    return {s: [next(embeddings) for _ in ps] for s, ps in chosen.items()}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="its held-out LibriSpeech speakers")
    parser.add_argument("--draws", type=int, default=10, help="seeded galleries per size (--quick: 2)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--output", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    draws = 2 if args.quick else args.draws
    device = str(resolve_device(args.device))
    common.print_header(NAME, f"device: {device}; checkpoint: {args.checkpoint}")
    encoder = common.load_checkpoint(args.checkpoint, device)
    if encoder.calibration is None:
        common.note("the checkpoint has no calibration: no band, no open-set threshold to measure")
        return 0
    verify_rows: list[VerifyRow] = []
    identify_rows: list[IdentifyRow] = []
    ls = common.data_or_skip(args.data, "librispeech-251")
    if ls is not None:
        utts = held_out(args.recipe, ls)
        _, test = dev_test_split([u.speaker for u in utts])
        for condition, trials in condition_trials(
            [u for u in utts if u.speaker in test], 4 if args.quick else None
        ).items():
            embeddings = embed_clips(encoder, [(SAMPLE_RATE, w) for w in trials.segments], desc=condition)
            verify_rows.append(
                verify_row(f"librispeech {condition}", encoder, embeddings, *trials.pairs, trials.labels)
            )
            by_speaker: dict[str, list[Embedding]] = {}
            for s, e in zip(trials.speakers, embeddings):
                by_speaker.setdefault(s, []).append(e)
            half = sum(len(c) > ENROL_CLIPS for c in by_speaker.values()) // 2
            if half >= 2:
                identify_rows.append(identify_row(f"librispeech {condition}", encoder, by_speaker, half, draws))
    so = common.data_or_skip(args.data, "speechocean762")
    if so is not None:
        clips = speechocean_clips(encoder, so)
        for size in GALLERY_SIZES:
            identify_rows.append(identify_row("speechocean762", encoder, clips, size, draws))
    report(verify_rows, identify_rows)
    if args.output:
        rows = {"verify": [asdict(r) for r in verify_rows], "identify": [asdict(r) for r in identify_rows]}
        args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def report(verify_rows: list[VerifyRow], identify_rows: list[IdentifyRow]) -> None:
    pct = lambda x: f"{100 * x:5.1f}"  # noqa: E731
    print("\nVerify: the uncertain band (test half; % of pairs)")
    print("| condition | pairs | undecided same | undecided different | FAR decided | FRR decided | FAR | FRR |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in verify_rows:
        print(
            f"| {r.condition} | {r.pairs} | {pct(r.undecided_same)} | {pct(r.undecided_different)} | "
            f"{pct(r.far_decided)} | {pct(r.frr_decided)} | {pct(r.far_plain)} | {pct(r.frr_plain)} |"
        )
    print("\nIdentify: enrolled people found / strangers answered unknown (%)")
    print(
        "| source | enrolled | strangers | found (plain) | rejected (plain) | found (open-set) | rejected (open-set) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in identify_rows:
        print(
            f"| {r.source} | {r.enrolled} | {r.strangers} | {pct(r.found_plain)} | {pct(r.rejected_plain)} | "
            f"{pct(r.found_open_set)} | {pct(r.rejected_open_set)} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
