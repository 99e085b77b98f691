"""What the decision does on speakers the checkpoint never trained on: the "uncertain" band per
condition, calibration on the user's own people, and open-set identification as the gallery grows.

Sets: the LibriSpeech speakers the recipe holds out in each condition of
``train.condition_trials``, and two sets of words said into people's own microphones, the kind
of recording the shipped model never trained on: ``speechcommands`` (the first SC_SPEAKERS of the
sorted speakers with WORDS_PER_CLIP * SC_CLIPS words or more; each clip five 1-s English command
words of one speaker joined by pauses) and ``dspspeech20`` (the first DSP_SPEAKERS speakers;
each clip three 2-s Mandarin or English words). Every set's speakers are split in halves
(``train.condition_trials.dev_test_split``): results are on the test half.

**Verify**: per set, the share of same- and different-speaker pairs left "uncertain" (the band is
read off the checkpoint's calibration), the false accepts and false rejects of the pairs decided,
beside those of the plain threshold; then **adapted**: :meth:`SpeakerEncoder.adapt` on the dev
half's speakers (ADAPT_CLIPS clips each, target 5 % false accepts) and the test half's pairs
judged at the adapted threshold.

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
from speakerdemo.verdict import DIFFERENT, SAME, UNCERTAIN, curve_for, decision_in, rank, uncertain_band
from train.condition_trials import condition_trials, dev_test_split, held_out
from train.trials import embed_clips

NAME = "verdict"
DEFAULT_CHECKPOINT = common.REPO_ROOT / "checkpoints" / "ecapa-speechocean"
DEFAULT_RECIPE = common.REPO_ROOT / "train" / "configs" / "ecapa-speechocean.yaml"
GALLERY_SIZES = (5, 20, 50)
ENROL_CLIPS = 2
QUERY_CLIPS = 2
MAX_STRANGERS = 50
ADAPT_CLIPS = 3
SC_SPEAKERS, WORDS_PER_CLIP, SC_CLIPS = 60, 5, 2
DSP_SPEAKERS, DSP_WORDS, DSP_CLIPS = 10, 3, 4


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
class AdaptRow:
    condition: str
    people: int  # dev-half people adapted on
    far: float  # test-half different-speaker pairs accepted at the adapted threshold
    frr: float
    far_interval: tuple[float, float]  # what the adaptation itself expected (bootstrap over its people)


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
        band = uncertain_band(curve_for(encoder.calibration, str(kind)), encoder.threshold)
        at = np.flatnonzero(kinds == kind)
        out[at] = [decision_in(band, s) for s in scores[at]]
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


def speechocean_clips(encoder: SpeakerEncoder, corpus: Path, speakers: int | None = None) -> dict[str, list[Embedding]]:
    """Embeddings of the (first ``speakers``) test speakers' clips, ENROL_CLIPS + QUERY_CLIPS per
    speaker (utterance order)."""
    with (corpus / "utterances.csv").open(newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == "test"), key=lambda r: (r["speaker"], r["utt"]))
    chosen: dict[str, list[Path]] = {}
    for r in rows:
        if speakers is not None and r["speaker"] not in chosen and len(chosen) >= speakers:
            continue
        mine = chosen.setdefault(r["speaker"], [])
        if len(mine) < ENROL_CLIPS + QUERY_CLIPS:
            mine.append(corpus / r["path"])
    paths = [p for ps in chosen.values() for p in ps]
    embeddings = iter(embed_clips(encoder, [(SAMPLE_RATE, common.load_wav(p)) for p in paths], desc="speechocean762"))
    return {s: [next(embeddings) for _ in ps] for s, ps in chosen.items()}


def word_clips(
    corpus: Path, speakers: int, words: int, clips: int, seed: int = 0
) -> tuple[list[str], list[np.ndarray]]:
    """(speaker of each clip, clips): ``clips`` clips per speaker, each ``words`` of their word
    recordings joined by 0.2-0.6 s of quiet, for the first ``speakers`` sorted speakers with enough."""
    with (corpus / "utterances.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_speaker: dict[str, list[Path]] = {}
    for r in rows:
        by_speaker.setdefault(r["speaker"], []).append(corpus / r["path"])
    chosen = [s for s in sorted(by_speaker) if len(by_speaker[s]) >= words * clips][:speakers]
    rng = np.random.default_rng(seed)
    owners, joined = [], []
    for speaker in chosen:
        picked = rng.choice(len(by_speaker[speaker]), size=words * clips, replace=False)
        for k in range(clips):
            parts = []
            for i in picked[k * words : (k + 1) * words]:
                parts += [
                    common.load_wav(by_speaker[speaker][i]),
                    1e-4 * rng.standard_normal(int(rng.uniform(0.2, 0.6) * SAMPLE_RATE)),
                ]
            owners.append(speaker)
            joined.append(np.concatenate(parts[:-1]).astype(np.float32))
    return owners, joined


def adapted_row(name: str, encoder: SpeakerEncoder, speakers: list[str], embeddings: list[Embedding]) -> AdaptRow:
    """Adapt on the dev half's speakers, judge every pair of the test half's clips."""
    dev, test = dev_test_split(speakers)
    people: dict[str, list[Embedding]] = {}
    for s, e in zip(speakers, embeddings):
        if s in dev and len(people.setdefault(s, [])) < ADAPT_CLIPS:
            people[s].append(e)
    adapted = encoder.adapt({s: c for s, c in people.items() if len(c) >= 2})
    chosen = [i for i, s in enumerate(speakers) if s in test]
    first, second = np.triu_indices(len(chosen), 1)
    owners = np.array(speakers)[chosen]
    labels = owners[first] == owners[second]
    vectors = np.stack([embeddings[i].vector for i in chosen])
    scores = adapted.pair_scores(vectors, first, second)
    accepted = scores >= adapted.threshold
    return AdaptRow(
        name,
        adapted.adaptation.people,
        float(np.mean(accepted[~labels])),
        float(np.mean(~accepted[labels])),
        adapted.adaptation.far_interval,
    )


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
    sets: dict[str, tuple[list[str], list[np.ndarray]]] = {}
    ls = common.data_or_skip(args.data, "librispeech-251")
    if ls is not None:
        utts = held_out(args.recipe, ls)
        for condition, trials in condition_trials(utts, 8 if args.quick else None).items():
            sets[f"librispeech {condition}"] = (trials.speakers, trials.segments)
    for corpus, speakers, words, clips in (
        ("speechcommands-test", SC_SPEAKERS, WORDS_PER_CLIP, SC_CLIPS),
        ("dspspeech20", DSP_SPEAKERS, DSP_WORDS, DSP_CLIPS),
    ):
        root = common.data_or_skip(args.data, corpus)
        if root is not None:
            sets[corpus.removesuffix("-test")] = word_clips(root, 8 if args.quick else speakers, words, clips)
    verify_rows: list[VerifyRow] = []
    adapt_rows: list[AdaptRow] = []
    identify_rows: list[IdentifyRow] = []
    for name, (speakers, wavs) in sets.items():
        embeddings = embed_clips(encoder, [(SAMPLE_RATE, w) for w in wavs], desc=name)
        _, test = dev_test_split(speakers)
        chosen = [i for i, s in enumerate(speakers) if s in test]
        first, second = np.triu_indices(len(chosen), 1)
        owners = np.array(speakers)[chosen]
        labels = (owners[first] == owners[second]).astype(int)
        verify_rows.append(verify_row(name, encoder, [embeddings[i] for i in chosen], first, second, labels))
        adapt_rows.append(adapted_row(name, encoder, speakers, embeddings))
        by_speaker: dict[str, list[Embedding]] = {}
        for i in chosen:
            by_speaker.setdefault(speakers[i], []).append(embeddings[i])
        half = sum(len(c) > ENROL_CLIPS for c in by_speaker.values()) // 2
        if half >= 2:
            identify_rows.append(identify_row(name, encoder, by_speaker, half, draws))
    so = common.data_or_skip(args.data, "speechocean762")
    if so is not None:
        clips = speechocean_clips(encoder, so, 30 if args.quick else None)
        for size in GALLERY_SIZES[:2] if args.quick else GALLERY_SIZES:
            identify_rows.append(identify_row("speechocean762", encoder, clips, size, draws))
    report(verify_rows, adapt_rows, identify_rows)
    if args.output:
        rows = {
            "verify": [asdict(r) for r in verify_rows],
            "adapted": [asdict(r) for r in adapt_rows],
            "identify": [asdict(r) for r in identify_rows],
        }
        args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def report(verify_rows: list[VerifyRow], adapt_rows: list[AdaptRow], identify_rows: list[IdentifyRow]) -> None:
    pct = lambda x: f"{100 * x:5.1f}"  # noqa: E731
    print("\nVerify: the uncertain band (test half; % of pairs)")
    print("| condition | pairs | undecided same | undecided different | FAR decided | FRR decided | FAR | FRR |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in verify_rows:
        print(
            f"| {r.condition} | {r.pairs} | {pct(r.undecided_same)} | {pct(r.undecided_different)} | "
            f"{pct(r.far_decided)} | {pct(r.frr_decided)} | {pct(r.far_plain)} | {pct(r.frr_plain)} |"
        )
    print("\nAdapted on the dev half's people (target: 5 % false accepts); the test half's pairs (%)")
    print("| set | people | FAR | FRR | FAR 90 % interval (bootstrap over the dev people) |")
    print("|---|---:|---:|---:|---|")
    for r in adapt_rows:
        print(
            f"| {r.condition} | {r.people} | {pct(r.far)} | {pct(r.frr)} | "
            f"{pct(r.far_interval[0])}–{pct(r.far_interval[1])} |"
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
