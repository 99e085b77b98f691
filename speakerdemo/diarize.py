"""Who spoke when: speech regions -> overlapping windows -> enrolled names or clusters -> segments, RTTM.

A recording of any length is read once (:func:`~speakerdemo.audio.load_audio`, no length limit by
default) and then handled in pieces whose memory does not grow with it: the VAD runs on blocks of
``VAD_BLOCK_SECONDS`` with a margin either side (its adaptive threshold then follows the noise of
each block), and the windows are embedded in batches of ``BATCH_WINDOWS``. What grows with the
length is the waveform itself (3.8 MB a minute) and the clustering, which compares every window
with every other: 10 minutes make about 800 windows (5 MB of scores), an hour about 4,800 (0.3 GB).

Windows lie inside speech regions only, so that no window straddles the pause between two turns,
where speakers usually change. They are embedded by the encoder's network straight from their
log-mel features, normalised per window as the encoder normalises a clip: on 60 s of speech cut
into 1.5-s windows that took 0.8 s against 5.9 s through :meth:`SpeakerEncoder.embed_batch`, which
runs the VAD and the band and level measures on every window again (2 cores, busy machine).

All windows are clustered: average linkage on the checkpoint's own scores between them (the
cosine, normalised against its cohort), merging while the average score between two clusters
clears the calibrated threshold plus a margin (one for clean speech, one for phone-band or noisy
recordings, told apart as :mod:`speakerdemo.conditions` tells clips apart), or into ``speakers`` clusters when the
number is known. With a gallery, each window is then scored against it exactly as the app's
Identify tab scores a clip (:meth:`SpeakerEncoder.pair_scores` against each speaker's centroid,
less the calibration's shift for the kind of clip, against the same threshold): a window that
clears it is that person; the other windows take the name their cluster's mean vector clears the
threshold for, if any; the rest are "Speaker 1", "Speaker 2", ... in order of first appearance.
Scoring the windows alone and clustering only the rest left many 1.5-s windows of enrolled
speakers in clusters of their own: 7.9 % named DER on the dev conversations against 3.2 %.
Each window speaks for the stretch between the midpoints to its neighbours' centres; same-label
neighbours merge, segments shorter than ``min_segment_seconds`` that touch another segment are
absorbed by the longer neighbour, and pauses under ``bridge_seconds`` between two segments of the
same speaker become part of their speech.

RTTM (NIST's Rich Transcription Time Marked format) separates its fields by whitespace, so a
speaker name cannot hold a space: :meth:`Diarization.to_rttm` writes every run of whitespace in a
name as one underscore ("Speaker 1" -> "Speaker_1", "Ann Lee" -> "Ann_Lee") and refuses two names
that would then read alike. :func:`read_rttm` returns the names as the file has them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage

from .audio import (
    HOP_SECONDS,
    MIN_SPEECH_SECONDS,
    AudioError,
    analyse_speech,
    high_band_db,
    load_audio,
    speech_regions,
    speech_seconds,
)
from .conditions import (
    NOISY,
    NOISY_RANGE_DB,
    PHONE,
    PHONE_BAND_DB,
    SHORT,
    SHORT_SPEECH_SECONDS,
    WIDEBAND,
    kind_shift,
    score_matrix,
)
from .encoder import CPU_BATCH_FRAMES, GPU_BATCH_FRAMES, SpeakerEncoder
from .gallery import Gallery

__all__ = [
    "Diarization",
    "Segment",
    "SpeechWindows",
    "cluster_windows",
    "diarize",
    "parse_rttm",
    "read_rttm",
    "rttm_name",
    "speech_windows",
]

WINDOW_SECONDS = 1.5
"""Length of the embedded windows. Tuned with the hop, the margin, the bridge and the minimum
segment on the dev conversations of benchmarks/diarization.py (its ``--split dev``: other speakers
and seed than the reported ones), DER without / with enrolment: 1.5 s, hop 0.75 s: 3.4 / 3.2 %;
hop 0.5 s: 3.6 / 3.4 %; hop 1.0 s: 3.7 / 3.4 %; 2.0 s, hop 1.0 s: 4.0 / 3.7 %; 1.0 s, hop
0.5 s: 5.8 / 4.3 % (each at its best margin of those tried)."""
WINDOW_HOP_SECONDS = 0.75
"""Spacing of window starts inside a speech region (at most: windows are spread evenly over it)."""
MIN_WINDOW_SECONDS = 0.5
"""Speech regions shorter than this get no window of their own (too little speech for an
embedding, the app's own minimum) and take the label of the nearest window."""
MIN_SEGMENT_SECONDS = 1.0
"""A segment shorter than this that touches another one is absorbed by its longer neighbour
(dev DER without / with enrolment: 0.5 s: 3.4 / 3.4 %; 1.0 and 1.5 s: 3.4 / 3.2 %)."""
BRIDGE_SECONDS = 1.0
"""Pauses shorter than this between two segments of the same speaker count as their speech, as a
reference transcript counts the pauses inside a turn (dev conversations: missed speech 6.0 % of
the speech with 0.5 s, 2.4 % with 1.0 s, and false alarm 0.0 and 0.1 %)."""
CLUSTER_MARGIN = -3.0
"""Clusters merge while their average score stays above the calibrated threshold plus this margin.
Negative because 1.5-s windows of one voice score lower together than the 3-s clips the threshold
was calibrated on. Dev conversations, DER without enrolment: margin 0: 21.9 %, -2: 12.0 % (no
bridging), -2.5: 4.1 %, -3: 3.4 %, -3.5: 3.5 %, -4: 10.5 % (bridging 1.0 s)."""
CLUSTER_MARGINS = {PHONE: -1.0, NOISY: -1.0}
"""The margin for a recording the conditions module would call phone-band or noisy: strangers'
windows there score closer, and -3 merged them. Dev conversations, DER without enrolment,
through an 8 kHz line: margin -3: 28.2 %, -2: 16.4 %, -1: 5.3 %, -0.5: 7.0 %, 0: 8.7 %; in noise at
5-15 dB SNR (two thirds of them detected as noisy): -3: 29.7 %, -2: 22.1 %, -1: 18.9 %, 0: 23.6 %."""
VAD_BLOCK_SECONDS = 60.0
"""The VAD runs on blocks this long (the app's longest clip), so its memory is that of one block."""
VAD_MARGIN_SECONDS = 2.0
"""The VAD's context either side of a block, so that its smoothing sees across block edges."""
BATCH_WINDOWS = 64
"""Windows whose features are made at once: bounds the memory of embedding a long recording."""
SPEAKER_PREFIX = "Speaker"
RTTM_DECIMALS = 3


@dataclass(frozen=True)
class Segment:
    """One stretch of speech by one speaker: times in seconds from the start of the recording."""

    start: float
    end: float
    label: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Diarization:
    """The segments of a recording in time order, with who they are.

    ``named`` holds the labels that are enrolled speakers' names; the others are clusters of
    unknown speakers, "Speaker 1", "Speaker 2", ... in order of first appearance.
    """

    segments: list[Segment]
    duration: float
    named: frozenset[str] = field(default_factory=frozenset)

    @property
    def speakers(self) -> list[str]:
        """Every label, in order of first appearance."""
        return list(dict.fromkeys(s.label for s in self.segments))

    def talk_time(self) -> dict[str, float]:
        """Seconds of speech per label, in order of first appearance."""
        totals = dict.fromkeys(self.speakers, 0.0)
        for s in self.segments:
            totals[s.label] += s.duration
        return totals

    def to_rttm(self, file_id: str) -> str:
        """The segments as RTTM ``SPEAKER`` lines (see the module docstring for names with spaces)."""
        if not file_id or re.search(r"\s", file_id):
            raise ValueError(f"An RTTM file id must be non-empty and without whitespace, got {file_id!r}.")
        names = {label: rttm_name(label) for label in self.speakers}
        clashes = {n for n in names.values() if list(names.values()).count(n) > 1}
        if clashes:
            alike = sorted(label for label, n in names.items() if n in clashes)
            raise ValueError(f"Speaker names {alike} would read alike in RTTM, where spaces become underscores.")
        return "".join(
            f"SPEAKER {file_id} 1 {s.start:.{RTTM_DECIMALS}f} {s.duration:.{RTTM_DECIMALS}f} "
            f"<NA> <NA> {names[s.label]} <NA> <NA>\n"
            for s in self.segments
        )


def rttm_name(label: str) -> str:
    """How a label is written in RTTM: each run of whitespace as one underscore."""
    return re.sub(r"\s+", "_", label.strip())


def parse_rttm(text: str) -> dict[str, list[Segment]]:
    """``{file id: segments in time order}`` from the ``SPEAKER`` lines of RTTM text.

    Other line types (``SPKR-INFO`` and the like) and blank lines are skipped; a ``SPEAKER`` line
    that is malformed raises ValueError naming its line number, rather than being dropped silently.
    """
    files: dict[str, list[Segment]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"RTTM line {number} has {len(fields)} fields; a SPEAKER line needs at least 8.")
        try:
            start, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(
                f"RTTM line {number}: onset {fields[3]!r} or duration {fields[4]!r} is no number."
            ) from None
        if not (math.isfinite(start) and math.isfinite(duration)) or start < 0 or duration < 0:
            raise ValueError(f"RTTM line {number}: onset and duration must be finite and >= 0.")
        files.setdefault(fields[1], []).append(Segment(start, start + duration, fields[7]))
    return {file_id: sorted(segments, key=lambda s: (s.start, s.end)) for file_id, segments in files.items()}


def read_rttm(path: str | os.PathLike) -> dict[str, list[Segment]]:
    """:func:`parse_rttm` of a file."""
    return parse_rttm(Path(path).read_text())


# ----------------------------------------------------------------------------- diarize
@dataclass(frozen=True)
class _Run:
    """A segment while labels may still be cluster ids (int) rather than names."""

    start: float
    end: float
    label: str | int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class _Windows:
    """Windows over the speech: sample spans, and the stretch of time each one speaks for."""

    spans: list[tuple[int, int]]
    pieces: list[tuple[float, float, int]]  # (start s, end s, window index) in time order


@dataclass
class SpeechWindows:
    """A recording's speech cut into overlapping windows and embedded: what diarization clusters,
    and what the evidence view (:mod:`speakerdemo.evidence`) compares between two clips."""

    vectors: np.ndarray  # (n, D) unit embeddings, one per window
    spans: list[tuple[int, int]]  # each window's samples
    pieces: list[tuple[float, float, int]]  # (start s, end s, window) stretches each window speaks for
    sample_rate: int
    band_db: float  # the recording's high-band level (speakerdemo.audio.high_band_db)
    level_range: float  # and level range (speakerdemo.audio.analyse_speech)
    speech_seconds: float

    @property
    def centres(self) -> np.ndarray:
        """Each window's centre, in seconds from the start of the recording."""
        return np.array([(a + b) / 2 / self.sample_rate for a, b in self.spans])

    @property
    def cluster_margin(self) -> float:
        """The margin measured for this kind of recording (CLUSTER_MARGIN, or CLUSTER_MARGINS)."""
        return CLUSTER_MARGINS.get(self.kind(WINDOW_SECONDS), CLUSTER_MARGIN)

    def kind(self, seconds: float) -> str:
        """The kind of clip (speakerdemo.conditions) a stretch of ``seconds`` of this recording is:
        band and noise are the recording's, the length the stretch's."""
        return _kind(self.band_db, self.level_range, seconds)


def speech_windows(
    encoder: SpeakerEncoder,
    wav: np.ndarray,
    window_seconds: float = WINDOW_SECONDS,
    hop_seconds: float = WINDOW_HOP_SECONDS,
) -> SpeechWindows:
    """Speech regions of ``wav`` (mono, at the encoder's rate) cut into windows and embedded.

    Raises AudioError when there is too little speech to tell voices apart.
    """
    sr = encoder.frontend.config.sample_rate
    mask, band_db, level_range = _speech(wav, sr)
    found = speech_seconds(mask)
    if found < MIN_SPEECH_SECONDS:
        raise AudioError(f"Only {found:.2f} s of speech detected; at least {MIN_SPEECH_SECONDS:g} s is needed.")
    windows = _windows(speech_regions(mask), sr, window_seconds, hop_seconds)
    vectors = _embed(encoder, wav, windows.spans)
    return SpeechWindows(vectors, windows.spans, windows.pieces, sr, band_db, level_range, found)


def cluster_windows(
    encoder: SpeakerEncoder,
    windows: SpeechWindows,
    speakers: int | None = None,
    threshold: float | None = None,
    cluster_margin: float | None = None,
) -> np.ndarray:
    """Cluster id (1..k) of each window: into ``speakers`` clusters when known, else merging while
    the average score between clusters clears ``threshold`` (default: the checkpoint's) plus
    ``cluster_margin`` (default: the one measured for the kind of recording)."""
    threshold = encoder.threshold if threshold is None else float(threshold)
    margin = windows.cluster_margin if cluster_margin is None else cluster_margin
    return _cluster(encoder, windows.vectors, speakers, threshold + margin)


def diarize(
    encoder: SpeakerEncoder,
    audio: Any,
    *,
    gallery: Gallery | None = None,
    speakers: int | None = None,
    threshold: float | None = None,
    cluster_margin: float | None = None,
    window_seconds: float = WINDOW_SECONDS,
    hop_seconds: float = WINDOW_HOP_SECONDS,
    min_segment_seconds: float = MIN_SEGMENT_SECONDS,
    bridge_seconds: float = BRIDGE_SECONDS,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> Diarization:
    """Who spoke when in ``audio`` (anything :func:`~speakerdemo.audio.load_audio` reads).

    ``gallery``: enrolled speakers whose names label the windows that score as them.
    ``speakers``: how many people speak in all, when known; otherwise clusters merge while their
    average score clears ``threshold + cluster_margin``. ``threshold`` defaults to the
    checkpoint's calibrated one (:attr:`SpeakerEncoder.threshold`), as in the Identify tab;
    ``cluster_margin`` to the one measured for the kind of recording (CLUSTER_MARGIN, or
    CLUSTER_MARGINS for phone-band and noisy ones).
    ``max_seconds`` and ``max_bytes`` refuse longer or larger recordings (None: any).

    Raises AudioError for audio that cannot be used (empty, corrupt, silent, no speech) and
    ValueError for bad arguments.
    """
    if speakers is not None and (isinstance(speakers, bool) or not isinstance(speakers, int) or speakers < 1):
        raise ValueError(f"speakers must be a positive whole number or None, got {speakers!r}.")
    if not 0 < hop_seconds <= window_seconds:
        raise ValueError(f"Need 0 < hop_seconds <= window_seconds, got {hop_seconds} and {window_seconds}.")
    if min_segment_seconds < 0 or bridge_seconds < 0:
        raise ValueError(
            f"min_segment_seconds and bridge_seconds must be >= 0, got {min_segment_seconds}, {bridge_seconds}."
        )
    gallery = gallery if gallery is not None and len(gallery) else None
    if gallery is not None and gallery.dim != encoder.model.embed_dim:
        raise ValueError(
            f"The gallery holds {gallery.dim}-d embeddings; this model makes {encoder.model.embed_dim}-d ones."
        )
    threshold = encoder.threshold if threshold is None else float(threshold)

    sr = encoder.frontend.config.sample_rate
    wav = load_audio(audio, sr, max_seconds=max_seconds, min_speech_seconds=0.0, max_bytes=max_bytes)
    windows = speech_windows(encoder, wav, window_seconds, hop_seconds)

    # Every window is clustered; a window that clears the threshold for an enrolled speaker alone
    # (as Identify decides for a clip) is that speaker, the others take their cluster's name when
    # the cluster's mean clears it, else the cluster's id (an int, numbered at the end).
    clusters = cluster_windows(encoder, windows, speakers, threshold, cluster_margin)
    labels: list[str | int] = clusters.tolist()
    if gallery is not None:
        shifts = np.array([kind_shift(encoder, windows.kind((b - a) / sr)) for a, b in windows.spans])
        labels = _name(encoder, windows.vectors, clusters, gallery, threshold, shifts)
    segments = _number_unknown(_smooth(windows.pieces, labels, min_segment_seconds, bridge_seconds))
    enrolled = set(gallery.names()) if gallery is not None else set()
    return Diarization(segments, len(wav) / sr, frozenset(s.label for s in segments) & enrolled)


def _speech(wav: np.ndarray, sr: int) -> tuple[np.ndarray, float, float]:
    """The VAD's mask over the whole recording, its high-band level (dB) and level range (dB).

    Run block by block, each block seen with a margin either side, so that memory stays bounded
    on long recordings; band and level range are the medians over blocks.
    """
    hop = round(sr * HOP_SECONDS)
    block = round(VAD_BLOCK_SECONDS / HOP_SECONDS) * hop
    margin = round(VAD_MARGIN_SECONDS / HOP_SECONDS) * hop
    mask = np.zeros(1 + len(wav) // hop, dtype=bool)
    bands, ranges = [], []
    for start in range(0, len(wav), block):
        lo = max(0, start - margin)
        piece = wav[lo : min(len(wav), start + block + margin)]
        piece_mask, level_range = analyse_speech(piece, sr)
        first = start // hop
        last = len(mask) if start + block >= len(wav) else (start + block) // hop
        mask[first:last] = piece_mask[first - lo // hop : last - lo // hop]
        bands.append(high_band_db(piece, sr, piece_mask))
        ranges.append(level_range)
    return mask, float(np.median(bands)), float(np.median(ranges))


def _windows(regions: list[tuple[float, float]], sr: int, window_seconds: float, hop_seconds: float) -> _Windows:
    """Windows spread evenly over each speech region, and the stretch each speaks for.

    A region longer than a window gets ``ceil((length - window) / hop) + 1`` full windows from its
    start to its end; one up to a window long is one window; one shorter than
    MIN_WINDOW_SECONDS gets none and is spoken for by the window whose centre is nearest.
    """
    spans: list[tuple[int, int]] = []
    pieces: list[tuple[float, float, int]] = []
    orphans: list[tuple[float, float]] = []
    for start, end in regions:
        length = end - start
        if length < MIN_WINDOW_SECONDS:
            orphans.append((start, end))
            continue
        count = 1 if length <= window_seconds else math.ceil((length - window_seconds) / hop_seconds - 1e-9) + 1
        width = min(length, window_seconds)
        starts = np.linspace(start, end - width, count)
        centres = starts + width / 2
        bounds = [start, *((centres[:-1] + centres[1:]) / 2).tolist(), end]
        for k, s in enumerate(starts.tolist()):
            pieces.append((bounds[k], bounds[k + 1], len(spans)))
            spans.append((round(s * sr), round(s * sr) + round(width * sr)))
    if not spans:
        raise AudioError(
            f"No stretch of continuous speech of at least {MIN_WINDOW_SECONDS:g} s was found: "
            "too little to tell voices apart."
        )
    centres = np.array([(a + b) / 2 / sr for a, b in spans])
    for start, end in orphans:
        pieces.append((start, end, int(np.argmin(np.abs(centres - (start + end) / 2)))))
    return _Windows(spans, sorted(pieces))


def _embed(encoder: SpeakerEncoder, wav: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Unit embedding (n, D) of each window: log-mel features of its samples, normalised over the
    window as the encoder normalises a clip, through the encoder's network in batches."""
    frontend = encoder.frontend
    shortest = frontend.config.n_fft // 2 + 1  # the STFT's reflect padding needs more samples than this
    vectors = []
    for first in range(0, len(spans), BATCH_WINDOWS):
        feats: list[torch.Tensor] = []
        by_length: dict[int, list[int]] = {}
        batch = spans[first : first + BATCH_WINDOWS]
        for i, (a, b) in enumerate(batch):
            by_length.setdefault(b - a, []).append(i)
        ordered: list[int] = []
        for rows in by_length.values():
            clips = [frontend.prepare(wav[batch[i][0] : batch[i][1]])[0] for i in rows]
            clips = [np.pad(c, (0, max(0, shortest - len(c)))) for c in clips]
            same = len({len(c) for c in clips}) == 1
            groups = [clips] if same else [[c] for c in clips]
            with torch.inference_mode():
                for group in groups:
                    tensor = torch.from_numpy(np.stack(group)).to(encoder.device)
                    feats.extend(frontend.normalize(frontend.log_mel(tensor)))
            ordered.extend(rows)
        # The encoder's own length-sorted batching and backend choice (torch or ONNX Runtime).
        outputs = encoder.encode_windows(feats, _batch_frames(encoder))
        unit = np.stack([e / max(np.linalg.norm(e), 1e-12) for e, _, _ in outputs])
        vectors.append(unit[np.argsort(ordered)])
    return np.concatenate(vectors).astype(np.float64)


def _batch_frames(encoder: SpeakerEncoder) -> int:
    """The encoder's own bound on a batch (frames x windows) for its device."""
    return GPU_BATCH_FRAMES if encoder.device.type == "cuda" else CPU_BATCH_FRAMES


def _kind(band_db: float, level_range: float, seconds: float) -> str:
    """The kind of clip (speakerdemo.conditions) a window of the recording is, for the calibration's
    shift: band and noise are the recording's, the length the window's."""
    if band_db < PHONE_BAND_DB:
        return PHONE
    if level_range < NOISY_RANGE_DB:
        return NOISY
    return SHORT if seconds < SHORT_SPEECH_SECONDS else WIDEBAND


def _cluster(encoder: SpeakerEncoder, vectors: np.ndarray, wanted: int | None, cut: float) -> np.ndarray:
    """Cluster ids (1..k) of the windows: average linkage on their pairwise scores, cut where the
    average score between clusters falls below ``cut``, or into ``wanted`` clusters (at most)."""
    if len(vectors) == 1:
        return np.ones(1, dtype=int)
    scores = score_matrix(encoder, vectors, vectors)
    top = float(scores.max())
    distances = top - scores[np.triu_indices(len(vectors), 1)]  # condensed, as scipy wants it
    tree = linkage(np.maximum(distances, 0.0), method="average")
    if wanted is not None:
        return fcluster(tree, t=min(wanted, len(vectors)), criterion="maxclust")
    return fcluster(tree, t=top - cut, criterion="distance")


def _centroids(gallery: Gallery) -> np.ndarray:
    """(K, D) unit centroids of the enrolled speakers, in enrolment order (as Identify ranks them)."""
    return np.stack([gallery.centroid(n) for n in gallery.names()])


def _name(
    encoder: SpeakerEncoder,
    vectors: np.ndarray,
    clusters: np.ndarray,
    gallery: Gallery,
    threshold: float,
    shifts: np.ndarray,
) -> list[str | int]:
    """Each window's label: the enrolled speaker it clears the threshold for alone (the best), else
    the one its cluster's mean clears it for, else its cluster's id. Windows too short to be sure
    of alone are sure together, and a window sure alone overrides a cluster that merged two voices."""
    names = gallery.names()
    centroids = _centroids(gallery)
    scores = score_matrix(encoder, vectors, centroids) - shifts[:, None]
    ids = sorted(set(clusters.tolist()))
    means = np.stack([vectors[clusters == k].mean(axis=0) for k in ids])
    cluster_scores = score_matrix(encoder, means / np.linalg.norm(means, axis=1, keepdims=True), centroids)
    cluster_scores -= np.array([np.median(shifts[clusters == k]) for k in ids])[:, None]
    by_cluster: dict[int, str | int] = {
        k: names[int(row.argmax())] if row.max() >= threshold else k for k, row in zip(ids, cluster_scores)
    }
    return [
        names[int(row.argmax())] if row.max() >= threshold else by_cluster[k]
        for row, k in zip(scores, clusters.tolist())
    ]


def _smooth(
    pieces: list[tuple[float, float, int]], labels: Sequence[str | int], min_segment: float, bridge: float
) -> list[_Run]:
    """Segments from labelled pieces: touching same-label pieces merge; a segment shorter than
    ``min_segment`` that touches another is absorbed by the longer of its touching neighbours;
    last, same-label neighbours less than ``bridge`` apart become one segment, pause included."""
    segments = _merge([_Run(a, b, labels[w]) for a, b, w in pieces])
    while True:
        short = [
            i
            for i, s in enumerate(segments)
            if s.duration < min_segment and (_touch(segments, i - 1, i) or _touch(segments, i, i + 1))
        ]
        if not short:
            return _merge(segments, bridge)
        i = min(short, key=lambda k: segments[k].duration)
        neighbours = [j for j in (i - 1, i + 1) if _touch(segments, min(i, j), max(i, j))]
        donor = max(neighbours, key=lambda j: segments[j].duration)
        s = segments[i]
        segments[i] = _Run(s.start, s.end, segments[donor].label)
        segments = _merge(segments)


def _touch(segments: list[_Run], i: int, j: int) -> bool:
    """Whether segments i and j (= i + 1) exist and meet with no pause between them."""
    return 0 <= i and j < len(segments) and segments[j].start - segments[i].end < 1e-6


def _merge(segments: list[_Run], bridge: float = 0.0) -> list[_Run]:
    """Neighbours with the same label that touch, or lie less than ``bridge`` apart, as one segment."""
    merged: list[_Run] = []
    for s in segments:
        if merged and merged[-1].label == s.label and s.start - merged[-1].end < max(bridge, 1e-6):
            merged[-1] = _Run(merged[-1].start, s.end, s.label)
        else:
            merged.append(s)
    return merged


def _number_unknown(segments: list[_Run]) -> list[Segment]:
    """Cluster ids as "Speaker 1", "Speaker 2", ... in order of first appearance; enrolled names stay."""
    numbers: dict[int, str] = {}
    for s in segments:
        if isinstance(s.label, int) and s.label not in numbers:
            numbers[s.label] = f"{SPEAKER_PREFIX} {len(numbers) + 1}"
    return [Segment(round(s.start, 6), round(s.end, 6), numbers.get(s.label, s.label)) for s in segments]
