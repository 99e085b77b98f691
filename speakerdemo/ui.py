"""The Gradio demo: the request handlers over SpeakerEncoder, Gallery and plots, and one Blocks builder per tab.

Every handler is a method of :class:`Demo` that takes the session (a :class:`Session`) first and
the components' values after it, in the order the Blocks pass them, so events are wired to the
methods themselves and tests call them directly. A handler fetches its encoder once per request.
User mistakes become ``gr.Error`` with the AudioError's message; nothing else a user sends reaches
a stack trace. Per-session state (model choice, the session gallery) lives in ``gr.State``; what
is shared between sessions (models, the persistent gallery) is in ``speakerdemo.app_state``.
The layout is built tab by tab (see the layout section): a tab is a Demo method and a builder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from .app_state import Models, SharedGallery, read_model_card
from .audio import MAX_SECONDS, AudioError
from .cohort import Cohort
from .conditions import DESCRIPTIONS, clip_condition, gallery_scorer, kind_shift, pair_score
from .encoder import Embedding, SpeakerEncoder
from .gallery import Gallery, GalleryError
from .plots import embedding_map_figure, ranking_figure, score_distribution_figure, spectrogram_figure
from .scoring import Calibration

MIN_RELIABLE_SPEECH = 2.0  # seconds of speech under which a score is flagged as unreliable
MIN_SPEECH_SHARE = 0.3  # clips with less speech than this share are "mostly silence"
MAX_CLIPPED_SHARE = 0.001  # more clipped samples than this is flagged
MAX_UPLOAD_MB = 20
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
    """What one browser session holds: its model choice and gallery (unless the gallery is shared)."""

    model: str = ""
    gallery: Gallery = field(default_factory=Gallery)


@dataclass
class Demo:
    """The handlers, and what they share: models and the optional persistent gallery."""

    models: Models
    shared: SharedGallery | None = None
    max_seconds: float = MAX_SECONDS

    def encoder(self, session: Session) -> SpeakerEncoder:
        """The session's encoder. Each handler calls this once and passes the encoder along."""
        return self.models.get(session.model)

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
    ) -> tuple[go.Figure, go.Figure, str, go.Figure, str, float]:
        """Are clips A and B the same speaker? Both are embedded in one batch. The score is the
        checkpoint's (:meth:`~speakerdemo.encoder.SpeakerEncoder.score`: the cosine, normalised
        against its cohort when it has one) less the calibration's shift for their kind of clip
        (:func:`~speakerdemo.conditions.pair_condition`); kind and score are kept in the page's
        state so that the threshold slider can redraw the verdict without the model."""
        encoder = self.encoder(session)
        ea, eb = self._embed(encoder, [a, b], ["Clip A", "Clip B"])
        condition, score = pair_score(encoder, ea, eb)
        text, dist = calibrated_verdict(encoder.calibration, score, threshold, condition, encoder.cohort)
        warnings = [f"**Clip A:** {w}" for w in clip_warnings(ea)] + [f"**Clip B:** {w}" for w in clip_warnings(eb)]
        report = text + ("\n\n" + "\n\n".join(f"⚠️ {w}" for w in warnings) if warnings else "")
        return spectrogram_figure(ea, "Clip A"), spectrogram_figure(eb, "Clip B"), report, dist, condition, score

    def verdict(
        self, session: Session, score: float | None, condition: str | None, threshold: float
    ) -> tuple[str, go.Figure]:
        """The verdict redrawn for a new threshold (slider changes): no model call."""
        encoder = self.encoder(session)
        return calibrated_verdict(encoder.calibration, score, threshold, condition, encoder.cohort)

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
        return Session(session.model, gallery)

    def enroll(
        self, session: Session, name: str, mic: Any, files: Sequence[Any] | None
    ) -> tuple[Session, list[list], go.Figure, str]:
        """Enroll ``name`` from the microphone clip and/or the uploaded files (either may be empty)."""
        clips = [c for c in [mic, *(files or [])] if c is not None]
        if not (name or "").strip():
            raise gr.Error("Give the speaker a name.")
        if not clips:
            raise gr.Error("Record or upload at least one clip of the speaker.")
        embs = self.embed(session, [_file_path(c) for c in clips])
        try:
            session = self._change(session, lambda g: g.enroll(name, [e.vector for e in embs]))
        except ValueError as err:
            raise gr.Error(str(err)) from None
        warnings = [w for e in embs for w in clip_warnings(e)]
        note = f"Enrolled **{name.strip()}** with {len(embs)} clip(s)."
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
        shift = kind_shift(encoder, kind)
        ranking = gallery.rank(emb.vector, top_k=int(top_k), threshold=threshold, score=gallery_scorer(encoder, shift))
        best = ranking.matches[0]
        words = score_words(best.score, shift, kind, encoder.cohort)
        text = f"## {ranking.best}\n\nBest match **{best.name}** with {words} "
        text += f"(threshold {threshold:.3f})."
        if ranking.best == "unknown":
            text += " Below the threshold, so the speaker is reported as **unknown**."
        warnings = clip_warnings(emb)
        if warnings:
            text += "\n\n" + "\n\n".join(f"⚠️ {w}" for w in warnings)
        return (
            text,
            ranking_figure(ranking),
            classes,
            embedding_map_figure(gallery, emb.vector),
            spectrogram_figure(emb),
        )

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
        slider = gr.Slider(*threshold_range(encoder), value=encoder.threshold)
        return (fresh, slider, read_model_card(self.models.choices[model]), *self.gallery_view(fresh))


