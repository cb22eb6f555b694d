"""Feature-map level: Euler regions of the groups' datapaths drawn as a treemap (Plotly shapes).

Regions (A only, B only, A∩B, ...) are sized by their number of maps; inside, K-means clusters of
maps; inside a cluster N_R = ⌊log10 N_C⌋ + 1 stacked rectangles. Colour: mean importance z,
mean activation of the first group, or activation difference (normal − adversarial).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from aevis_core.analysis import Analysis
from aevis_core.layout.euler import map_features
from aevis_core.layout.treemap import Rect, layer_treemap

SCALES = {"importance": "Blues", "activation": "Greens", "difference": "RdBu"}
PLOT_W, PLOT_H = 900.0, 360.0  # approximate plot area in px (marker sizes that cover a cluster)


def color_label(color: str, a: Analysis) -> str:
    """What a colour mode shows, for the colour bar and the title (names the groups it uses)."""
    names = list(a.datapaths)
    first, second = a.pair if a.pair else (names[0], names[1] if len(names) > 1 else names[0])
    return {"importance": "importance z (mean over groups)",
            "activation": f"mean activation ({names[0]})",
            "difference": f"activation difference ({first} − {second})"}.get(color, color)


def map_values(a: Analysis, layer: str, color: str) -> np.ndarray:
    """(n,) colour value per map for the chosen mode."""
    dps = a.datapaths
    if color == "importance":
        return np.mean([dp.layers[layer].z for dp in dps.values()], axis=0)
    ls = a.stats.layers[layer]
    if color == "difference" and ls.diff is not None:
        return np.asarray(ls.diff, dtype=float)
    first = next(iter(ls.map_activation))
    return np.asarray(ls.map_activation[first], dtype=float)


def treemap_rects(a: Analysis, layer: str, k: int, color: str) -> list[Rect]:
    """The treemap rectangles of ``layer`` (pure layout from aevis_core)."""
    crit = {name: dp.layers[layer].critical for name, dp in a.datapaths.items()}
    n = next(iter(a.datapaths.values())).layers[layer].n
    feats = map_features(*[dp.mean_act[layer] for dp in a.datapaths.values()])
    return layer_treemap(crit, n, feats, k=k, map_values=map_values(a, layer, color), pad=0.006)


def _color(v: float, lo: float, hi: float, scale: str) -> str:
    if not math.isfinite(v):
        return "#eeeeee"
    t = 0.5 if hi <= lo else (v - lo) / (hi - lo)
    return sample_colorscale(scale, [min(1.0, max(0.0, t))])[0]


def figure(layer: str, rects: Sequence[Rect], color: str, title: str, legend: str | None = None) -> go.Figure:
    """One layer's treemap (see :func:`panels_figure`)."""
    return panels_figure([(layer, list(rects))], color, title, legend)


def empty_reason(a: Analysis, layer: str) -> str | None:
    """Why a layer's treemap is empty (no group has a critical map there), else None."""
    if any(dp.layers[layer].critical for dp in a.datapaths.values()):
        return None
    return (f"No critical maps in {layer} for {' or '.join(a.datapaths)}:<br>no feature map of this layer "
            "carries the prediction of these groups.<br>Pick another layer (the diverging point is marked in orange).")


