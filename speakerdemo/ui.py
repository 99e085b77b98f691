"""The Gradio demo: plain functions over SpeakerEncoder, Gallery and plots, and the Blocks that wire them.

Every handler is an ordinary function (tests call them directly). User mistakes become
``gr.Error`` with the AudioError's message; nothing else a user sends reaches a stack trace.
Per-session state (embeddings, the session gallery) lives in ``gr.State``; the only state shared
between sessions is the loaded models (read-only) and the optional persistent gallery, which is
changed under a lock and written atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import gradio as gr
import plotly.graph_objects as go

from .audio import MAX_SECONDS, AudioError
from .encoder import CheckpointError, Embedding, SpeakerEncoder
from .gallery import Gallery, GalleryError
from .plots import embedding_map_figure, ranking_figure, score_distribution_figure, spectrogram_figure

MIN_RELIABLE_SPEECH = 2.0      # seconds of speech under which a score is flagged as unreliable
MIN_SPEECH_SHARE = 0.3         # clips with less speech than this share are "mostly silence"
MAX_CLIPPED_SHARE = 0.001      # more clipped samples than this is flagged
MAX_UPLOAD_MB = 20
EXAMPLES_DIR = Path(__file__).parent / "examples"

try:  # On Hugging Face ZeroGPU the GPU is attached only inside functions decorated like this.
    import spaces

    gpu: Callable = spaces.GPU
except ImportError:
    def gpu(fn: Callable) -> Callable:
        return fn


def available_checkpoints(folder: Path) -> dict[str, str]:
    """Checkpoint folders (those with a config.json) by name."""
    if not folder.is_dir():
        return {}
    return {p.name: str(p) for p in sorted(folder.iterdir()) if (p / "config.json").is_file()}


def read_model_card(source: str) -> str:
    """The model card's Markdown without its YAML header, from a folder or the Hub."""
    path = Path(source) / "README.md"
    try:
        if path.is_file():
            text = path.read_text()
        else:
            from huggingface_hub import ModelCard

            text = ModelCard.load(source).content
    except Exception as err:  # an unreachable Hub must not stop the demo; say so in the panel
        return f"*Model card unavailable: {err}*"
    return re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S).strip()


class Models:
    """Encoders loaded once each (the default at start-up, others on first use), shared read-only."""

    def __init__(self, default: str, choices: dict[str, str], device: str | None = None) -> None:
        self.device = device
        self.default = default
        self.choices = dict(choices)
        if default not in self.choices:
            self.choices = {default: default, **self.choices}
        self._loaded: dict[str, SpeakerEncoder] = {}
        self._lock = threading.Lock()
        self.get(default)

    def get(self, name: str | None) -> SpeakerEncoder:
        name = name or self.default
        if name not in self.choices:
            raise gr.Error(f"Unknown model {name!r}.")
        with self._lock:
            if name not in self._loaded:
                try:
                    self._loaded[name] = SpeakerEncoder.from_pretrained(self.choices[name], device=self.device)
                except CheckpointError as err:
                    raise gr.Error(str(err)) from None
            return self._loaded[name]


class SharedGallery:
    """The persistent gallery of ``--gallery FILE``: changed under a lock, saved atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.gallery = Gallery.load(path) if path.exists() else Gallery()

    def update(self, change: Callable[[Gallery], None]) -> Gallery:
        with self.lock:
            candidate = self.gallery.copy()
            change(candidate)
            candidate.save(self.path)
            self.gallery = candidate
            return candidate.copy()

    def snapshot(self) -> Gallery:
        with self.lock:
            return self.gallery.copy()


@dataclass
class Session:
    """What one browser session holds: its model choice and gallery (unless the gallery is shared)."""

    model: str = ""
    gallery: Gallery = field(default_factory=Gallery)


@dataclass
class Demo:
    """Everything the handlers share: models and the optional persistent gallery."""

    models: Models
    shared: SharedGallery | None = None
    max_seconds: float = MAX_SECONDS

    # ------------------------------------------------------------------ embeddings
    def embed(self, model: str, clips: Sequence[Any], names: Sequence[str] | None = None) -> list[Embedding]:
        """Embed clips (paths or (sr, array)); bad audio becomes a gr.Error naming the clip and the reason."""
        encoder = self.models.get(model)
        if any(c is None for c in clips):
            raise gr.Error("Please record or upload a clip first.")
        try:
            return _embed_batch(encoder, list(clips), self.max_seconds, names)
        except AudioError as err:
            raise gr.Error(str(err)) from None

    # ------------------------------------------------------------------ inspect
    def inspect(self, model: str, clip: Any) -> tuple[go.Figure, str]:
        emb = self.embed(model, [clip])[0]
        return spectrogram_figure(emb), clip_report(emb)

    # ------------------------------------------------------------------ verify
    def verify(self, model: str, a: Any, b: Any, threshold: float) -> tuple[go.Figure, go.Figure, str, go.Figure, float]:
        ea, eb = self.embed(model, [a, b], ["Clip A", "Clip B"])
        score = self.models.get(model).score(ea, eb)
        text, dist = self.verdict(model, score, threshold)
        warnings = [f"**Clip A:** {w}" for w in clip_warnings(ea)] + [f"**Clip B:** {w}" for w in clip_warnings(eb)]
        report = text + ("\n\n" + "\n\n".join(f"⚠️ {w}" for w in warnings) if warnings else "")
        return spectrogram_figure(ea, "Clip A"), spectrogram_figure(eb, "Clip B"), report, dist, score

    def verdict(self, model: str, score: float | None, threshold: float) -> tuple[str, go.Figure]:
        """Decision and error rates for a score at a threshold; no model call (slider changes)."""
        encoder = self.models.get(model)
        calibration = encoder.calibration
        if score is None:
            return "Give two clips and press **Verify**.", score_distribution_figure(calibration, 0.0, threshold)
        same = score >= threshold
        lines = [f"## {'✅ Same speaker' if same else '❌ Different speakers'}",
                 f"Cosine similarity **{score:.3f}** against threshold **{threshold:.3f}**."]
        if calibration is not None:
            far, frr = calibration.rates_at(threshold)
            lines.append(
                f"At this threshold, on {calibration.trials or 'the calibration trials'}, about "
                f"**{100 * far:.1f} %** of different-speaker pairs are accepted (false accepts) and "
                f"**{100 * frr:.1f} %** of same-speaker pairs rejected (false rejects). "
                f"The default {calibration.threshold:.3f} is the equal-error-rate point (EER {100 * calibration.eer:.2f} %)."
            )
        else:
            lines.append("This checkpoint has no calibration: the threshold's error rates are unknown.")
        return "\n\n".join(lines), score_distribution_figure(calibration, score, threshold)

    # ------------------------------------------------------------------ gallery
    def gallery_of(self, session: Session) -> Gallery:
        return self.shared.snapshot() if self.shared is not None else session.gallery

    def _change(self, session: Session, change: Callable[[Gallery], None]) -> Session:
        if self.shared is not None:
            self.shared.update(change)
            return session
        gallery = session.gallery.copy()
        change(gallery)
        return Session(session.model, gallery)

    def enroll(self, session: Session, name: str, clips: Sequence[Any] | None) -> tuple[Session, list[list], go.Figure, str]:
        clips = [c for c in (clips or []) if c is not None]
        if not (name or "").strip():
            raise gr.Error("Give the speaker a name.")
        if not clips:
            raise gr.Error("Record or upload at least one clip of the speaker.")
        embs = self.embed(session.model, [_file_path(c) for c in clips])
        try:
            session = self._change(session, lambda g: g.enroll(name, [e.vector for e in embs]))
        except ValueError as err:
            raise gr.Error(str(err)) from None
        warnings = [w for e in embs for w in clip_warnings(e)]
        note = f"Enrolled **{name.strip()}** with {len(embs)} clip(s)."
        if warnings:
            note += " ⚠️ " + " ".join(sorted(set(warnings)))
        gallery = self.gallery_of(session)
        return session, gallery_table(gallery), embedding_map_figure(gallery), note

    def remove(self, session: Session, name: str) -> tuple[Session, list[list], go.Figure, str]:
        try:
            session = self._change(session, lambda g: g.remove(name or ""))
        except ValueError as err:
            raise gr.Error(str(err)) from None
        gallery = self.gallery_of(session)
        return session, gallery_table(gallery), embedding_map_figure(gallery), f"Removed **{name}**."

    def identify(self, session: Session, clip: Any, threshold: float, top_k: int) -> tuple[str, go.Figure, list[list], go.Figure, go.Figure]:
        gallery = self.gallery_of(session)
        if not len(gallery):
            raise gr.Error("No speakers enrolled yet: enroll at least one in the Enroll tab.")
        emb = self.embed(session.model, [clip])[0]
        classes = [[name, round(p, 4)] for name, p in self.models.get(session.model).classify(emb, top_k=5)]
        ranking = gallery.rank(emb.vector, top_k=int(top_k), threshold=threshold)
        best = ranking.matches[0]
        text = (f"## {ranking.best}\n\nBest match **{best.name}** with cosine {best.score:.3f} "
                f"(threshold {threshold:.3f}).")
        if ranking.best == "unknown":
            text += " Below the threshold, so the speaker is reported as **unknown**."
        warnings = clip_warnings(emb)
        if warnings:
            text += "\n\n" + "\n\n".join(f"⚠️ {w}" for w in warnings)
        return (text, ranking_figure(ranking), classes, embedding_map_figure(gallery, emb.vector),
                spectrogram_figure(emb))

    def export(self, session: Session) -> str:
        gallery = self.gallery_of(session)
        if not len(gallery):
            raise gr.Error("The gallery is empty: nothing to download.")
        path = Path(tempfile.mkdtemp(prefix="speakerdemo-")) / "gallery.safetensors"
        gallery.save(path)
        return str(path)

    def load(self, session: Session, file: Any) -> tuple[Session, list[list], go.Figure, str]:
        if file is None:
            raise gr.Error("Choose a gallery file (.safetensors) to upload.")
        try:
            loaded = Gallery.load(_file_path(file))
        except GalleryError as err:
            raise gr.Error(f"Cannot load that gallery: {err}") from None
        dim = self.models.get(session.model).model.embed_dim
        if loaded.dim not in (None, dim):
            raise gr.Error(f"That gallery holds {loaded.dim}-d embeddings; this model makes {dim}-d ones.")

        def replace(g: Gallery) -> None:
            for name in g.names():
                g.remove(name)
            for name in loaded.names():
                g.enroll(name, list(loaded.clips(name)))

        session = self._change(session, replace)
        gallery = self.gallery_of(session)
        return session, gallery_table(gallery), embedding_map_figure(gallery), f"Loaded {len(gallery)} speaker(s)."

    def switch_model(self, session: Session, model: str) -> tuple[Session, float, str, list[list], go.Figure]:
        """A new model makes the session's gallery meaningless: start it afresh, reset the threshold."""
        encoder = self.models.get(model)
        gallery = self.gallery_of(Session(model))
        return (Session(model), encoder.threshold, read_model_card(self.models.choices[model]),
                gallery_table(gallery), embedding_map_figure(gallery))


@gpu
def _embed_batch(encoder: SpeakerEncoder, clips: list[Any], max_seconds: float,
                 names: Sequence[str] | None) -> list[Embedding]:
    return encoder.embed_batch(clips, max_seconds=max_seconds, names=names)


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
        warnings.append(f"Only {emb.speech_seconds:.1f} s of speech: scores from clips under "
                        f"{MIN_RELIABLE_SPEECH:.0f} s of speech are unreliable.")
    if emb.speech_seconds < MIN_SPEECH_SHARE * emb.duration_seconds:
        warnings.append(f"The clip is mostly silence ({emb.speech_seconds:.1f} s of speech in "
                        f"{emb.duration_seconds:.1f} s); only the speech was used, but the score may be unreliable.")
    if emb.clipped_fraction > MAX_CLIPPED_SHARE:
        warnings.append(f"{100 * emb.clipped_fraction:.1f} % of the samples are clipped (recording too loud): "
                        "the score may be unreliable.")
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
def _audio(label: str) -> gr.Audio:
    return gr.Audio(sources=["microphone", "upload"], type="filepath", label=label)


def build_demo(demo: Demo) -> gr.Blocks:
    """The Blocks app; handlers are the Demo's methods."""
    default = demo.models.default
    encoder = demo.models.get(default)
    examples = example_clips()
    with gr.Blocks(title="speakerdemo — who is speaking?") as blocks:
        session = gr.State(Session(default))
        gr.Markdown(
            "# 🎙️ speakerdemo\nRecord with your microphone or upload clips (up to "
            f"{demo.max_seconds:.0f} s, {MAX_UPLOAD_MB} MB). See what the model hears, check whether two clips "
            "are the same speaker, and identify speakers you enroll."
        )
        with gr.Row():
            model = gr.Dropdown(list(demo.models.choices), value=default, label="Model",
                                interactive=demo.shared is None and len(demo.models.choices) > 1, scale=3)
            threshold = gr.Slider(-1.0, 1.0, value=round(encoder.threshold, 3), step=0.001, scale=4,
                                  label="Decision threshold (default: the checkpoint's calibrated EER threshold)")

        with gr.Tab("Verify"):
            with gr.Row():
                clip_a, clip_b = _audio("Clip A"), _audio("Clip B")
            if len(examples) >= 2:
                gr.Examples([[examples[0], examples[1]], [examples[0], examples[-1]]], [clip_a, clip_b],
                            label="Generated example clips (espeak-ng voices)")
            verify_btn = gr.Button("Verify", variant="primary")
            score = gr.State(None)
            verdict = gr.Markdown("Give two clips and press **Verify**.", elem_id="verdict")
            dist = gr.Plot(label="What the score means")
            with gr.Row():
                spec_a, spec_b = gr.Plot(label="Clip A: spectrogram and attention"), gr.Plot(label="Clip B: spectrogram and attention")

        with gr.Tab("Enroll"):
            with gr.Row():
                with gr.Column():
                    name = gr.Textbox(label="Speaker name", max_lines=1)
                    enroll_mic = _audio("Record a clip (optional)")
                    enroll_files = gr.File(label="…and/or upload clips", file_count="multiple", type="filepath")
                    enroll_btn = gr.Button("Enroll", variant="primary")
                    enroll_msg = gr.Markdown(elem_id="enroll-message")
                with gr.Column():
                    table = gr.Dataframe(headers=["speaker", "clips"], value=[], label="Enrolled speakers",
                                         interactive=False, elem_id="gallery-table")
                    with gr.Row():
                        remove_name = gr.Textbox(label="Remove speaker", max_lines=1, scale=3)
                        remove_btn = gr.Button("Remove", scale=1)
                    with gr.Row():
                        export_btn = gr.Button("Download gallery")
                        export_file = gr.File(label="Gallery file", interactive=False)
                    import_file = gr.File(label="Upload a gallery (.safetensors)", file_types=[".safetensors"], type="filepath")

        with gr.Tab("Identify"):
            with gr.Row():
                with gr.Column():
                    query = _audio("Who is speaking?")
                    top_k = gr.Slider(1, 10, value=5, step=1, label="Show top k")
                    identify_btn = gr.Button("Identify", variant="primary")
                    ident_text = gr.Markdown(elem_id="identify-result")
                with gr.Column():
                    ranking = gr.Plot(label="Ranking")
                    classes = gr.Dataframe(headers=["training speaker", "probability"], value=[],
                                           label="Closest training speakers (the checkpoint's classifier)",
                                           interactive=False)
            with gr.Row():
                emb_map = gr.Plot(label="Embedding map")
                query_spec = gr.Plot(label="Query: spectrogram and attention")

        with gr.Tab("Inspect"):
            inspect_in = _audio("Clip")
            inspect_btn = gr.Button("Inspect", variant="primary")
            inspect_text = gr.Markdown(elem_id="inspect-result")
            inspect_fig = gr.Plot(label="Log-mel spectrogram, attention-pooling weights, speech regions")

        with gr.Tab("Model"):
            card = gr.Markdown(read_model_card(demo.models.choices[default]))

        gallery_outputs = [session, table, emb_map]
        verify_btn.click(lambda s, a, b, t: demo.verify(s.model, a, b, t), [session, clip_a, clip_b, threshold],
                         [spec_a, spec_b, verdict, dist, score], api_name="verify")
        threshold.change(lambda s, sc, t: demo.verdict(s.model, sc, t), [session, score, threshold],
                         [verdict, dist], api_name=False, show_progress="hidden")
        enroll_btn.click(lambda s, n, m, f: demo.enroll(s, n, [m, *(f or [])]), [session, name, enroll_mic, enroll_files],
                         [*gallery_outputs, enroll_msg], api_name="enroll").success(
            lambda: (None, None), None, [enroll_mic, enroll_files], api_name=False, show_progress="hidden")
        remove_btn.click(demo.remove, [session, remove_name], [*gallery_outputs, enroll_msg], api_name="remove")
        export_btn.click(demo.export, [session], [export_file], api_name="export_gallery")
        import_file.upload(demo.load, [session, import_file], [*gallery_outputs, enroll_msg], api_name="import_gallery")
        identify_btn.click(demo.identify, [session, query, threshold, top_k],
                           [ident_text, ranking, classes, emb_map, query_spec], api_name="identify")
        inspect_btn.click(lambda s, c: demo.inspect(s.model, c), [session, inspect_in], [inspect_fig, inspect_text],
                          api_name="inspect")
        model.change(demo.switch_model, [session, model], [session, threshold, card, table, emb_map], api_name=False)
        blocks.load(lambda s: (gallery_table(demo.gallery_of(s)), embedding_map_figure(demo.gallery_of(s))),
                    [session], [table, emb_map], api_name=False)
    return blocks
