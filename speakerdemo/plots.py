"""Plotly figures for the demo: what the model hears, what a score means, who is enrolled, which
stretches of two clips agree, who spoke when.

Figures are built from library results alone (an ``Embedding``, a ``Calibration``, a ``Gallery``,
a ``WindowMap``, a ``Diarization``), so they cost no model call and can be redrawn when only a
threshold changes.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .adapt import Adaptation
from .diarize import Diarization
from .encoder import Embedding
from .evidence import WindowMap
from .gallery import Gallery, Ranking
from .metrics import det_curve
from .scoring import Calibration

SPEECH_FILL = "rgba(46, 160, 67, 0.18)"
TARGET_COLOUR = "#2e7d32"
NONTARGET_COLOUR = "#c62828"
MAX_PLOT_FRAMES = 1500
MAX_ENVELOPE_POINTS = 2000  # a recording's waveform is drawn as the peak of this many stretches at most
SPEAKER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")

# A checkpoint with a score cohort normalises the cosine; one without may shift it per kind of clip.
SCORE_AXIS = "score: cosine similarity, normalised against the model's cohort or less the shift for the kind of clip"


def _decimate(emb: Embedding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin long clips for the browser; attention is summed per kept frame so its total stays 1."""
    step = int(np.ceil(len(emb.frame_times) / MAX_PLOT_FRAMES))
    if step == 1:
        return emb.frame_times, emb.mel, emb.attention
    n = len(emb.attention) // step * step
    attention = emb.attention[:n].reshape(-1, step).sum(axis=1)
    return emb.frame_times[:n:step], emb.mel[:n:step], attention


def _speech_shapes(regions: list[tuple[float, float]]) -> list[dict]:
    """Speech regions as shaded bands over the attention panel (what ``add_vrect`` makes), as layout
    entries for :func:`spectrogram_figure`'s one constructor call."""
    shape = {"type": "rect", "xref": "x2", "yref": "y2 domain", "y0": 0, "y1": 1}
    return [{**shape, "x0": start, "x1": end, "fillcolor": SPEECH_FILL, "line": {"width": 0}} for start, end in regions]


def spectrogram_figure(emb: Embedding, title: str = "") -> go.Figure:
    """Log-mel spectrogram over attention-pooling weights, on one time axis, speech shaded.

    The two panels are laid out by hand (the layout ``make_subplots(rows=2, shared_xaxes=True)``
    makes) in one constructor call: ``make_subplots``, ``add_vrect`` and ``update_*`` validate the
    figure again at every step, 22 ms per figure, and Verify draws two.
    """
    times, mel, attention = _decimate(emb)
    heading = f"{title} — " if title else ""
    return go.Figure(
        data=[
            go.Heatmap(
                x=times,
                z=mel.T,
                colorscale="Viridis",
                showscale=False,
                name="log-mel",
                hovertemplate="t=%{x:.2f} s<br>mel bin %{y}<br>%{z:.1f}<extra></extra>",
            ),
            go.Scatter(
                x=times,
                y=attention,
                xaxis="x2",
                yaxis="y2",
                mode="lines",
                line={"color": "#ef6c00", "width": 1.5},
                fill="tozeroy",
                name="attention",
                hovertemplate="t=%{x:.2f} s<br>weight %{y:.4f}<extra></extra>",
            ),
        ],
        layout={
            "xaxis": {"anchor": "y", "domain": [0.0, 1.0], "matches": "x2", "showticklabels": False},
            "yaxis": {"anchor": "x", "domain": [0.3472, 1.0], "title": {"text": "mel bin"}},
            "xaxis2": {"anchor": "y2", "domain": [0.0, 1.0], "title": {"text": "time (s)"}},
            "yaxis2": {"anchor": "x2", "domain": [0.0, 0.3072], "title": {"text": "attention"}, "rangemode": "tozero"},
            "shapes": _speech_shapes(emb.speech_regions),
            "title": {
                "text": f"{heading}{emb.speech_seconds:.1f} s of speech in {emb.duration_seconds:.1f} s (shaded)"
            },
            "height": 380,
            "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
            "showlegend": False,
        },
    )


def _marker(x: float, text: str, line: dict) -> tuple[dict, dict]:
    """A vertical line across the plot at ``x`` and its label at the top (what ``add_vline`` with
    ``annotation_text`` makes), as layout entries for one constructor call."""
    shape = {"type": "line", "xref": "x", "yref": "y domain", "x0": x, "x1": x, "y0": 0, "y1": 1, "line": line}
    label = {
        "text": text,
        "x": x,
        "xref": "x",
        "y": 1,
        "yref": "y domain",
        "xanchor": "left",
        "yanchor": "top",
        "showarrow": False,
    }
    return shape, label


