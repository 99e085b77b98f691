"""Diarization: DER of ``speakerdemo.diarize`` on built conversations of unseen speakers, and its speed.

Conversations (fixed and seeded): 2-4 speakers, each conversation from one corpus, alternating
between speechocean762 *test*-split speakers and the LibriSpeech speakers the recipe holds out
(``--recipe``), neither ever trained on. Both speaker sets are split in halves as
``train.condition_trials.dev_test_split`` splits them (the threshold was calibrated on the
LibriSpeech dev half): ``--split dev`` builds conversations of the dev halves with seed 1, for
tuning; ``--split test`` (the default, reported) of the test halves with seed 0. Every speaker
speaks at least once; the next speaker is drawn at random, never the one who just spoke. A turn is
the next 1-10 s (uniform) of that speaker's material: speechocean762 utterances with their edge
silence trimmed (``librosa.effects.trim``, 30 dB) and joined, or a LibriSpeech recording after
its first ``ENROL_SECONDS``. Turns are separated by 0.2-1.0 s of quiet noise (-60 dB re the
speech, as ``train.condition_trials.words`` pauses). Enrolment clips never come from the
conversation: two other utterances of the speaker (speechocean762) or the first
``ENROL_SECONDS`` of the recording (LibriSpeech). The reference is each turn's span.

Scored two ways, pooled over conversations with ``pyannote.metrics`` (collar 0.5 s, i.e. +-0.25 s
around reference boundaries, overlap skipped, the conversation's whole length as UEM):

- ``not enrolled``: ``diarize`` with an empty gallery; ``DiarizationErrorRate``, which maps
  hypothesis clusters to reference speakers optimally.
- ``enrolled``: every speaker of the conversation enrolled first (names = speaker ids);
  ``IdentificationErrorRate``: no mapping, a segment counts as correct only under the right name.

Conditions: clean 16 kHz; the same conversations and enrolment clips through an 8 kHz phone line
(``train.augment.telephone``, no mu-law); and with coloured noise (``train.augment.coloured_noise``,
``mix_at_snr``) at 5-15 dB SNR over the whole conversation, gaps included (enrolment clips noised
alike). ``speakers right %``: conversations whose number of hypothesis labels is the true number.

Timing: one ``diarize`` of a 10-minute recording (the clean test conversations joined) against
one ``SpeakerEncoder.embed`` of the same audio, medians of ``--repeats`` interleaved calls with
``--threads`` torch threads; real-time factor = seconds taken / seconds of audio.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import common
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.diarize import (
    BRIDGE_SECONDS,
    MIN_SEGMENT_SECONDS,
    WINDOW_HOP_SECONDS,
    WINDOW_SECONDS,
    Diarization,
    Segment,
    diarize,
)
from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.gallery import Gallery

NAME = "diarization"
DEFAULT_RECIPE = common.REPO_ROOT / "train" / "configs" / "ecapa-speechocean.yaml"
SEEDS = {"test": 0, "dev": 1}
CONVERSATIONS = 30
SPEAKERS = (2, 4)
TURN_SECONDS = (1.0, 10.0)
GAP_SECONDS = (0.2, 1.0)
MAX_TURNS = 16
ENROL_UTTERANCES = 2  # speechocean762: utterances per speaker kept for enrolment
ENROL_SECONDS = 4.0  # LibriSpeech: the start of the recording kept for enrolment
GAP_LEVEL = 1e-3  # pause noise RMS relative to the speech's (-60 dB)
TRIM_DB = 30.0
SNR_DB = (5.0, 15.0)
COLLAR = 0.5
TIMING_SECONDS = 600.0
CONDITIONS = ("16 kHz", "8 kHz phone", "noise 5-15 dB")


@dataclass
class Speaker:
    """One speaker's material: enrolment clips, and audio to cut turns from."""

    name: str
    enrol: list[np.ndarray]
    material: np.ndarray


