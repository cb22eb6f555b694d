"""Layer-level "calendar" layout (Liu et al., VAST 2018 / TVCG 2020, Sec. 5.1, Eq. 6).

The visible nodes of the layer DAG are placed left to right in a sequence of *columns*
(longest-path layering, so parallel branches such as a residual shortcut share a column range
on separate *lanes*), then the column sequence is cut into rows of at most ``W`` wide, like the
weeks of a calendar. Row breaks are chosen by dynamic programming over

    cost(rows) = Σ_rows ((W − w_row) / W)^p  +  λ · #{building blocks cut by a row break}     (Eq. 6)

* ``w_row`` = Σ column widths + gap · (columns − 1). The empty space at a row's end is measured as
  a fraction of ``W`` so that λ is dimensionless: λ = 1 means "cutting one block is as bad as one
  completely empty row". The paper penalises the empty space itself (p = 1); p = 1 only counts
  rows (Σ(W − w_row) = R·W − const), so the default here is the squared slack (p = 2) of classic
  text justification, which also evens out the row lengths. ``free_last=True`` makes the last
  row's slack free (the text-justification convention); the default charges every row.
* A block (split → merge sub-graph) maps to a column interval [a, b]; a break before column k
  (a row starts at k) cuts it when a < k ≤ b. A block is counted once however many breaks cut it.
* A single column wider than W gets a row of its own (slack 0); otherwise rows never exceed W.

Nothing here imports dash; results are plain dataclasses with node-centre positions for
dash-cytoscape's ``preset`` layout.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aevis_core.graph.types import LayerGraph

_EPS = 1e-9


# ----------------------------------------------------------------------------------------------
# row segmentation (Eq. 6)
# ----------------------------------------------------------------------------------------------

def _row_width(prefix: Sequence[float], s: int, e: int, gap: float) -> float:
    return prefix[e] - prefix[s] + gap * (e - s - 1)


def _slack_cost(width: float, max_width: float, p: float) -> float:
    if max_width <= 0:
        return 0.0
    return (max(max_width - width, 0.0) / max_width) ** p


def segmentation_cost(widths: Sequence[float], max_width: float, starts: Sequence[int],
                      block_spans: Sequence[tuple[int, int]], lam: float, *, p: float = 2.0,
                      gap: float = 0.0, free_last: bool = False) -> float:
    """Eq. 6 cost of the rows beginning at ``starts`` (``starts[0] == 0``, increasing).

    ``widths`` (m,) column widths; ``block_spans`` inclusive column intervals [a, b]. Returns
    ``inf`` when a row of two or more columns is wider than ``max_width``.
    """
    m = len(widths)
    if m == 0:
        return 0.0
    prefix = [0.0, *itertools.accumulate(widths)]
    bounds = [*starts, m]
    total = 0.0
    for r, (s, e) in enumerate(itertools.pairwise(bounds)):
        w = _row_width(prefix, s, e, gap)
        if e - s > 1 and w > max_width + _EPS:
            return math.inf
        if not (free_last and r == len(bounds) - 2):
            total += _slack_cost(w, max_width, p)
    breaks = starts[1:]
    cut = sum(1 for a, b in block_spans if any(a < k <= b for k in breaks))
    return total + lam * cut


def segment_rows(widths: Sequence[float], max_width: float, block_spans: Sequence[tuple[int, int]],
                 lam: float, *, p: float = 2.0, gap: float = 0.0, free_last: bool = False) -> list[int]:
    """Row start indices minimising Eq. 6 exactly, by dynamic programming.

    ``widths``: (m,) column widths; ``block_spans``: inclusive column intervals [a, b] of the
    building blocks; ``lam`` ≥ 0. Returns ``[0, s_1, ..., s_{R-1}]`` (``[]`` when m = 0).

    DP: ``f[e]`` = least cost of laying out columns [0, e) with a row ending at e;
    ``f[e] = min_s f[s] + slack(s, e) + λ · c(s, e)`` over feasible rows [s, e). Because breaks
    increase, a block [a, b] is *newly* cut by the break at e iff a < e ≤ b and the previous break
    s ≤ a, so ``c(s, e) = #{blocks: s ≤ a < e ≤ b}`` depends on (s, e) only and the per-block
    count is exact. Per e the counts are accumulated while s walks down from e − 1, so the run
    time is O(m·L + m·B) with L the most columns that fit in a row and B the number of blocks
    (a few ms for ResNet-56's ~170 columns in pure Python). Ties go to the latest last break.
    """
    m = len(widths)
    if m == 0:
        return []
    if min(widths) < 0:
        raise ValueError("column widths must be non-negative")
    prefix = [0.0, *itertools.accumulate(widths)]
    # active[e]: {a: count} of blocks [a, b] with a < e <= b (those a break before column e cuts)
    active: list[dict[int, int]] = [{} for _ in range(m + 1)]
    for a, b in block_spans:
        for e in range(max(a + 1, 1), min(b, m - 1) + 1):
            active[e][a] = active[e].get(a, 0) + 1
    f = [math.inf] * (m + 1)
    arg = [0] * (m + 1)
    f[0] = 0.0
    for e in range(1, m + 1):
        act = active[e] if e < m else {}
        cut = 0
        last = e == m
        for s in range(e - 1, -1, -1):
            w = _row_width(prefix, s, e, gap)
            if e - s > 1 and w > max_width + _EPS:
                break
            cut += act.get(s, 0)
            slack = 0.0 if (free_last and last) else _slack_cost(w, max_width, p)
            c = f[s] + slack + lam * cut
            if c < f[e]:
                f[e], arg[e] = c, s
    starts: list[int] = []
    e = m
    while e > 0:
        e = arg[e]
        starts.append(e)
    return starts[::-1]


def segment_rows_brute(widths: Sequence[float], max_width: float, block_spans: Sequence[tuple[int, int]],
                       lam: float, *, p: float = 2.0, gap: float = 0.0, free_last: bool = False) -> list[int]:
    """Reference for :func:`segment_rows`: enumerates all 2^(m−1) break sets (tests only, m ≲ 16)."""
    m = len(widths)
    if m == 0:
        return []
    best, best_starts = math.inf, [0]
    for mask in range(1 << (m - 1)):
        starts = [0] + [k for k in range(1, m) if mask >> (k - 1) & 1]
        c = segmentation_cost(widths, max_width, starts, block_spans, lam, p=p, gap=gap, free_last=free_last)
        if c < best - 1e-12:
            best, best_starts = c, starts
    return best_starts


# ----------------------------------------------------------------------------------------------
# visible nodes, projected edges, columns and lanes
# ----------------------------------------------------------------------------------------------

def edges_between_visible(graph: LayerGraph, visible: Mapping[str, str]) -> list[tuple[str, str]]:
    """Edges of the DAG projected onto visible nodes (``visible``: layer id → visible node id).

    A visible group node stands for all layers mapped to it; an edge p → c becomes
    ``visible[p] → visible[c]`` (dropped when both are the same node). Layers missing from
    ``visible`` (hidden) are bridged: their visible ancestors connect to their visible
    descendants. Returns unique (source, target) pairs in order of first appearance.
    """
    reach: dict[str, tuple[str, ...]] = {}   # layer -> visible nodes whose output reaches it
    seen: dict[tuple[str, str], None] = {}
    for nid, node in graph.nodes.items():
        srcs: dict[str, None] = {}
        for par in node.inputs:
            for s in reach.get(par, ()):
                srcs[s] = None
        if nid in visible:
            v = visible[nid]
            for s in srcs:
                if s != v:
                    seen[(s, v)] = None
            reach[nid] = (v,)
        else:
            reach[nid] = tuple(srcs)
    return list(seen)


def visible_nodes(graph: LayerGraph, visible: Mapping[str, str]) -> list[str]:
    """Visible node ids ordered by their first member layer in topological order."""
    out: dict[str, None] = {}
    for nid in graph.nodes:
        if nid in visible:
            out.setdefault(visible[nid], None)
    return list(out)


def layer_columns(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> tuple[dict[str, int], dict[str, int]]:
    """Longest-path layering and lanes of a DAG given in topological order.

    ``col[v] = max(col[u] + 1 for u → v)`` (0 for sources). Only edges that go forward in the
    order of ``nodes`` count, so a projection that is not acyclic (a group whose layers are not
    contiguous) still gets columns. Lanes: nodes are taken in order and each gets the lane of its
    first predecessor if that lane is still free in its column, else the lowest free lane; the
    main path of a residual block therefore stays on lane 0 and the shortcut goes to lane 1.
    Returns (column, lane) per node.
    """
    rank = {v: i for i, v in enumerate(nodes)}
    preds: dict[str, list[str]] = {v: [] for v in nodes}
    for u, v in edges:
        if u in rank and v in rank and rank[u] < rank[v]:
            preds[v].append(u)
    col: dict[str, int] = {}
    lane: dict[str, int] = {}
    used: dict[int, set[int]] = {}
    for v in nodes:
        ps = preds[v]
        c = max((col[u] + 1 for u in ps), default=0)
        col[v] = c
        taken = used.setdefault(c, set())
        want = lane[ps[0]] if ps else 0
        if want in taken:
            want = 0
            while want in taken:
                want += 1
        taken.add(want)
        lane[v] = want
    return col, lane


# ----------------------------------------------------------------------------------------------
# calendar layout
# ----------------------------------------------------------------------------------------------

@dataclass
class CalendarLayout:
    """Positions of the visible nodes (centres, y down, for cytoscape's ``preset`` layout).

    ``nodes`` in topological order; ``column``/``lane``/``row`` per node; ``row_starts`` column
    index each row starts at; ``column_widths`` (m,); ``block_spans`` block id → column interval;
    ``cut_blocks`` ids of blocks a row break cuts; ``edges`` projected (source, target) pairs;
    ``width``/``height`` of the drawing; ``cost`` the Eq. 6 value of the chosen rows.
    """

    nodes: list[str]
    positions: dict[str, tuple[float, float]]
    sizes: dict[str, tuple[float, float]]
    column: dict[str, int]
    lane: dict[str, int]
    row: dict[str, int]
    row_starts: list[int]
    column_widths: list[float]
    edges: list[tuple[str, str]]
    block_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    cut_blocks: list[str] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    cost: float = 0.0


def block_column_spans(graph: LayerGraph, visible: Mapping[str, str],
                       column: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Block id → inclusive column interval [min, max] over the visible nodes of split + members.

    A block inside one collapsed group maps to a single column (and can never be cut).
    """
    spans: dict[str, tuple[int, int]] = {}
    for b in graph.blocks:
        cols = [column[visible[x]] for x in (b.split, *b.members) if x in visible and visible[x] in column]
        if cols:
            spans[b.id] = (min(cols), max(cols))
    return spans


def calendar_layout(graph: LayerGraph, max_width: float, lam: float = 1.0, *,
                    visible: Mapping[str, str] | None = None, node_w: float = 60.0, node_h: float = 30.0,
                    h_gap: float = 20.0, v_gap: float = 10.0, row_gap: float = 40.0, p: float = 2.0,
                    free_last: bool = False, sizes: Mapping[str, tuple[float, float]] | None = None,
                    ) -> CalendarLayout:
    """Calendar layout of ``graph`` seen through ``visible`` (layer id → visible node id).

    ``visible=None`` shows every layer as itself. Node boxes are ``node_w × node_h`` unless
    ``sizes`` gives (w, h) for a visible node (e.g. wider collapsed groups). A column is as wide
    as its widest node; columns are ``h_gap`` apart and rows (cut by :func:`segment_rows` with
    capacity ``max_width``, weight ``lam`` and exponent ``p``) are stacked top to bottom,
    ``row_gap`` apart; lane k of a row sits k · (lane height + ``v_gap``) below the row's top,
    where the lane height is the tallest node in that row. Cost: O(V + E) for the projection and
    layering plus the DP (see :func:`segment_rows`).
    """
    vis = dict(visible) if visible is not None else {k: k for k in graph.nodes}
    nodes = visible_nodes(graph, vis)
    edges = edges_between_visible(graph, vis)
    col, lane = layer_columns(nodes, edges)
    size = {v: (sizes[v] if sizes is not None and v in sizes else (node_w, node_h)) for v in nodes}
    m = 1 + max(col.values(), default=-1)
    widths = [0.0] * m
    for v in nodes:
        widths[col[v]] = max(widths[col[v]], size[v][0])
    spans = block_column_spans(graph, vis, col)
    span_list = [s for s in spans.values() if s[0] < s[1]]
    starts = segment_rows(widths, max_width, span_list, lam, p=p, gap=h_gap, free_last=free_last)
    cost = segmentation_cost(widths, max_width, starts, span_list, lam, p=p, gap=h_gap, free_last=free_last)
    row_of_col = [0] * m
    x_of_col = [0.0] * m
    bounds = [*starts, m]
    for r, (s, e) in enumerate(itertools.pairwise(bounds)):
        x = 0.0
        for c in range(s, e):
            row_of_col[c], x_of_col[c] = r, x
            x += widths[c] + h_gap
    n_rows = len(starts)
    lanes_in_row = [0] * n_rows
    lane_h = [0.0] * n_rows
    for v in nodes:
        r = row_of_col[col[v]]
        lanes_in_row[r] = max(lanes_in_row[r], lane[v] + 1)
        lane_h[r] = max(lane_h[r], size[v][1])
    row_y = [0.0] * n_rows
    y = 0.0
    for r in range(n_rows):
        row_y[r] = y
        y += lanes_in_row[r] * (lane_h[r] + v_gap) - v_gap + row_gap
    height = y - row_gap if n_rows else 0.0
    pos: dict[str, tuple[float, float]] = {}
    row: dict[str, int] = {}
    for v in nodes:
        c = col[v]
        r = row_of_col[c]
        row[v] = r
        pos[v] = (x_of_col[c] + widths[c] / 2.0,
                  row_y[r] + lane[v] * (lane_h[r] + v_gap) + lane_h[r] / 2.0)
    width = max((x_of_col[e - 1] + widths[e - 1] for s, e in itertools.pairwise(bounds)), default=0.0)
    cut = [bid for bid, (a, b) in spans.items() if any(a < k <= b for k in starts[1:])]
    return CalendarLayout(nodes, pos, size, col, lane, row, starts, widths, edges, spans, cut, width, height, cost)