def threshold_range(encoder: SpeakerEncoder) -> tuple[float, float]:
    """The threshold slider's range: a cosine's [-1, 1], or, for scores normalised against a cohort
    (unbounded), whole numbers around every score the calibration saw."""
    if encoder.cohort is None or encoder.calibration is None:
        return -1.0, 1.0
    seen = encoder.calibration.thresholds
    return float(min(-1, np.floor(seen[0]))), float(max(1, np.ceil(seen[-1])))


def score_words(score: float, shift: float, kind: str | None, cohort: Cohort | None = None) -> str:
    """How a verdict names its score: the cosine, the cosine less the shift for the kind of clip,
    or the cosine normalised against the checkpoint's cohort."""
    if cohort is not None:
        return (
            f"score **{score:.3f}** (the cosine similarity normalised against {len(cohort.vectors)} cohort "
            "clips of other speakers: about how many spreads it lies above the closest strangers' scores)"
        )
    if not shift:
        return f"cosine similarity **{score:.3f}**"
    return (
        f"score **{score:.3f}** (the cosine similarity {score + shift:.3f} less {shift:.3f} "
        f"for {DESCRIPTIONS.get(kind or '', kind)})"
    )


def calibrated_verdict(
    calibration: Calibration | None,
    score: float | None,
    threshold: float,
    condition: str | None = None,
    cohort: Cohort | None = None,
) -> tuple[str, go.Figure]:
    """Decision and error rates for a score at a threshold, from the checkpoint's calibration alone.

    With a ``condition`` the checkpoint was calibrated on (a checkpoint calibrated across
    conditions), the rates and score distributions for clips like the user's come first: a
    threshold that lets few strangers through on clean 16-kHz speech can let many through on a
    phone line.
    """
    if score is None:
        return "Give two clips and press **Verify**.", score_distribution_figure(calibration, 0.0, threshold)
    same = score >= threshold
    shift = calibration.shifts.get(condition, 0.0) if calibration is not None and condition else 0.0
    words = score_words(score, shift, condition, cohort)
    lines = [
        f"## {'✅ Same speaker' if same else '❌ Different speakers'}",
        f"{words[0].upper()}{words[1:]} against threshold **{threshold:.3f}**.",
    ]
    if calibration is None:
        lines.append("This checkpoint has no calibration: the threshold's error rates are unknown.")
        return "\n\n".join(lines), score_distribution_figure(calibration, score, threshold)
    matched = calibration.conditions.get(condition) if condition else None
    if matched is not None:
        far, frr = matched.rates_at(threshold)
        lines.append(
            f"For {DESCRIPTIONS.get(condition, condition)}, like these two, about **{100 * far:.1f} %** of "
            f"different-speaker pairs pass at this threshold (false accepts) and **{100 * frr:.1f} %** of "
            "same-speaker pairs are rejected (false rejects)."
        )
    far, frr = calibration.rates_at(threshold)
    lines.append(
        f"{'Over all' if matched is not None else 'On'} {calibration.trials or 'the calibration trials'}: "
        f"about **{100 * far:.1f} %** false accepts and **{100 * frr:.1f} %** false rejects. "
        f"The default {calibration.threshold:.3f} is {calibration.rule} "
        f"(EER {100 * calibration.eer:.2f} %)."
    )
    return "\n\n".join(lines), score_distribution_figure(matched or calibration, score, threshold)


@gpu
def _embed_batch(
    encoder: SpeakerEncoder, clips: list[Any], max_seconds: float, names: Sequence[str] | None, class_logits: bool
) -> list[Embedding]:
    return encoder.embed_batch(clips, max_seconds=max_seconds, names=names, class_logits=class_logits)


def _file_path(item: Any) -> Any:
    """Gradio hands files over as paths or objects with ``.name``/``path``; audio tuples pass through."""
    if isinstance(item, (str, os.PathLike)):  # a pathlib.Path's .name is only its base name
        return item
    if isinstance(item, dict) and "path" in item:
        return item["path"]
    return getattr(item, "name", item)