@dataclass
class Conversation:
    """A built recording, its reference turns and its speakers' enrolment clips."""

    corpus: str
    wav: np.ndarray
    turns: list[Segment]
    enrol: dict[str, list[np.ndarray]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data
def speechocean_speakers(corpus: Path, half: set[str] | None, rng: np.random.Generator, limit: int | None) -> list:
    """Test-split speakers of ``half`` (all test speakers when None): enrolment utterances drawn at
    random, the others (edge silence trimmed) joined as turn material."""
    import librosa

    rows = [r for r in common.read_manifest(corpus) if r["split"] == "test"]
    names = sorted({r["speaker"] for r in rows} & half if half is not None else {r["speaker"] for r in rows})
    speakers = []
    for name in names[:limit]:
        mine = sorted((r for r in rows if r["speaker"] == name), key=lambda r: r["utt"])
        order = rng.permutation(len(mine))
        wavs = [common.load_wav(corpus / mine[i]["path"]) for i in order]
        enrol, rest = wavs[:ENROL_UTTERANCES], wavs[ENROL_UTTERANCES:]
        trimmed = [librosa.effects.trim(w, top_db=TRIM_DB)[0] for w in rest]
        speakers.append(Speaker(name, enrol, np.concatenate(trimmed)))
    return speakers


def librispeech_speakers(corpus: Path, recipe: Path, half: set[str] | None, limit: int | None) -> list[Speaker]:
    """The recipe's held-out speakers of ``half``: the first ENROL_SECONDS enrol, the rest is material."""
    from train.condition_trials import held_out

    utts = [u for u in held_out(recipe, corpus) if half is None or u.speaker in half]
    keep = round(ENROL_SECONDS * SAMPLE_RATE)
    speakers = []
    for u in utts[:limit]:
        wav = common.load_wav(u.file)
        if len(wav) > keep + TURN_SECONDS[0] * SAMPLE_RATE:
            speakers.append(Speaker(u.speaker, [wav[:keep]], wav[keep:]))
    return speakers


def build(corpus: str, speakers: list[Speaker], rng: np.random.Generator) -> Conversation:
    """One conversation of 2-4 of ``speakers`` (see the module docstring)."""
    count = int(rng.integers(SPEAKERS[0], SPEAKERS[1] + 1))
    chosen = [speakers[i] for i in rng.choice(len(speakers), size=min(count, len(speakers)), replace=False)]
    minimum = round(TURN_SECONDS[0] * SAMPLE_RATE)
    # Each speaker starts somewhere in the first quarter of their material, leaving a turn's worth.
    offset = {
        s.name: min(int(rng.integers(0, max(1, len(s.material) // 4))), len(s.material) - minimum) for s in chosen
    }
    parts: list[np.ndarray] = []
    turns: list[Segment] = []
    order = [s.name for s in chosen]
    rng.shuffle(order)
    by_name = {s.name: s for s in chosen}
    level = GAP_LEVEL * float(np.sqrt(np.mean(np.concatenate([s.material for s in chosen]) ** 2)))
    at, previous = 0, ""
    while len(turns) < MAX_TURNS:
        left = [n for n in by_name if n != previous and len(by_name[n].material) - offset[n] >= minimum]
        if len(turns) < len(order):
            name = order[len(turns)]
        elif left:
            name = str(rng.choice(left))
        else:
            break
        material = by_name[name].material
        length = min(round(rng.uniform(*TURN_SECONDS) * SAMPLE_RATE), len(material) - offset[name])
        if parts:
            gap = round(rng.uniform(*GAP_SECONDS) * SAMPLE_RATE)
            parts.append((level * rng.standard_normal(gap)).astype(np.float32))
            at += gap
        parts.append(material[offset[name] : offset[name] + length])
        turns.append(Segment(at / SAMPLE_RATE, (at + length) / SAMPLE_RATE, name))
        offset[name] += length
        at += length
        previous = name
    wav = np.concatenate(parts).astype(np.float32)
    return Conversation(corpus, wav, turns, {s.name: s.enrol for s in chosen if any(t.label == s.name for t in turns)})


def conversations(args: object, split: str, count: int) -> list[Conversation]:
    """``count`` conversations of the ``split`` half, alternating speechocean762 and LibriSpeech."""
    from train.condition_trials import dev_test_split

    rng = np.random.default_rng(SEEDS[split])
    limit = 6 if args.quick else None
    pools: dict[str, list[Speaker]] = {}
    so = common.data_or_skip(args.data, "speechocean762")
    if so is not None:
        names = sorted({r["speaker"] for r in common.read_manifest(so) if r["split"] == "test"})
        half = dict(zip(("dev", "test"), dev_test_split(names)))[split]
        pools["speechocean762"] = speechocean_speakers(so, half, rng, limit)
    ls = common.data_or_skip(args.data, "librispeech-251")
    if ls is not None:
        from train.condition_trials import held_out

        half = dict(zip(("dev", "test"), dev_test_split([u.speaker for u in held_out(args.recipe, ls)])))[split]
        pools["librispeech"] = librispeech_speakers(ls, args.recipe, half, limit)
    corpora = [c for c, pool in pools.items() if len(pool) >= SPEAKERS[0]]
    return (
        [build(corpora[i % len(corpora)], pools[corpora[i % len(corpora)]], rng) for i in range(count)]
        if corpora
        else []
    )


def in_condition(condition: str, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``wav`` as heard in ``condition``."""
    from train.augment import coloured_noise, mix_at_snr, telephone

    if condition == "8 kHz phone":
        return telephone(wav, SAMPLE_RATE, mu_law=False)
    if condition == "noise 5-15 dB":
        noisy = mix_at_snr(wav, coloured_noise(len(wav), rng), rng.uniform(*SNR_DB))
        return (0.5 * noisy / max(float(np.max(np.abs(noisy))), 1e-6)).astype(np.float32)
    return wav


# ----------------------------------------------------------------------------- scoring
def annotation(segments: list[Segment]) -> object:
    from pyannote.core import Annotation
    from pyannote.core import Segment as Span

    result = Annotation()
    for s in segments:
        result[Span(s.start, s.end)] = s.label
    return result


@dataclass
class Score:
    """Pooled error components of one row, from a pyannote.metrics metric."""

    metric: object
    conversations: int = 0
    right_count: int = 0
    seconds: float = 0.0

    def add(self, reference: list[Segment], hypothesis: Diarization) -> None:
        from pyannote.core import Segment as Span
        from pyannote.core import Timeline

        uem = Timeline([Span(0.0, hypothesis.duration)])
        self.metric(annotation(reference), annotation(hypothesis.segments), uem=uem)
        self.conversations += 1
        self.right_count += len({t.label for t in reference}) == len(hypothesis.speakers)

    def cells(self) -> list[str]:
        m = self.metric
        total = m.accumulated_["total"] or 1.0
        percent = [100 * m.accumulated_[k] / total for k in ("missed detection", "false alarm", "confusion")]
        return [
            str(self.conversations),
            common.fmt(total / 60, 1),
            common.fmt(100 * abs(m), 2),
            *(common.fmt(p, 2) for p in percent),
            common.fmt(100 * self.right_count / max(1, self.conversations), 0),
            common.fmt(self.seconds, 1),
        ]


def evaluate(
    encoder: SpeakerEncoder, convs: list[Conversation], condition: str, run: Callable[..., Diarization]
) -> tuple[Score, Score]:
    """(not enrolled, enrolled) scores of every conversation in ``condition``."""
    from pyannote.metrics.diarization import DiarizationErrorRate
    from pyannote.metrics.identification import IdentificationErrorRate

    rng = np.random.default_rng(CONDITIONS.index(condition))
    plain = Score(DiarizationErrorRate(collar=COLLAR, skip_overlap=True))
    named = Score(IdentificationErrorRate(collar=COLLAR, skip_overlap=True))
    for conv in convs:
        wav = in_condition(condition, conv.wav, rng)
        start = time.perf_counter()
        plain.add(conv.turns, run(encoder, (SAMPLE_RATE, wav)))
        plain.seconds += time.perf_counter() - start
        gallery = Gallery()
        for name, clips in conv.enrol.items():
            clips = [(SAMPLE_RATE, in_condition(condition, c, rng)) for c in clips]
            gallery.enroll(name, [e.vector for e in encoder.embed_batch(clips, max_seconds=None)])
        start = time.perf_counter()
        named.add(conv.turns, run(encoder, (SAMPLE_RATE, wav), gallery=gallery))
        named.seconds += time.perf_counter() - start
    return plain, named


def timing(encoder: SpeakerEncoder, convs: list[Conversation], seconds: float, repeats: int) -> list[list[str]]:
    """Rows: one diarize and one embed of a ``seconds``-long recording (the conversations joined)."""
    wav = np.concatenate([c.wav for c in convs])
    while len(wav) < seconds * SAMPLE_RATE:
        wav = np.concatenate([wav, wav])
    clip = (SAMPLE_RATE, wav[: round(seconds * SAMPLE_RATE)])
    times = common.time_interleaved(
        {
            "diarize": lambda: diarize(encoder, clip),
            "embed": lambda: encoder.embed(clip, max_seconds=None),
        },
        repeats,
        warmup=1,
    )
    return [
        [name, common.fmt(seconds, 0), common.fmt(t.median, 2), common.fmt(t.median / seconds, 4)]
        for name, t in times.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__, checkpoint="checkpoint folder")
    parser.add_argument(
        "--recipe", type=Path, default=DEFAULT_RECIPE, help="recipe whose held-out LibriSpeech speakers are used"
    )
    parser.add_argument("--split", choices=sorted(SEEDS), default="test", help="dev: for tuning; test: reported")
    parser.add_argument("--conversations", type=int, default=CONVERSATIONS, help="conversations (--quick: 2)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--window", type=float, default=WINDOW_SECONDS, help="diarize's window_seconds")
    parser.add_argument("--hop", type=float, default=WINDOW_HOP_SECONDS, help="diarize's hop_seconds")
    parser.add_argument("--margin", type=float, help="diarize's cluster_margin (default: by kind of recording)")
    parser.add_argument("--min-segment", type=float, default=MIN_SEGMENT_SECONDS, help="diarize's min_segment_seconds")
    parser.add_argument("--bridge", type=float, default=BRIDGE_SECONDS, help="diarize's bridge_seconds")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of the 10-minute recording")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing rows")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    common.print_header(NAME, f"split: {args.split}")
    encoder = common.load_checkpoint(args.checkpoint, "cpu")
    count = 2 if args.quick else args.conversations
    convs = conversations(args, args.split, count)
    if not convs:
        common.note("SKIPPED: no conversations could be built without ../shared/data")
        return 0
    speech = sum(t.duration for c in convs for t in c.turns) / 60
    common.note(
        f"{len(convs)} {args.split} conversations of {sum(len(c.enrol) for c in convs)} speakers in all, "
        f"{sum(len(c.turns) for c in convs)} turns, {speech:.1f} min of speech; window {args.window} s, "
        f"hop {args.hop} s, cluster margin {'by kind of recording' if args.margin is None else args.margin}, "
        f"min segment {args.min_segment} s, bridge {args.bridge} s"
    )

    def run(encoder: SpeakerEncoder, audio: object, gallery: Gallery | None = None) -> Diarization:
        return diarize(
            encoder,
            audio,
            gallery=gallery,
            window_seconds=args.window,
            hop_seconds=args.hop,
            cluster_margin=args.margin,
            min_segment_seconds=args.min_segment,
            bridge_seconds=args.bridge,
        )

    rows = []
    for condition in args.conditions:
        plain, named = evaluate(encoder, convs, condition, run)
        rows.append([condition, "not enrolled (DER)", *plain.cells()])
        rows.append([condition, "enrolled (IER, names)", *named.cells()])
    common.print_table(
        [
            "condition",
            "speakers",
            "conversations",
            "scored speech min",
            "DER %",
            "missed %",
            "false alarm %",
            "confusion %",
        ]
        + ["speakers right %", "diarize s"],
        rows,
    )
    if not args.no_timing:
        seconds = 30.0 if args.quick else TIMING_SECONDS
        print()
        common.print_table(
            ["call", "audio s", "seconds", "real-time factor"],
            timing(encoder, convs, seconds, 1 if args.quick else args.repeats),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
