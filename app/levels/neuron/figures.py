"""Neuron level: activation heat maps of one feature map for every image of the groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# red negative, white zero, green positive
DIVERGING = [[0.0, "#c0392b"], [0.5, "#ffffff"], [1.0, "#1e8449"]]


def heatmap_figure(maps: Mapping[str, np.ndarray], titles: Mapping[str, Sequence[str]], label: str,
                   per_group: int = 6, images: Mapping[str, np.ndarray] | None = None) -> go.Figure:
    """Grid: one row per group, up to ``per_group`` (h, w) heat maps each, shared symmetric scale.

    ``images`` (group -> (N, H, W, 3) uint8): draw each heat map semi-transparent over its input.
    """
    groups = list(maps)
    rows = max(1, len(groups))
    cols = max(1, min(per_group, max((len(m) for m in maps.values()), default=1)))  # no empty columns
    vmax = max((float(np.abs(m[:cols]).max()) for m in maps.values() if m.size), default=1.0) or 1.0
    subtitles = [f"{g}: {t}" for g in groups for t in list(titles[g])[:cols]
                 + [""] * (cols - min(cols, len(titles[g])))]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=subtitles or None,
                        horizontal_spacing=0.015, vertical_spacing=0.12)
    for r, g in enumerate(groups, start=1):
        for c, m in enumerate(maps[g][:cols], start=1):
            h, w = m.shape
            geo: dict[str, float] = {}
            if images is not None and g in images and c - 1 < len(images[g]):
                img = images[g][c - 1]
                fig.add_trace(go.Image(z=img, hoverinfo="skip"), row=r, col=c)
                dy, dx = img.shape[0] / h, img.shape[1] / w
                geo = {"x0": dx / 2 - 0.5, "dx": dx, "y0": dy / 2 - 0.5, "dy": dy, "opacity": 0.6}
            fig.add_trace(go.Heatmap(z=m, zmin=-vmax, zmax=vmax, colorscale=DIVERGING,
                                     showscale=(r == 1 and c == 1), colorbar={"thickness": 8, "len": 0.6},
                                     **geo), row=r, col=c)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_annotations(font_size=9)
    fig.update_layout(title={"text": label, "font": {"size": 13}}, height=150 + 150 * rows,
                      margin={"l": 8, "r": 8, "t": 48, "b": 8}, plot_bgcolor="white")
    return fig


def image_figure(images: Sequence[np.ndarray], titles: Sequence[str], label: str) -> go.Figure:
    """Row of (H, W, 3) uint8 images (discrepancy maps over their inputs)."""
    n = max(1, len(images))
    fig = make_subplots(rows=1, cols=n, subplot_titles=list(titles) or None, horizontal_spacing=0.02)
    for i, img in enumerate(images, start=1):
        fig.add_trace(go.Image(z=img), row=1, col=i)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=10)
    fig.update_layout(title={"text": label, "font": {"size": 13}}, height=300, margin={"l": 8, "r": 8, "t": 48, "b": 8})
    return fig


def empty_figure(message: str) -> go.Figure:
    """A blank figure with a hint."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"color": "#7b8794", "size": 13})
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=220, plot_bgcolor="white",
                      margin={"l": 8, "r": 8, "t": 8, "b": 8})
    return fig
