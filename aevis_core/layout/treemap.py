"""Feature-map level treemap: Euler regions → K-means clusters → stacked rectangles.

Liu et al. (VAST 2018, Sec. 5.2) draw a layer's critical maps as a treemap: one rectangle per
Euler region sized by its number of maps, inside it one rectangle per cluster sized by the
cluster's size, and each cluster as ``N_R = ⌊log10 N_C⌋ + 1`` stacked rectangles (N_C maps in
the cluster) so the pile hints at the order of magnitude of the cluster size.

Rectangles come from the *squarified* treemap of Bruls, Huizing & van Wijk (2000). It is written
here (≈ 40 lines) because the ``squarify`` package is not a dependency of this project, and
Plotly's treemap trace lays out client-side without exposing the rectangles, which we need to
nest clusters and stacks and to attach map indices for clicks. Output rectangles are plain
dataclasses that the dashboard turns into Plotly ``rect`` shapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from aevis_core.layout.euler import Region

Box = tuple[float, float, float, float]


def n_stack(n_c: int) -> int:
    """Number of stacked rectangles of a cluster of ``n_c`` ≥ 1 maps: ⌊log10 n_c⌋ + 1."""
    if n_c < 1:
        raise ValueError("a cluster has at least one map")
    return len(str(int(n_c)))   # exact ⌊log10⌋ + 1 for integers (no float rounding at 10^k)


def _worst(row: Sequence[float], side: float) -> float:
    """Bruls et al.'s ``worst``: the largest aspect ratio of ``row`` laid along ``side``."""
    s = sum(row)
    if s <= 0 or side <= 0:
        return math.inf
    return max(max(side * side * r / (s * s), (s * s) / (side * side * r)) for r in row)


def squarify(values: Sequence[float], box: Box) -> list[Box]:
    """Squarified treemap (Bruls, Huizing & van Wijk 2000) of ``values`` inside ``box``.

    ``box`` = (x0, y0, x1, y1). Returns one (x0, y0, x1, y1) per value in input order, with area
    ``value / Σ values · area(box)``; together they tile ``box`` exactly (the last rectangle of
    each row and the last row are snapped to the box edge). Values are laid out largest first,
    rows along the shorter side of the remaining box, a row growing while its worst aspect ratio
    does not get worse. Zero values get zero-area rectangles at the box's far corner.
    """
    x0, y0, x1, y1 = box
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise ValueError("treemap values must be finite and non-negative")
    out: list[Box] = [(x1, y1, x1, y1)] * len(values)
    order = [i for i in sorted(range(len(values)), key=lambda i: -values[i]) if values[i] > 0]
    total = sum(values[i] for i in order)
    area = (x1 - x0) * (y1 - y0)
    if not order or area <= 0:
        return [(x0, y0, x0, y0) if i in order else out[i] for i in range(len(values))]
    scaled = [values[i] * area / total for i in order]
    x, y, dx, dy = x0, y0, x1 - x0, y1 - y0
    i = 0
    while i < len(order):
        side = min(dx, dy)
        j = i + 1
        while j < len(order) and _worst(scaled[i:j + 1], side) <= _worst(scaled[i:j], side):
            j += 1
        row = scaled[i:j]
        s = sum(row)
        final = j == len(order)
        if dx >= dy:   # wide box: the row is a column at the left edge
            cw = dx if final else s / dy
            yy = y
            for t, r in enumerate(row):
                y_end = y + dy if t == len(row) - 1 else yy + r / cw
                out[order[i + t]] = (x, yy, x + cw, y_end)
                yy = y_end
            x, dx = x + cw, dx - cw
        else:          # tall box: the row is a strip at the top
            rh = dy if final else s / dx
            xx = x
            for t, r in enumerate(row):
                x_end = x + dx if t == len(row) - 1 else xx + r / rh
                out[order[i + t]] = (xx, y, x_end, y + rh)
                xx = x_end
            y, dy = y + rh, dy - rh
        i = j
    return out