def score_distribution_figure(
    calibration: Calibration | None,
    score: float,
    threshold: float,
    band: tuple[float, float] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Target and non-target score densities of the calibration trials, this pair's score marked,
    the "uncertain" ``band`` shaded; ``title`` names the clips the densities are of.

    Built in one constructor call, as :func:`spectrogram_figure` is (11 ms with ``add_vline``)."""
    bars = []
    if calibration is not None:
        edges = np.asarray(calibration.bin_edges)
        centres = (edges[:-1] + edges[1:]) / 2
        width = float(edges[1] - edges[0])
        bars = [
            go.Bar(x=centres, y=hist, width=width, name=name, marker_color=colour, opacity=0.55)
            for hist, name, colour in (
                (calibration.nontarget_hist, "different speakers", NONTARGET_COLOUR),
                (calibration.target_hist, "same speaker", TARGET_COLOUR),
            )
        ]
    markers = [
        _marker(threshold, "threshold", {"color": "#555", "dash": "dash"}),
        _marker(score, f"this pair {score:.3f}", {"color": "#1565c0", "width": 3}),
    ]
    trials = f" ({calibration.trials})" if calibration is not None and calibration.trials else ""
    shapes = [shape for shape, _ in markers]
    if band is not None and band[1] > band[0]:
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": band[0],
                "x1": band[1],
                "y0": 0,
                "y1": 1,
                "fillcolor": "rgba(255, 193, 7, 0.2)",
                "line": {"width": 0},
                "layer": "below",
            }
        )
    xaxis: dict = {"title": {"text": SCORE_AXIS}}
    if calibration is None:  # no bars to fit: keep the cosine axis instead of autoranging on the annotations
        xaxis["range"] = [-1.05, 1.05]
    return go.Figure(
        data=bars,
        layout={
            "barmode": "overlay",
            "title": {"text": title or f"Scores of calibration trials{trials}"},
            "xaxis": xaxis,
            "yaxis": {"title": {"text": "density"}},
            "shapes": shapes,
            "annotations": [label for _, label in markers],
            "height": 300,
            "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
            "legend": {"orientation": "h", "y": -0.3},
        },
    )


def ranking_figure(ranking: Ranking) -> go.Figure:
    """Horizontal bars of the top matches, threshold marked; the best match on top."""
    names = [m.name for m in ranking.matches][::-1]
    scores = [m.score for m in ranking.matches][::-1]
    colours = [TARGET_COLOUR if s >= ranking.threshold else "#9e9e9e" for s in scores]
    line, label = _marker(ranking.threshold, "threshold", {"color": "#555", "dash": "dash"})
    return go.Figure(
        data=[
            go.Bar(
                x=scores,
                y=names,
                orientation="h",
                marker_color=colours,
                text=[f"{s:.3f}" for s in scores],
                textposition="auto",
            )
        ],
        layout={
            "title": {"text": f"Best match: {ranking.best}"},
            "xaxis": {"title": {"text": SCORE_AXIS}},
            "shapes": [line],
            "annotations": [label],
            "height": 120 + 40 * max(1, len(names)),
            "margin": {"l": 10, "r": 10, "t": 40, "b": 40},
        },
    )


def embedding_map_figure(gallery: Gallery, query: np.ndarray | None = None) -> go.Figure:
    """2-D PCA of every enrolled clip (and the query), computed on the clips alone."""
    fig = go.Figure()
    names = gallery.names()
    if not names:
        fig.update_layout(title="Enroll speakers to see the embedding map", height=360)
        return fig
    clips = [gallery.clips(n) for n in names]
    points = np.concatenate(clips)
    mean = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
    basis = vt[:2].T if vt.shape[0] >= 2 else np.pad(vt.T, ((0, 0), (0, 2 - vt.shape[0])))
    for name, block in zip(names, clips):
        xy = (block - mean) @ basis
        fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=name, marker={"size": 10}))
    if query is not None:
        xy = (query - mean) @ basis
        fig.add_trace(
            go.Scatter(
                x=[xy[0]],
                y=[xy[1]],
                mode="markers",
                name="query",
                marker={"size": 16, "symbol": "star", "color": "black"},
            )
        )
    fig.update_layout(
        title="Embedding map (PCA of enrolled clips)",
        xaxis_title="PC 1",
        yaxis_title="PC 2",
        height=360,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
    )
    return fig


def window_map_figure(windows: WindowMap) -> go.Figure:
    """Clip A's 1.5-s stretches down, clip B's across, each cell their score: red where two stretches
    sound like one voice, blue where they do not (the scale is centred on that level)."""
    spread = max(float(np.abs(windows.scores - windows.agree).max()), 1.0)
    return go.Figure(
        data=[
            go.Heatmap(
                x=windows.times_b,
                y=windows.times_a,
                z=windows.scores,
                colorscale="RdBu_r",
                zmin=windows.agree - spread,
                zmax=windows.agree + spread,
                colorbar={"title": {"text": "score"}},
                hovertemplate="A at %{y:.1f} s, B at %{x:.1f} s<br>score %{z:.2f}<extra></extra>",
            )
        ],
        layout={
            "title": {"text": f"Which stretches agree: {100 * windows.agreeing_share:.0f} % sound like one voice"},
            "xaxis": {"title": {"text": "Clip B: time of the stretch (s)"}},
            "yaxis": {"title": {"text": "Clip A: time of the stretch (s)"}, "autorange": "reversed"},
            "height": 380,
            "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
        },
    )


def diarization_figure(wav: np.ndarray, sample_rate: int, result: Diarization) -> go.Figure:
    """The recording's waveform with each speaker's turns shaded in their colour, over a timeline
    of one row per speaker, on one time axis."""
    step = max(1, int(np.ceil(len(wav) / MAX_ENVELOPE_POINTS)))
    n = len(wav) // step * step
    peaks = np.abs(wav[:n]).reshape(-1, step).max(axis=1) if n else np.zeros(1)
    times = (np.arange(len(peaks)) + 0.5) * step / sample_rate
    colours = {label: SPEAKER_COLOURS[i % len(SPEAKER_COLOURS)] for i, label in enumerate(result.speakers)}
    data: list = [
        go.Scatter(
            x=np.concatenate([times, times[::-1]]),
            y=np.concatenate([peaks, -peaks[::-1]]),
            fill="toself",
            line={"width": 0.5, "color": "#555"},
            fillcolor="rgba(80, 80, 80, 0.5)",
            hoverinfo="skip",
            showlegend=False,
            yaxis="y",
        )
    ]
    for label in result.speakers:
        turns = [s for s in result.segments if s.label == label]
        data.append(
            go.Bar(
                base=[s.start for s in turns],
                x=[s.duration for s in turns],
                y=[label] * len(turns),
                orientation="h",
                marker_color=colours[label],
                name=label,
                yaxis="y2",
                hovertemplate=f"{label}<br>%{{base:.2f}}–%{{customdata:.2f}} s<extra></extra>",
                customdata=[s.end for s in turns],
            )
        )
    shade = {"type": "rect", "xref": "x", "yref": "y domain", "y0": 0, "y1": 1, "opacity": 0.25, "line": {"width": 0}}
    shapes = [{**shade, "x0": s.start, "x1": s.end, "fillcolor": colours[s.label]} for s in result.segments]
    return go.Figure(
        data=data,
        layout={
            "title": {"text": "Who spoke when"},
            "xaxis": {"anchor": "y2", "range": [0, result.duration], "title": {"text": "time (s)"}},
            "yaxis": {"domain": [0.45, 1.0], "showticklabels": False, "title": {"text": "waveform"}},
            "yaxis2": {
                "domain": [0.0, 0.38],
                "autorange": "reversed",
                "categoryorder": "array",
                "categoryarray": result.speakers,
            },
            "shapes": shapes,
            "barmode": "overlay",
            "height": 300 + 24 * len(result.speakers),
            "legend": {"orientation": "h", "y": -0.25},
            "margin": {"l": 90, "r": 10, "t": 40, "b": 50},
        },
    )


def adaptation_figure(report: Adaptation) -> go.Figure:
    """Left: the people's same- and different-person pair scores, the chosen threshold marked.
    Right: the DET curve of those pairs (false rejects against false accepts), the EER marked."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Your pairs' scores", "Error trade-off (DET)"))
    for scores, name, colour in (
        (report.other_scores, "different people", NONTARGET_COLOUR),
        (report.same_scores, "same person", TARGET_COLOUR),
    ):
        fig.add_trace(
            go.Histogram(x=scores, name=name, marker_color=colour, opacity=0.55, histnorm="probability density"), 1, 1
        )
    fig.add_vline(x=report.threshold, line={"color": "#555", "dash": "dash"}, annotation_text="threshold", row=1, col=1)
    scores = np.r_[report.same_scores, report.other_scores]
    labels = np.r_[np.ones(len(report.same_scores)), np.zeros(len(report.other_scores))]
    _, far, frr = det_curve(scores, labels)
    fig.add_trace(go.Scatter(x=100 * far, y=100 * frr, mode="lines", name="DET", line={"color": "#1565c0"}), 1, 2)
    fig.add_trace(
        go.Scatter(
            x=[100 * report.eer],
            y=[100 * report.eer],
            mode="markers+text",
            name="EER",
            text=[f"EER {100 * report.eer:.1f} %"],
            textposition="top right",
            marker={"size": 10, "color": "black"},
        ),
        1,
        2,
    )
    fig.update_xaxes(title_text=SCORE_AXIS.split(":")[0], row=1, col=1)
    fig.update_xaxes(title_text="false accepts (%)", row=1, col=2)
    fig.update_yaxes(title_text="false rejects (%)", row=1, col=2)
    fig.update_layout(
        barmode="overlay",
        height=340,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig
