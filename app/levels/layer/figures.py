"""Layer-level view: cytoscape elements of the segmented DAG, each node with a dot plot (SVG).

A visible node is a layer or a collapsed group; its dot plot has one column per layer inside
it. ``similarity``: adversarial-vs-normal cosine similarity (red dot) over the noise control's
5-95 % band (grey); ``activation``: each group's mean activation on its own datapath (one colour
per group, scaled per node); ``jaccard``: Jaccard similarity of the groups' critical maps.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from aevis_core.analysis import Analysis
from aevis_core.graph.hierarchy import GroupNode
from aevis_core.graph.types import LayerGraph
from aevis_core.layout.segment import CalendarLayout

GROUP_COLORS = ["#2471a3", "#c0392b", "#27ae60", "#8e44ad"]
NODE_W, NODE_H = 96.0, 54.0


def members(node_id: str, mapping: Mapping[str, str]) -> list[str]:
    """Layers covered by a visible node, in graph order."""
    return [layer for layer, vis in mapping.items() if vis == node_id]


def layer_values(a: Analysis, layer: str, stat: str) -> list[tuple[float, str, tuple[float, float] | None]]:
    """(value, colour, optional band) dots of one layer for the chosen statistic."""
    ls = a.stats.layers.get(layer)
    if stat == "similarity" and a.comparison is not None and layer in a.comparison.sim_adv:
        adv = a.comparison.adv(layer).mean
        noise = a.comparison.noise_summary(layer)
        return [(adv, "#c0392b", (noise.p05, noise.p95))]
    if ls is None:
        return []
    if stat == "activation":
        return [(v, GROUP_COLORS[i % 4], None) for i, v in enumerate(ls.own_activation.values())]
    if stat == "jaccard" or stat == "similarity":
        return [(v, "#34495e", None) for v in ls.jaccard.values()]
    return []


def dot_plot_svg(columns: Sequence[list[tuple[float, str, tuple[float, float] | None]]], stat: str,
                 highlight: Sequence[bool] = (), w: float = NODE_W, h: float = NODE_H) -> str:
    """SVG data URI: one column per member layer, y in [0, 1] (activation scaled to the node's max)."""
    finite = [v for col in columns for v, _, _ in col if v is not None and math.isfinite(v)]
    top = max(finite, default=1.0) if stat == "activation" else 1.0
    top = top if top > 0 else 1.0
    m = max(1, len(columns))
    pad = 4.0
    cw = (w - 2 * pad) / m
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}">',
             f'<rect x="0" y="0" width="{w:.0f}" height="{h:.0f}" fill="white"/>']

    def y(v: float) -> float:
        return h - pad - (h - 2 * pad) * max(0.0, min(1.0, v / top))

    for i, col in enumerate(columns):
        cx = pad + cw * (i + 0.5)
        if i < len(highlight) and highlight[i]:
            parts.append(f'<rect x="{cx - cw / 2:.1f}" y="0" width="{cw:.1f}" height="{h:.0f}" fill="#fdebd0"/>')
        for v, color, band in col:
            if band is not None and all(math.isfinite(b) for b in band):
                parts.append(f'<rect x="{cx - max(cw * 0.35, 1.5):.1f}" y="{y(band[1]):.1f}" '
                             f'width="{max(cw * 0.7, 3):.1f}" height="{max(y(band[0]) - y(band[1]), 1):.1f}" '
                             'fill="#bdc3c7"/>')
            if v is not None and math.isfinite(v):
                r = max(1.6, min(3.2, cw * 0.3))
                parts.append(f'<circle cx="{cx:.1f}" cy="{y(v):.1f}" r="{r:.1f}" fill="{color}"/>')
    parts.append("</svg>")
    return "data:image/svg+xml;utf8," + urllib.parse.quote("".join(parts))


def short_names(node_ids: Sequence[str]) -> dict[str, str]:
    """Shortest dotted suffix of each id that no other id ends with (``layer1.2.bn1`` and
    ``layer3.2.bn1`` stay apart as ``1.2.bn1`` / ``3.2.bn1``); the full id on hover."""
    ids = list(node_ids)
    out: dict[str, str] = {}
    for nid in ids:
        parts = nid.split(".")
        for k in range(1, len(parts) + 1):
            cand = ".".join(parts[-k:])
            if not any(o != nid and (o == cand or o.endswith("." + cand)) for o in ids):
                out[nid] = cand
                break
        else:
            out[nid] = nid
    return out