@dataclass
class Rect:
    """One treemap rectangle (``kind``: ``region`` | ``cluster`` | ``stack``).

    ``value`` is the colour value: the mean of the per-map values over ``maps`` (NaN without
    values); ``cluster_index`` is −1 for regions and ``stack_index`` −1 unless a stack (0 = back).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    kind: str
    region_label: str
    cluster_index: int = -1
    maps: list[int] = field(default_factory=list)
    value: float = math.nan
    stack_index: int = -1

    @property
    def area(self) -> float:
        """Width × height."""
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN value → None)."""
        d = asdict(self)
        d["value"] = None if math.isnan(self.value) else self.value
        return d


def _mean(values: np.ndarray | None, maps: Sequence[int]) -> float:
    if values is None or not maps:
        return math.nan
    v = values[np.asarray(maps, dtype=np.int64)]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def _inset(box: Box, pad: float) -> Box:
    x0, y0, x1, y1 = box
    px = min(pad, (x1 - x0) / 2.0)
    py = min(pad, (y1 - y0) / 2.0)
    return (x0 + px, y0 + py, x1 - px, y1 - py)


def feature_treemap(regions: Sequence[Region], clusters: Mapping[str, Sequence[Sequence[int]]] | None = None,
                    map_values: np.ndarray | None = None, box: Box = (0.0, 0.0, 1.0, 1.0), *,
                    pad: float = 0.0, stack_offset: float = 0.08) -> list[Rect]:
    """Rectangles of a layer's treemap: regions, then per region its clusters, then stacks.

    ``regions``: :func:`~aevis_core.layout.euler.euler_regions` output; ``clusters``: region label
    → clusters (lists of maps, e.g. from :func:`~aevis_core.layout.euler.kmeans_clusters`), a
    region without an entry is one cluster. ``map_values`` (n,): per-map colour value (mean
    importance z, a set's mean activation, or an activation difference), averaged over each
    rectangle's maps. Regions tile ``box`` (areas ∝ map counts); clusters tile their region
    inset by ``pad``; a cluster holds :func:`n_stack` equal stack rectangles, each shifted by
    ``stack_offset`` × the cluster's size towards the lower right (back first, front last), the
    cluster's maps split among them in order. Returned in drawing order.
    """
    vals = None if map_values is None else np.asarray(map_values, dtype=np.float64)
    out: list[Rect] = []
    boxes = squarify([float(r.size) for r in regions], box)
    for reg, rb in zip(regions, boxes, strict=True):
        out.append(Rect(*rb, "region", reg.label, -1, list(reg.maps), _mean(vals, reg.maps)))
        cl = [list(c) for c in (clusters or {}).get(reg.label, [reg.maps]) if len(c)]
        inner = _inset(rb, pad)
        for ci, (maps, cb) in enumerate(zip(cl, squarify([float(len(c)) for c in cl], inner), strict=True)):
            v = _mean(vals, maps)
            out.append(Rect(*cb, "cluster", reg.label, ci, maps, v))
            ns = n_stack(len(maps))
            cx0, cy0, cx1, cy1 = cb
            w, h = cx1 - cx0, cy1 - cy0
            off = min(stack_offset, 1.0 / (2 * ns)) if ns > 1 else 0.0
            sw, sh = w * (1 - off * (ns - 1)), h * (1 - off * (ns - 1))
            for si, chunk in enumerate(np.array_split(np.asarray(maps, dtype=np.int64), ns)):
                sx, sy = cx0 + si * off * w, cy0 + si * off * h
                out.append(Rect(sx, sy, sx + sw, sy + sh, "stack", reg.label, ci,
                                [int(j) for j in chunk], v, si))
    return out


def layer_treemap(critical: Mapping[str, Sequence[int]], n: int, features: np.ndarray | None = None,
                  k: int = 4, map_values: np.ndarray | None = None, box: Box = (0.0, 0.0, 1.0, 1.0), *,
                  seed: int = 0, pad: float = 0.0) -> list[Rect]:
    """Euler regions of ``critical`` → K-means (``k`` per region, on ``features`` (n, d)) → treemap.

    Without ``features`` every region is a single cluster.
    """
    from aevis_core.layout.euler import euler_regions, kmeans_clusters

    regions = euler_regions(critical, n)
    clusters = None
    if features is not None:
        clusters = {r.label: kmeans_clusters(r.maps, features, k, seed) for r in regions}
    return feature_treemap(regions, clusters, map_values, box, pad=pad)