def clip_warnings(emb: Embedding) -> list[str]:
    """Why a score from this clip may be unreliable, in words."""
    warnings = []
    if emb.speech_seconds < MIN_RELIABLE_SPEECH:
        warnings.append(
            f"Only {emb.speech_seconds:.1f} s of speech: scores from clips under "
            f"{MIN_RELIABLE_SPEECH:.0f} s of speech are unreliable."
        )
    if emb.speech_seconds < MIN_SPEECH_SHARE * emb.duration_seconds:
        warnings.append(
            f"The clip is mostly silence ({emb.speech_seconds:.1f} s of speech in "
            f"{emb.duration_seconds:.1f} s); only the speech was used, but the score may be unreliable."
        )
    if emb.clipped_fraction > MAX_CLIPPED_SHARE:
        warnings.append(
            f"{100 * emb.clipped_fraction:.1f} % of the samples are clipped (recording too loud): "
            "the score may be unreliable."
        )
    return warnings


def clip_report(emb: Embedding) -> str:
    regions = ", ".join(f"{a:.2f}–{b:.2f} s" for a, b in emb.speech_regions[:8])
    more = " …" if len(emb.speech_regions) > 8 else ""
    lines = [f"**{emb.speech_seconds:.1f} s of speech** in {emb.duration_seconds:.1f} s. Speech: {regions}{more}"]
    lines += [f"⚠️ {w}" for w in clip_warnings(emb)]
    return "\n\n".join(lines)


def gallery_table(gallery: Gallery) -> list[list]:
    return [[name, count] for name, count in gallery.clip_counts().items()]


def example_clips() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.wav")) if EXAMPLES_DIR.is_dir() else []


# ---------------------------------------------------------------------- layout
# One builder per tab: it opens its tab, builds the components, wires their events to Demo methods
# and returns only what other parts of the page update. A new tab is one Demo method, one builder
# and one call in build_demo; what it needs from elsewhere on the page are its parameters.
@dataclass(frozen=True)
class Controls:
    """What every tab reads: the session and the header row's model dropdown and threshold slider."""

    session: gr.State
    model: gr.Dropdown
    threshold: gr.Slider


def _audio(label: str) -> gr.Audio:
    return gr.Audio(sources=["microphone", "upload"], type="filepath", label=label)


def _header(demo: Demo) -> Controls:
    """Title, then the model dropdown and threshold slider that every tab's handlers read."""
    default = demo.models.default
    encoder = demo.models.get(default)
    session = gr.State(Session(default))
    gr.Markdown(
        "# 🎙️ speakerdemo\nRecord with your microphone or upload clips (up to "
        f"{demo.max_seconds:.0f} s, {MAX_UPLOAD_MB} MB). See what the model hears, check whether two clips "
        "are the same speaker, and identify speakers you enroll."
    )
    with gr.Row():
        model = gr.Dropdown(
            list(demo.models.choices),
            value=default,
            label="Model",
            interactive=demo.shared is None and len(demo.models.choices) > 1,  # a shared gallery pins the model
            scale=3,
        )
        threshold = gr.Slider(
            *threshold_range(encoder),
            value=round(encoder.threshold, 3),
            step=0.001,
            scale=4,
            label="Decision threshold (default: the checkpoint's calibrated EER threshold)",
        )
    return Controls(session, model, threshold)


def _verify_tab(demo: Demo, controls: Controls) -> None:
    """Two clips, one verdict. The score and kind of clip stay in the page so that moving the
    threshold redraws the verdict (:meth:`Demo.verdict`) without the model."""
    examples = example_clips()
    with gr.Tab("Verify"):
        with gr.Row():
            clip_a, clip_b = _audio("Clip A"), _audio("Clip B")
        if len(examples) >= 2:
            gr.Examples(
                [[examples[0], examples[1]], [examples[0], examples[-1]]],
                [clip_a, clip_b],
                label="Generated example clips (espeak-ng voices)",
            )
        verify_btn = gr.Button("Verify", variant="primary")
        score = gr.State(None)
        condition = gr.State(None)
        verdict = gr.Markdown("Give two clips and press **Verify**.", elem_id="verdict")
        dist = gr.Plot(label="What the score means")
        with gr.Row():
            spec_a = gr.Plot(label="Clip A: spectrogram and attention")
            spec_b = gr.Plot(label="Clip B: spectrogram and attention")
    verify_btn.click(
        demo.verify,
        [controls.session, clip_a, clip_b, controls.threshold],
        [spec_a, spec_b, verdict, dist, condition, score],
        api_name="verify",
    )
    controls.threshold.change(
        demo.verdict,
        [controls.session, score, condition, controls.threshold],
        [verdict, dist],
        api_name=False,
        show_progress="hidden",
    )


