"""The Gradio demo's request handlers over SpeakerEncoder, Gallery and plots (the layout that wires
them is :mod:`speakerdemo.layout`).

Every handler is a method of :class:`Demo` that takes the session (a :class:`Session`) first and
the components' values after it, in the order the Blocks pass them, so events are wired to the
methods themselves and tests call them directly. A handler fetches its encoder once per request.
User mistakes become ``gr.Error`` with the AudioError's message; nothing else a user sends reaches
a stack trace. Per-session state (model choice, the session gallery) lives in ``gr.State``; what
is shared between sessions (models, the persistent gallery) is in ``speakerdemo.app_state``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from .adapt import MAX_FILE_BYTES as MAX_CALIBRATION_BYTES
from .adapt import AdaptationError, from_bytes, to_bytes
from .app_state import Models, SharedGallery, read_model_card
from .archive import ArchiveError, people_from_zip
from .audio import MAX_SECONDS, AudioError, load_audio
from .conditions import clip_condition, kind_shift
from .diarize import Diarization, diarize
from .encoder import Embedding, SpeakerEncoder
from .evidence import ClipEvidence, clip_evidence, cohesion, window_map
from .gallery import Gallery, GalleryError, Ranking
from .plots import (
    adaptation_figure,
    diarization_figure,
    embedding_map_figure,
    ranking_figure,
    spectrogram_figure,
    window_map_figure,
)
from .readout import (
    adaptation_summary,
    clip_report,
    clip_warnings,
    cohesion_note,
    diarization_summary,
    quality_report,
    score_words,
    verdict_readout,
)
from .verdict import Verdict, reconsider

MAX_UPLOAD_MB = 120
"""The largest file the app takes: a 10-minute recording for Who spoke when, as 16-bit stereo WAV
at 48 kHz, is 115 MB. The clip tabs' own limits are the encoder's (MAX_SECONDS, 50 MB encoded),
checked before decoding."""
MAX_CALIBRATIONS = 64  # sessions' calibrated encoders kept (each shares the model; only its cohort is its own)
MAX_RECORDING_SECONDS = 600.0  # Who spoke when: longer recordings go to the command line
FOUND_CLIPS = 3  # Who spoke when: a found speaker is enrolled from their longest turns, this many
FOUND_CLIP_SECONDS = 20.0  # ... each cut to this length
MIN_FOUND_SPEECH = 2.0  # ... which must hold this much speech in all
IDENTIFY_CLASSES = 5  # training speakers listed by the classifier in the Identify tab
EXAMPLES_DIR = Path(__file__).parent / "examples"

try:  # On Hugging Face ZeroGPU the GPU is attached only inside functions decorated like this.
    import spaces

    gpu: Callable = spaces.GPU
except ImportError:

    def gpu(fn: Callable) -> Callable:
        return fn


@dataclass
class Session:
    """What one browser session holds: its model choice, gallery (unless the gallery is shared) and
    its own calibration (a calibration file's bytes, :mod:`speakerdemo.adapt`), if it made one."""

    model: str = ""
    gallery: Gallery = field(default_factory=Gallery)
    calibration: bytes | None = None


@dataclass(frozen=True)
class Found:
    """The last Who-spoke-when result of a session, kept in the page for "enroll this speaker"."""

    path: str
    result: Diarization


@dataclass
class Demo:
    """The handlers, and what they share: models and the optional persistent gallery."""

    models: Models
    shared: SharedGallery | None = None
    max_seconds: float = MAX_SECONDS
    calibration: bytes | None = None  # the operator's (app.py --calibration): for sessions without their own
    _adapted: dict[tuple[str, str], SpeakerEncoder] = field(default_factory=dict, repr=False)

    def encoder(self, session: Session) -> SpeakerEncoder:
        """The session's encoder: the model, calibrated on the session's own people or else on the
        operator's (when made with this model). Each handler calls this once and passes it along."""
        base = self.models.get(session.model)
        data = session.calibration or self.calibration
        if data is None:
            return base
        key = (session.model, hashlib.sha256(data).hexdigest())
        if key not in self._adapted:
            try:
                adapted = from_bytes(base, data)
            except AdaptationError:  # the operator's file, made with another of the models
                return base
            if len(self._adapted) >= MAX_CALIBRATIONS:
                self._adapted.pop(next(iter(self._adapted)))
            self._adapted[key] = adapted
        return self._adapted[key]

    # ------------------------------------------------------------------ embeddings
    def embed(self, session: Session, clips: Sequence[Any], names: Sequence[str] | None = None) -> list[Embedding]:
        """Embed clips (paths or (sr, array)) with the session's model; see :meth:`_embed`."""
        return self._embed(self.encoder(session), clips, names)

    def _embed(
        self,
        encoder: SpeakerEncoder,
        clips: Sequence[Any],
        names: Sequence[str] | None = None,
        class_logits: bool = False,
    ) -> list[Embedding]:
        """Embed clips; bad audio becomes a gr.Error naming the clip and the reason."""
        if any(c is None for c in clips):
            raise gr.Error("Please record or upload a clip first.")
        try:
            return _embed_batch(encoder, list(clips), self.max_seconds, names, class_logits)
        except AudioError as err:
            raise gr.Error(str(err)) from None

    # ------------------------------------------------------------------ inspect
    def inspect(self, session: Session, clip: Any) -> tuple[go.Figure, str]:
        """What the model hears in one clip: spectrogram, attention, speech regions and warnings."""
        emb = self.embed(session, [clip])[0]
        return spectrogram_figure(emb), clip_report(emb)

    # ------------------------------------------------------------------ verify
    def verify(
        self, session: Session, a: Any, b: Any, threshold: float
    ) -> tuple[go.Figure, go.Figure, str, go.Figure, Verdict]:
        """Are clips A and B the same speaker? Both are embedded in one batch and judged by
        :meth:`SpeakerEncoder.verify` ("same", "different" or "uncertain", with why); the Verdict
        is kept in the page's state so that the threshold slider can redraw it without the model."""
        encoder = self.encoder(session)
        ea, eb = self._embed(encoder, [a, b], ["Clip A", "Clip B"])
        verdict = encoder.verify(ea, eb, threshold)
        text, dist = verdict_readout(verdict, encoder.calibration, encoder.cohort)
        warnings = [f"**Clip A:** {w}" for w in clip_warnings(ea)] + [f"**Clip B:** {w}" for w in clip_warnings(eb)]
        report = text + ("\n\n" + "\n\n".join(f"⚠️ {w}" for w in warnings) if warnings else "")
        return spectrogram_figure(ea, "Clip A"), spectrogram_figure(eb, "Clip B"), report, dist, verdict

    def evidence(self, session: Session, a: Any, b: Any, threshold: float) -> tuple[go.Figure, str]:
        """Why the score came out so (after the verdict, never changing it): which 1.5-s stretches
        of the two clips agree, and each clip's measured quality."""
        encoder = self.encoder(session)
        try:
            ea, eb = _clip_evidence(encoder, [self._wav(encoder, a), self._wav(encoder, b)])
        except AudioError as err:
            return go.Figure(), f"No evidence view for these clips: {err}"
        windows = window_map(encoder, ea.windows, eb.windows, threshold)
        return window_map_figure(windows), quality_report({"Clip A": ea, "Clip B": eb}, windows)

    def _wav(self, encoder: SpeakerEncoder, clip: Any, max_seconds: float | None = None) -> Any:
        """A clip as mono samples at the encoder's rate, within the app's limits (AudioError if not)."""
        if clip is None:
            raise AudioError("Please record or upload a clip first.")
        limit = self.max_seconds if max_seconds is None else max_seconds
        rate = encoder.frontend.config.sample_rate
        return load_audio(_file_path(clip), rate, max_seconds=limit, min_speech_seconds=0.0)

    def verdict(self, session: Session, verdict: Verdict | None, threshold: float) -> tuple[str, go.Figure]:
        """The verdict decided again for a new threshold (slider changes): no model call."""
        encoder = self.encoder(session)
        again = reconsider(encoder.calibration, verdict, threshold) if verdict is not None else None
        return verdict_readout(again, encoder.calibration, encoder.cohort)

    # ------------------------------------------------------------------ gallery
    def gallery_of(self, session: Session) -> Gallery:
        return self.shared.snapshot() if self.shared is not None else session.gallery

    def gallery_view(self, session: Session) -> tuple[list[list], go.Figure]:
        """The enrolled-speakers table and the embedding map (on page load, after every change)."""
        gallery = self.gallery_of(session)
        return gallery_table(gallery), embedding_map_figure(gallery)

    def _change(self, session: Session, change: Callable[[Gallery], None]) -> Session:
        if self.shared is not None:
            self.shared.update(change)
            return session
        gallery = session.gallery.copy()
        change(gallery)
        return replace(session, gallery=gallery)

    def enroll(
        self, session: Session, name: str, mic: Any, files: Sequence[Any] | None, keep_outliers: bool = False
    ) -> tuple[Session, list[list], go.Figure, str]:
        """Enroll ``name`` from the microphone clip and/or the uploaded files (either may be empty),
        after a cohesion check: each clip against the speaker's other clips (:func:`cohesion`)."""
        clips = [c for c in [mic, *(files or [])] if c is not None]
        if not (name or "").strip():
            raise gr.Error("Give the speaker a name.")
        if not clips:
            raise gr.Error("Record or upload at least one clip of the speaker.")
        encoder = self.encoder(session)
        embs = self._embed(encoder, [_file_path(c) for c in clips])
        return self._enroll(session, encoder, name.strip(), embs, keep_outliers, f"{len(embs)} clip(s)")

    def _enroll(
        self,
        session: Session,
        encoder: SpeakerEncoder,
        name: str,
        embs: list[Embedding],
        keep_outliers: bool,
        what: str,
    ) -> tuple[Session, list[list], go.Figure, str]:
        """Add clips to ``name``, leaving out those that score below the calibrated threshold
        against the speaker's other clips, unless ``keep_outliers`` or nothing else is left."""
        gallery = self.gallery_of(session)
        enrolled = gallery.clips(name) if name in gallery else None
        scores = cohesion(encoder, [e.vector for e in embs], enrolled).tolist()
        low = [i for i, s in enumerate(scores) if s < encoder.threshold]
        left_out = [] if keep_outliers else low
        if left_out and len(left_out) == len(embs):
            raise gr.Error(
                f"None of these clips sounds like {name}'s other clips (scores "
                + ", ".join(f"{scores[i]:.2f}" for i in left_out)
                + f" against threshold {encoder.threshold:.2f}). Check that they are all {name}, "
                "or tick 'Enroll clips that do not match too'."
            )
        kept = [e for i, e in enumerate(embs) if i not in left_out]
        try:
            session = self._change(session, lambda g: g.enroll(name, [e.vector for e in kept]))
        except ValueError as err:
            raise gr.Error(str(err)) from None
        warnings = [w for e in kept for w in clip_warnings(e)]
        note = f"Enrolled **{name}** with {what}" + (f", {len(left_out)} left out." if left_out else ".")
        cohesive = cohesion_note(name, scores, left_out, encoder.threshold)
        if cohesive:
            note += " " + cohesive
        if warnings:
            note += " ⚠️ " + " ".join(sorted(set(warnings)))
        return session, *self.gallery_view(session), note

    def remove(self, session: Session, name: str) -> tuple[Session, list[list], go.Figure, str]:
        """Forget an enrolled speaker."""
        try:
            session = self._change(session, lambda g: g.remove(name or ""))
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return session, *self.gallery_view(session), f"Removed **{name}**."

    def identify(
        self, session: Session, clip: Any, threshold: float, top_k: int
    ) -> tuple[str, go.Figure, list[list], go.Figure, go.Figure]:
        """Who of the enrolled speakers is this (open set: "unknown" below the threshold)? The only
        handler that asks for class logits, to list the checkpoint's closest training speakers."""
        gallery = self.gallery_of(session)
        if not len(gallery):
            raise gr.Error("No speakers enrolled yet: enroll at least one in the Enroll tab.")
        encoder = self.encoder(session)
        emb = self._embed(encoder, [clip], class_logits=True)[0]
        classes = [[name, round(p, 4)] for name, p in encoder.classify(emb, top_k=IDENTIFY_CLASSES)]
        kind = clip_condition(emb)
        ranking = encoder.identify(emb, gallery, threshold, top_k=max(2, int(top_k)))
        best = ranking.matches[0]
        words = score_words(best.score, kind_shift(encoder, kind), kind, encoder.cohort)
        text = f"## {ranking.best}\n\nBest match **{best.name}** with {words} "
        text += f"(threshold {ranking.threshold:.3f}"
        if ranking.threshold > threshold:
            text += (
                f": {threshold:.3f} raised for {len(gallery)} people enrolled, each a chance for a stranger to "
                "pass, and for how close the enrolled people's own clips score to each other"
            )
        text += ")."
        if ranking.best == "unknown":
            text += " Below the threshold, so the speaker is reported as **unknown**."
        if ranking.margin is not None:
            runner_up = ranking.matches[1]
            text += (
                f"\n\nRunner-up **{runner_up.name}** scores {runner_up.score:.3f}: a margin of "
                f"**{ranking.margin:.3f}**{' (close: the two are hard to tell apart)' if ranking.margin < 1 else ''}."
            )
        warnings = clip_warnings(emb)
        if warnings:
            text += "\n\n" + "\n\n".join(f"⚠️ {w}" for w in warnings)
        return (
            text,
            ranking_figure(Ranking(ranking.matches[: int(top_k)], ranking.threshold)),
            classes,
            embedding_map_figure(gallery, emb.vector),
            spectrogram_figure(emb),
        )

    def query_evidence(self, session: Session, clip: Any) -> str:
        """The Identify query's measured quality (after the answer, never changing it)."""
        encoder = self.encoder(session)
        try:
            (found,) = _clip_evidence(encoder, [self._wav(encoder, clip)])
        except AudioError as err:
            return f"No quality report for this clip: {err}"
        return quality_report({"Query": found})

    # ------------------------------------------------------------------ who spoke when
    def diarize(
        self, session: Session, recording: Any, speakers: float | None, named: bool
    ) -> tuple[Found, go.Figure, list[list], list[list], str, str, gr.Dropdown]:
        """Who spoke when in a recording of up to MAX_RECORDING_SECONDS: the enrolled speakers named
        (when ``named``), the others clustered into "Speaker 1, 2, ..."; ``speakers`` 0 = find out."""
        encoder = self.encoder(session)
        if speakers is not None and (speakers < 0 or speakers != int(speakers)):
            raise gr.Error(f"The number of speakers must be a whole number (0: find out), got {speakers}.")
        gallery = self.gallery_of(session) if named else None
        try:
            wav = self._wav(encoder, recording, MAX_RECORDING_SECONDS)
            result = _diarize(encoder, wav, gallery, int(speakers) if speakers else None)
        except AudioError as err:
            raise gr.Error(str(err)) from None
        rate = encoder.frontend.config.sample_rate
        stem = Path(str(_file_path(recording))).stem if recording is not None else "recording"
        folder = Path(tempfile.mkdtemp(prefix="speakerdemo-"))
        rttm = folder / f"{_rttm_id(stem)}.rttm"
        rttm.write_text(result.to_rttm(_rttm_id(stem)))
        segments = [[round(s.start, 2), round(s.end, 2), s.label, round(s.duration, 2)] for s in result.segments]
        talk = [[label, round(seconds, 1)] for label, seconds in result.talk_time().items()]
        unnamed = [label for label in result.speakers if label not in result.named]
        found = Found(str(_file_path(recording)), result)
        return (
            found,
            diarization_figure(wav, rate, result),
            segments,
            talk,
            diarization_summary(result),
            str(rttm),
            gr.Dropdown(choices=unnamed, value=unnamed[0] if unnamed else None),
        )

    def enroll_found(
        self, session: Session, found: Found | None, label: str | None, name: str, keep_outliers: bool = False
    ) -> tuple[Session, list[list], go.Figure, str]:
        """Enroll a speaker found by :meth:`diarize` under ``name``, from their longest turns."""
        if found is None:
            raise gr.Error("Find who spoke when first.")
        if not (name or "").strip():
            raise gr.Error("Give the speaker a name.")
        turns = sorted((s for s in found.result.segments if s.label == label), key=lambda s: -s.duration)
        if not turns:
            raise gr.Error(f"No speaker {label!r} in the last result: choose one of the list.")
        turns = turns[:FOUND_CLIPS]
        seconds = sum(min(s.duration, FOUND_CLIP_SECONDS) for s in turns)
        if seconds < MIN_FOUND_SPEECH:
            raise gr.Error(f"{label} speaks {seconds:.1f} s in their longest turns: too little to enroll.")
        encoder = self.encoder(session)
        rate = encoder.frontend.config.sample_rate
        try:
            wav = self._wav(encoder, found.path, MAX_RECORDING_SECONDS)
        except AudioError as err:
            raise gr.Error(f"The recording cannot be read again: {err}") from None
        pieces = [
            (rate, wav[round(s.start * rate) : round(min(s.end, s.start + FOUND_CLIP_SECONDS) * rate)]) for s in turns
        ]
        embs = self._embed(encoder, pieces)
        what = f"{label}'s {len(turns)} longest turn(s) ({seconds:.1f} s; find who spoke when again to see the name)"
        return self._enroll(session, encoder, name.strip(), embs, keep_outliers, what)

    # ------------------------------------------------------------------ calibrate
    def calibrate(
        self, session: Session, archive: Any, use_gallery: bool, target_far_percent: float | None
    ) -> tuple[Session, str, go.Figure, str, gr.Slider]:
        """Calibrate on the user's people: a zip with a folder per person, or the people enrolled
        in the gallery. The result applies to this session's Verify, Identify and Who spoke when."""
        if target_far_percent is None or not 0 < target_far_percent < 100:
            raise gr.Error(f"The target must be a percentage between 0 and 100, got {target_far_percent}.")
        base = self.models.get(session.model)
        if use_gallery:
            gallery = self.gallery_of(session)
            people: dict[str, list[Any]] = {name: list(gallery.clips(name)) for name in gallery.names()}
        elif archive is None:
            raise gr.Error("Upload a zip with one folder of clips per person, or tick 'use the enrolled people'.")
        else:
            try:
                people = people_from_zip(str(_file_path(archive)))
            except ArchiveError as err:
                raise gr.Error(str(err)) from None
        try:
            adapted = _adapt(base, people, target_far_percent / 100)
        except AdaptationError as err:
            raise gr.Error(str(err)) from None
        data = to_bytes(adapted)
        path = Path(tempfile.mkdtemp(prefix="speakerdemo-")) / "calibration.safetensors"
        path.write_bytes(data)
        slider = gr.Slider(*threshold_range(adapted), value=round(adapted.threshold, 3), label=threshold_label(adapted))
        report = adaptation_summary(adapted.adaptation, base.threshold)
        return replace(session, calibration=data), report, adaptation_figure(adapted.adaptation), str(path), slider

    def load_calibration(self, session: Session, file: Any) -> tuple[Session, str, go.Figure, gr.Slider]:
        """Use a calibration file saved from this app (size-limited, validated, this model's only)."""
        if file is None:
            raise gr.Error("Choose a calibration file (.safetensors) to upload.")
        path = Path(str(_file_path(file)))
        if path.stat().st_size > MAX_CALIBRATION_BYTES:
            raise gr.Error(f"A calibration file is at most {MAX_CALIBRATION_BYTES // 2**20} MB.")
        data = path.read_bytes()
        try:
            adapted = from_bytes(self.models.get(session.model), data)
        except AdaptationError as err:
            raise gr.Error(f"Cannot use that calibration: {err}") from None
        report = adaptation_summary(adapted.adaptation, self.models.get(session.model).threshold)
        slider = gr.Slider(*threshold_range(adapted), value=round(adapted.threshold, 3), label=threshold_label(adapted))
        return replace(session, calibration=data), report, adaptation_figure(adapted.adaptation), slider

    def reset_calibration(self, session: Session) -> tuple[Session, str, go.Figure, gr.Slider]:
        """Back to the checkpoint's own calibration (or the operator's) for this session."""
        fresh = replace(session, calibration=None)
        encoder = self.encoder(fresh)
        slider = gr.Slider(*threshold_range(encoder), value=round(encoder.threshold, 3), label=threshold_label(encoder))
        text = "Using the model's own calibration." if encoder.adaptation is None else "Using the app's calibration."
        return fresh, text, go.Figure(), slider

    def export(self, session: Session) -> str:
        """The gallery as a safetensors file to download (a fresh temporary folder per request)."""
        gallery = self.gallery_of(session)
        if not len(gallery):
            raise gr.Error("The gallery is empty: nothing to download.")
        path = Path(tempfile.mkdtemp(prefix="speakerdemo-")) / "gallery.safetensors"
        gallery.save(path)
        return str(path)

    def load(self, session: Session, file: Any) -> tuple[Session, list[list], go.Figure, str]:
        """Replace the gallery by an uploaded one, after checking it fits this model's embeddings."""
        if file is None:
            raise gr.Error("Choose a gallery file (.safetensors) to upload.")
        try:
            loaded = Gallery.load(_file_path(file))
        except GalleryError as err:
            raise gr.Error(f"Cannot load that gallery: {err}") from None
        dim = self.encoder(session).model.embed_dim
        if loaded.dim not in (None, dim):
            raise gr.Error(f"That gallery holds {loaded.dim}-d embeddings; this model makes {dim}-d ones.")

        def replace(g: Gallery) -> None:
            for name in g.names():
                g.remove(name)
            for name in loaded.names():
                g.enroll(name, list(loaded.clips(name)))

        session = self._change(session, replace)
        table, figure = self.gallery_view(session)  # one snapshot: the count matches the table
        return session, table, figure, f"Loaded {len(table)} speaker(s)."

    def switch_model(self, session: Session, model: str) -> tuple[Session, gr.Slider, str, list[list], go.Figure]:
        """A new model makes the session's gallery meaningless: start it afresh, reset the threshold
        slider to the model's default and its score range."""
        fresh = Session(model)
        encoder = self.encoder(fresh)
        slider = gr.Slider(*threshold_range(encoder), value=encoder.threshold, label=threshold_label(encoder))
        return (fresh, slider, read_model_card(self.models.choices[model]), *self.gallery_view(fresh))


def threshold_label(encoder: SpeakerEncoder) -> str:
    """The slider's label: what its default is."""
    rule = encoder.calibration.rule if encoder.calibration is not None else "a neutral cosine, uncalibrated"
    return f"Decision threshold (default: {rule})"


def threshold_range(encoder: SpeakerEncoder) -> tuple[float, float]:
    """The threshold slider's range: a cosine's [-1, 1], or, for scores normalised against a cohort
    (unbounded), whole numbers around every score the calibration saw."""
    if encoder.cohort is None or encoder.calibration is None:
        return -1.0, 1.0
    seen = encoder.calibration.thresholds
    return float(min(-1, np.floor(seen[0]))), float(max(1, np.ceil(seen[-1])))


@gpu
def _embed_batch(
    encoder: SpeakerEncoder, clips: list[Any], max_seconds: float, names: Sequence[str] | None, class_logits: bool
) -> list[Embedding]:
    return encoder.embed_batch(clips, max_seconds=max_seconds, names=names, class_logits=class_logits)


@gpu
def _clip_evidence(encoder: SpeakerEncoder, wavs: list[np.ndarray]) -> list[ClipEvidence]:
    return [clip_evidence(encoder, wav) for wav in wavs]


@gpu
def _diarize(encoder: SpeakerEncoder, wav: np.ndarray, gallery: Gallery | None, speakers: int | None) -> Diarization:
    return diarize(encoder, (encoder.frontend.config.sample_rate, wav), gallery=gallery, speakers=speakers)


@gpu
def _adapt(encoder: SpeakerEncoder, people: dict[str, list[Any]], target_far: float) -> SpeakerEncoder:
    return encoder.adapt(people, target_far)


def _rttm_id(stem: str) -> str:
    """An RTTM file id from a file name: no whitespace (RTTM separates its fields by it)."""
    return "_".join(stem.split()) or "recording"


def _file_path(item: Any) -> Any:
    """Gradio hands files over as paths or objects with ``.name``/``path``; audio tuples pass through."""
    if isinstance(item, (str, os.PathLike)):  # a pathlib.Path's .name is only its base name
        return item
    if isinstance(item, dict) and "path" in item:
        return item["path"]
    return getattr(item, "name", item)


def gallery_table(gallery: Gallery) -> list[list]:
    return [[name, count] for name, count in gallery.clip_counts().items()]


def example_clips() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.wav")) if EXAMPLES_DIR.is_dir() else []
