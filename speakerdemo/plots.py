"""Plotly figures for the demo: what the model hears, what a score means, who is enrolled.

Figures are built from an ``Embedding``, a ``Calibration`` or a ``Gallery`` alone, so they cost
no model call and can be redrawn when only a threshold changes.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .encoder import Embedding
from .gallery import Gallery, Ranking
from .scoring import Calibration

SPEECH_FILL = "rgba(46, 160, 67, 0.18)"
TARGET_COLOUR = "#2e7d32"
NONTARGET_COLOUR = "#c62828"
MAX_PLOT_FRAMES = 1500


def _decimate(emb: Embedding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin long clips for the browser; attention is summed per kept frame so its total stays 1."""
    step = int(np.ceil(len(emb.frame_times) / MAX_PLOT_FRAMES))
    if step == 1:
        return emb.frame_times, emb.mel, emb.attention
    n = len(emb.attention) // step * step
    attention = emb.attention[:n].reshape(-1, step).sum(axis=1)
    return emb.frame_times[:n:step], emb.mel[:n:step], attention


def spectrogram_figure(emb: Embedding, title: str = "") -> go.Figure:
    """Log-mel spectrogram over attention-pooling weights, on one time axis, speech shaded."""
    times, mel, attention = _decimate(emb)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.04)
    fig.add_trace(
        go.Heatmap(
            x=times,
            z=mel.T,
            colorscale="Viridis",
            showscale=False,
            name="log-mel",
            hovertemplate="t=%{x:.2f} s<br>mel bin %{y}<br>%{z:.1f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=attention,
            mode="lines",
            line={"color": "#ef6c00", "width": 1.5},
            fill="tozeroy",
            name="attention",
            hovertemplate="t=%{x:.2f} s<br>weight %{y:.4f}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    for start, end in emb.speech_regions:
        fig.add_vrect(x0=start, x1=end, fillcolor=SPEECH_FILL, line_width=0, row=2, col=1)
    fig.update_yaxes(title_text="mel bin", row=1, col=1)
    fig.update_yaxes(title_text="attention", row=2, col=1, rangemode="tozero")
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    heading = f"{title} — " if title else ""
    fig.update_layout(
        title=f"{heading}{emb.speech_seconds:.1f} s of speech in {emb.duration_seconds:.1f} s (shaded)",
        height=380,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        showlegend=False,
    )
    return fig


def score_distribution_figure(calibration: Calibration | None, score: float, threshold: float) -> go.Figure:
    """Target and non-target score densities of the calibration trials, this pair's score marked."""
    fig = go.Figure()
    if calibration is not None:
        edges = np.asarray(calibration.bin_edges)
        centres = (edges[:-1] + edges[1:]) / 2
        width = float(edges[1] - edges[0])
        for hist, name, colour in (
            (calibration.nontarget_hist, "different speakers", NONTARGET_COLOUR),
            (calibration.target_hist, "same speaker", TARGET_COLOUR),
        ):
            fig.add_trace(go.Bar(x=centres, y=hist, width=width, name=name, marker_color=colour, opacity=0.55))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#555", annotation_text="threshold")
    fig.add_vline(x=score, line_width=3, line_color="#1565c0", annotation_text=f"this pair {score:.3f}")
    trials = f" ({calibration.trials})" if calibration is not None and calibration.trials else ""
    fig.update_layout(
        barmode="overlay",
        title=f"Scores of calibration trials{trials}",
        xaxis_title="score: cosine similarity, less the shift for the kind of clip",
        yaxis_title="density",
        height=300,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.3},
    )
    if calibration is None:  # no bars to fit: keep the cosine axis instead of autoranging on the annotations
        fig.update_xaxes(range=[-1.05, 1.05])
    return fig


def ranking_figure(ranking: Ranking) -> go.Figure:
    """Horizontal bars of the top matches, threshold marked; the best match on top."""
    names = [m.name for m in ranking.matches][::-1]
    scores = [m.score for m in ranking.matches][::-1]
    colours = [TARGET_COLOUR if s >= ranking.threshold else "#9e9e9e" for s in scores]
    fig = go.Figure(
        go.Bar(
            x=scores,
            y=names,
            orientation="h",
            marker_color=colours,
            text=[f"{s:.3f}" for s in scores],
            textposition="auto",
        )
    )
    fig.add_vline(x=ranking.threshold, line_dash="dash", line_color="#555", annotation_text="threshold")
    fig.update_layout(
        title=f"Best match: {ranking.best}",
        xaxis_title="score: cosine similarity, less the shift for the kind of clip",
        height=120 + 40 * max(1, len(names)),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


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
