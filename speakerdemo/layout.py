"""The Gradio layout: the header and one builder per tab, wired to :class:`speakerdemo.ui.Demo`'s handlers.

A builder opens its tab, builds the components, wires their events to Demo methods and returns only
what other parts of the page update. A new tab is one Demo method, one builder here and one call in
:func:`build_demo`; what it needs from elsewhere on the page are its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .app_state import read_model_card
from .ui import MAX_RECORDING_SECONDS, Demo, Session, example_clips, threshold_label, threshold_range


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
    session = gr.State(Session(default))
    encoder = demo.encoder(Session(default))
    gr.Markdown(
        "# 🎙️ speakerdemo\nRecord with your microphone or upload clips (up to "
        f"{demo.max_seconds:.0f} s each). See what the model hears, check whether two clips are the same "
        "speaker, identify speakers you enroll, and find who spoke when in a recording (up to "
        f"{MAX_RECORDING_SECONDS / 60:.0f} minutes)."
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
            label=threshold_label(encoder),
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
        judged = gr.State(None)
        verdict = gr.Markdown("Give two clips and press **Verify**.", elem_id="verdict")
        dist = gr.Plot(label="What the score means")
        with gr.Row():
            spec_a = gr.Plot(label="Clip A: spectrogram and attention")
            spec_b = gr.Plot(label="Clip B: spectrogram and attention")
        with gr.Accordion("Why this score? Which stretches agree, and how good each clip is", open=True):
            with gr.Row():
                agreement = gr.Plot(label="Stretch by stretch", elem_id="verify-agreement")
                quality = gr.Markdown(elem_id="verify-evidence")
    verified = verify_btn.click(
        demo.verify,
        [controls.session, clip_a, clip_b, controls.threshold],
        [spec_a, spec_b, verdict, dist, judged],
        api_name="verify",
    )
    verified.success(
        demo.evidence, [controls.session, clip_a, clip_b, controls.threshold], [agreement, quality], api_name="evidence"
    )
    controls.threshold.change(
        demo.verdict,
        [controls.session, judged, controls.threshold],
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
            keep = gr.Checkbox(False, label="Enroll clips that do not match the speaker's other clips too")
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
    enrolled = enroll_btn.click(demo.enroll, [session, name, mic, files, keep], changed, api_name="enroll")
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
                quality = gr.Markdown(elem_id="identify-evidence")
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
    identified = identify_btn.click(
        demo.identify,
        [controls.session, query, controls.threshold, top_k],
        [text, ranking, classes, emb_map, query_spec],
        api_name="identify",
    )
    identified.success(demo.query_evidence, [controls.session, query], [quality], api_name="query_evidence")


def _diarize_tab(demo: Demo, controls: Controls, table: gr.Dataframe, emb_map: gr.Plot) -> None:
    """Who spoke when in a recording; a speaker found there can be enrolled, which redraws the
    Enroll tab's ``table`` and the Identify tab's ``emb_map``."""
    with gr.Tab("Who spoke when"):
        with gr.Row():
            with gr.Column(scale=2):
                recording = _audio(f"Recording (up to {MAX_RECORDING_SECONDS / 60:.0f} minutes)")
            with gr.Column(scale=1):
                speakers = gr.Number(0, precision=0, minimum=0, label="How many speakers? (0: find out)")
                named = gr.Checkbox(True, label="Name the speakers enrolled in the gallery")
                run_btn = gr.Button("Find who spoke when", variant="primary")
        summary = gr.Markdown(elem_id="diarize-summary")
        timeline = gr.Plot(label="Timeline")
        with gr.Row():
            segments = gr.Dataframe(
                headers=["start (s)", "end (s)", "speaker", "seconds"],
                value=[],
                label="Segments",
                interactive=False,
                elem_id="diarize-segments",
                scale=2,
            )
            with gr.Column(scale=1):
                talk = gr.Dataframe(headers=["speaker", "seconds"], value=[], label="Talk time", interactive=False)
                rttm = gr.File(label="Segments as RTTM", interactive=False)
        with gr.Row():
            label = gr.Dropdown([], label="Found speaker", scale=1)
            name = gr.Textbox(label="Enroll them as", max_lines=1, scale=2)
            keep = gr.Checkbox(False, label="Keep turns that do not match each other", scale=1)
            enroll_btn = gr.Button("Enroll this speaker", scale=1)
        message = gr.Markdown(elem_id="diarize-enroll-message")
    found = gr.State(None)
    session = controls.session
    run_btn.click(
        demo.diarize,
        [session, recording, speakers, named],
        [found, timeline, segments, talk, summary, rttm, label],
        api_name="diarize",
    )
    enroll_btn.click(
        demo.enroll_found,
        [session, found, label, name, keep],
        [session, table, emb_map, message],
        api_name="enroll_found",
    )


def _calibrate_tab(demo: Demo, controls: Controls) -> None:
    """Calibrate on the user's own people; the threshold slider follows."""
    with gr.Tab("Calibrate"):
        gr.Markdown(
            "No default threshold knows your microphones, rooms and language. Give clips of **several "
            "different people** recorded the way you record (2 clips each at least; 10 people or more make "
            "the result far more certain): the app adds them to the model's cohort and sets the threshold so "
            "that your chosen share of different-person pairs passes. Only this browser session uses it."
        )
        with gr.Row():
            with gr.Column():
                archive = gr.File(
                    label="A zip with one folder of clips per person", file_types=[".zip"], type="filepath"
                )
                use_gallery = gr.Checkbox(False, label="…or use the people enrolled in the gallery")
                target = gr.Number(5.0, minimum=0.1, maximum=50, label="Different-person pairs allowed through (%)")
                run_btn = gr.Button("Calibrate", variant="primary")
            with gr.Column():
                saved = gr.File(label="Your calibration (download to use it again)", interactive=False)
                upload = gr.File(
                    label="Upload a calibration (.safetensors)", file_types=[".safetensors"], type="filepath"
                )
                reset_btn = gr.Button("Back to the model's calibration")
        summary = gr.Markdown(elem_id="calibrate-summary")
        figure = gr.Plot(label="Your people's scores")
    session = controls.session
    run_btn.click(
        demo.calibrate,
        [session, archive, use_gallery, target],
        [session, summary, figure, saved, controls.threshold],
        api_name="calibrate",
    )
    upload.upload(
        demo.load_calibration,
        [session, upload],
        [session, summary, figure, controls.threshold],
        api_name="load_calibration",
    )
    reset_btn.click(
        demo.reset_calibration, [session], [session, summary, figure, controls.threshold], api_name="reset_calibration"
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
        _diarize_tab(demo, controls, table, emb_map)
        _calibrate_tab(demo, controls)
        _inspect_tab(demo, controls)
        card = _model_tab(demo)
        session = controls.session
        switched = [session, controls.threshold, card, table, emb_map]
        controls.model.change(demo.switch_model, [session, controls.model], switched, api_name=False)
        blocks.load(demo.gallery_view, [session], [table, emb_map], api_name=False)
    return blocks