def elements(graph: LayerGraph, root: GroupNode, a: Analysis, lay: CalendarLayout, mapping: Mapping[str, str],
             stat: str, focus: str | None) -> list[dict[str, Any]]:
    """Cytoscape nodes (preset positions) and edges of the current cut."""
    groups = {g.id for g in _walk(root) if not g.is_leaf}
    div = a.divergence.layer if a.divergence is not None else None
    out: list[dict[str, Any]] = []
    names = short_names(list(lay.nodes))
    for nid in lay.nodes:
        mem = members(nid, mapping)
        cols = [layer_values(a, m, stat) for m in mem]
        x, y = lay.positions[nid]
        classes = ["group" if nid in groups else "layer"]
        if div in mem:
            classes.append("diverging")
        if focus in mem:
            classes.append("focus")
        label = f"{names[nid]} ({len(mem)})" if nid in groups else names[nid]
        svg = dot_plot_svg(cols, stat, [m == div for m in mem])
        out.append({"data": {"id": nid, "label": label, "svg": svg,
                             "members": len(mem), "is_group": nid in groups},
                    "position": {"x": x, "y": y}, "classes": " ".join(classes)})
    for s, t in lay.edges:
        out.append({"data": {"id": f"{s}->{t}", "source": s, "target": t},
                    "classes": "cross" if lay.row.get(s) != lay.row.get(t) else ""})
    return out


def _walk(node: GroupNode) -> list[GroupNode]:
    out = [node]
    for c in node.children:
        out.extend(_walk(c))
    return out


STYLESHEET: list[dict[str, Any]] = [
    {"selector": "node", "style": {
        "shape": "round-rectangle", "width": NODE_W, "height": NODE_H, "background-image": "data(svg)",
        "background-fit": "contain", "border-width": 1, "border-color": "#7b8794", "label": "data(label)",
        "font-size": 11, "text-valign": "top", "text-margin-y": -2, "color": "#323f4b", "min-zoomed-font-size": 6}},
    {"selector": "node.group", "style": {"border-width": 2, "border-color": "#52606d", "border-style": "double"}},
    {"selector": "node.focus", "style": {"border-width": 3, "border-color": "#2471a3", "overlay-color": "#2471a3",
                                         "overlay-opacity": 0.10}},
    {"selector": "node.diverging", "style": {"border-width": 4, "border-color": "#e67e22", "border-style": "solid",
                                             "color": "#a04000", "font-weight": "bold"}},
    {"selector": "node.diverging.focus", "style": {"border-style": "double", "border-width": 6}},
    {"selector": "edge", "style": {"width": 1.2, "line-color": "#9aa5b1", "curve-style": "bezier",
                                   "target-arrow-shape": "triangle", "target-arrow-color": "#9aa5b1",
                                   "arrow-scale": 0.6}},
    {"selector": "edge.cross", "style": {"line-style": "dashed", "curve-style": "taxi", "taxi-direction": "vertical"}},
]


OVERVIEW_STYLE: list[dict[str, Any]] = [
    {"selector": "node", "style": {"width": NODE_W, "height": NODE_H, "background-color": "#cbd2d9",
                                   "shape": "round-rectangle"}},
    {"selector": "node.diverging", "style": {"background-color": "#e67e22"}},
    {"selector": "node.focus", "style": {"background-color": "#f1c40f"}},
    {"selector": "edge", "style": {"width": 2, "line-color": "#e4e7eb"}},
]


def overview_elements(els: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The main graph's elements without dot plots or labels, for the overview."""
    out = []
    for e in els:
        d = {k: v for k, v in e["data"].items() if k in ("id", "source", "target")}
        out.append({**{k: v for k, v in e.items() if k != "data"}, "data": d})
    return out


def zoom_to(position: dict[str, float], zoom: float = 1.2, width: float = 900.0,
            height: float = 520.0) -> tuple[float, dict[str, float]]:
    """(zoom, pan) that centre the main graph's viewport on a model position."""
    return zoom, {"x": width / 2 - position["x"] * zoom, "y": height / 2 - position["y"] * zoom}