def _enroll_tab(demo: Demo, controls: Controls, emb_map: gr.Plot) -> gr.Dataframe:
    """Enroll, remove, download and upload speakers. Every change redraws the gallery table and
    ``emb_map`` (shown in the Identify tab); returns the table, which model switches and page
    loads redraw too."""
    with gr.Tab("Enroll"), gr.Row():
        with gr.Column():
            name = gr.Textbox(label="Speaker name", max_lines=1)
            mic = _audio("Record a clip (optional)")
            files = gr.File(label="…and/or upload clips", file_count="multiple", type="filepath")
            enroll_btn = gr.Button("Enroll", variant="primary")
            message = gr.Markdown(elem_id="enroll-message")
        with gr.Column():
            table = gr.Dataframe(
                headers=["speaker", "clips"],
                value=[],
                label="Enrolled speakers",
                interactive=False,
                elem_id="gallery-table",
            )
            with gr.Row():
                remove_name = gr.Textbox(label="Remove speaker", max_lines=1, scale=3)
                remove_btn = gr.Button("Remove", scale=1)
            with gr.Row():
                export_btn = gr.Button("Download gallery")
                export_file = gr.File(label="Gallery file", interactive=False)
            import_file = gr.File(label="Upload a gallery (.safetensors)", file_types=[".safetensors"], type="filepath")
    session = controls.session
    changed = [session, table, emb_map, message]
    enrolled = enroll_btn.click(demo.enroll, [session, name, mic, files], changed, api_name="enroll")
    enrolled.success(lambda: (None, None), None, [mic, files], api_name=False, show_progress="hidden")
    remove_btn.click(demo.remove, [session, remove_name], changed, api_name="remove")
    export_btn.click(demo.export, [session], [export_file], api_name="export_gallery")
    import_file.upload(demo.load, [session, import_file], changed, api_name="import_gallery")
    return table


def _identify_tab(demo: Demo, controls: Controls, emb_map: gr.Plot) -> None:
    """Who of the enrolled speakers is this? Renders ``emb_map``, which the Enroll tab redraws."""
    with gr.Tab("Identify"):
        with gr.Row():
            with gr.Column():
                query = _audio("Who is speaking?")
                top_k = gr.Slider(1, 10, value=5, step=1, label="Show top k")
                identify_btn = gr.Button("Identify", variant="primary")
                text = gr.Markdown(elem_id="identify-result")
            with gr.Column():
                ranking = gr.Plot(label="Ranking")
                classes = gr.Dataframe(
                    headers=["training speaker", "probability"],
                    value=[],
                    label="Closest training speakers (checkpoints with a classifier head)",
                    interactive=False,
                )
        with gr.Row():
            emb_map.render()
            query_spec = gr.Plot(label="Query: spectrogram and attention")
    identify_btn.click(
        demo.identify,
        [controls.session, query, controls.threshold, top_k],
        [text, ranking, classes, emb_map, query_spec],
        api_name="identify",
    )


def _inspect_tab(demo: Demo, controls: Controls) -> None:
    """What the model hears in one clip."""
    with gr.Tab("Inspect"):
        clip = _audio("Clip")
        inspect_btn = gr.Button("Inspect", variant="primary")
        text = gr.Markdown(elem_id="inspect-result")
        figure = gr.Plot(label="Log-mel spectrogram, attention-pooling weights, speech regions")
    inspect_btn.click(demo.inspect, [controls.session, clip], [figure, text], api_name="inspect")


def _model_tab(demo: Demo) -> gr.Markdown:
    """The default model's card; returned for model switches to replace."""
    with gr.Tab("Model"):
        return gr.Markdown(read_model_card(demo.models.choices[demo.models.default]))


def build_demo(demo: Demo) -> gr.Blocks:
    """The Blocks app: the header and the tabs in order, then the events that span tabs."""
    # The embedding map is shown in the Identify tab but redrawn by the Enroll tab's events, model
    # switches and page loads: made here, before either tab, and rendered by the Identify tab.
    emb_map = gr.Plot(label="Embedding map", render=False)
    with gr.Blocks(title="speakerdemo — who is speaking?") as blocks:
        controls = _header(demo)
        _verify_tab(demo, controls)
        table = _enroll_tab(demo, controls, emb_map)
        _identify_tab(demo, controls, emb_map)
        _inspect_tab(demo, controls)
        card = _model_tab(demo)
        session = controls.session
        switched = [session, controls.threshold, card, table, emb_map]
        controls.model.change(demo.switch_model, [session, controls.model], switched, api_name=False)
        blocks.load(demo.gallery_view, [session], [table, emb_map], api_name=False)
    return blocks