def panels_figure(panels: Sequence[tuple[str, Sequence[Rect]]], color: str, title: str,
                  legend: str | None = None) -> go.Figure:
    """Treemaps of several layers side by side (panel i spans x in [i, i+1]), one shared colour scale.

    Rectangles are shapes; one invisible marker per cluster carries hover text and the click
    payload (:class:`app.payloads.ClusterClick` fields: layer, channel = first map, size, region).
    """
    vals = [r.value for _, rects in panels for r in rects if r.kind == "cluster" and math.isfinite(r.value)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if color == "difference":
        m = max(abs(lo), abs(hi), 1e-12)
        lo, hi = -m, m
    scale = SCALES.get(color, "Blues")
    fig = go.Figure()
    xs, ys, text, custom, sizes = [], [], [], [], []
    n_panels = max(1, len(panels))
    for i, (layer, rects) in enumerate(panels):
        if len(panels) > 1:
            fig.add_annotation(x=i + 0.5, y=1.0, text=f"<b>{layer}</b>", showarrow=False, yanchor="bottom",
                               font={"size": 12})
        for r in rects:
            x0, x1 = i + r.x0 * 0.97, i + r.x1 * 0.97
            if r.kind == "region":
                fig.add_shape(type="rect", x0=x0, y0=r.y0, x1=x1, y1=r.y1, line={"color": "#52606d", "width": 2},
                              fillcolor="rgba(0,0,0,0)")
                fig.add_annotation(x=x0 + 0.005, y=r.y1 - 0.005, text=f"<b>{r.region_label}</b> ({len(r.maps)})",
                                   showarrow=False, xanchor="left", yanchor="top", font={"size": 11},
                                   bgcolor="rgba(255,255,255,0.8)")
            elif r.kind == "stack":
                fig.add_shape(type="rect", x0=x0, y0=r.y0, x1=x1, y1=r.y1, line={"color": "#ffffff", "width": 1},
                              fillcolor=_color(r.value, lo, hi, scale))
            elif r.kind == "cluster":
                xs.append((x0 + x1) / 2)
                ys.append((r.y0 + r.y1) / 2)
                # a square marker as large as the cluster's rectangle: the whole cluster is clickable
                sizes.append(max(14.0, 0.95 * min((x1 - x0) / n_panels * PLOT_W, (r.y1 - r.y0) / 1.06 * PLOT_H)))
                maps = ", ".join(f"#{m}" for m in r.maps[:24]) + (" …" if len(r.maps) > 24 else "")
                where = f"{layer}: " if len(panels) > 1 else ""
                text.append(f"{where}{r.region_label}, cluster {r.cluster_index}<br>{len(r.maps)} maps: {maps}"
                            f"<br>{color}: {r.value:.4g}")
                custom.append({"layer": layer, "channel": int(r.maps[0]), "size": len(r.maps),
                               "region": r.region_label})
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker={
        "size": sizes, "symbol": "square", "opacity": 0.01, "color": [0] * len(xs)}, hovertext=text,
        hoverinfo="text", customdata=custom, showlegend=False))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, marker={
        "colorscale": scale, "cmin": lo, "cmax": hi, "color": [lo], "showscale": True,
        "colorbar": {"title": {"text": (legend or color).replace(" (", "<br>("), "side": "right"},
                     "thickness": 10}}))
    n = max(1, len(panels))
    fig.update_layout(title={"text": title, "font": {"size": 13}}, margin={"l": 8, "r": 8, "t": 48, "b": 8},
                      xaxis={"visible": False, "range": [0, n]}, yaxis={"visible": False, "range": [0, 1.06]},
                      plot_bgcolor="white", paper_bgcolor="white", clickmode="event")
    return fig

METHOD_LABELS = {"qp": "datapath (QP)", "gradxact_topk": "grad × act top-k", "act_topk": "activation top-k",
                 "random": "random"}


def faithfulness_figure(table: dict[str, object], title: str) -> go.Figure:
    """Preserved top-1 fraction vs number of kept maps, one line per method."""
    rows = [r for r in table["rows"] if r["fill"] == "zero"]  # type: ignore[index, union-attr, attr-defined]
    fig = go.Figure()
    methods = list(dict.fromkeys(r["method"] for r in rows))  # type: ignore[index]
    for method in methods:
        label = METHOD_LABELS.get(method, method)
        pts = sorted((r["k"], r["preserved"]) for r in rows if r["method"] == method)
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=label))
    fig.update_layout(title={"text": title, "font": {"size": 13}}, height=300, xaxis_title="maps kept (k)",
                      yaxis={"title": "prediction preserved", "range": [0, 1.05]},
                      margin={"l": 50, "r": 8, "t": 40, "b": 40}, plot_bgcolor="white")
    return fig
