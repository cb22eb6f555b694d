"""Initial visible nodes: a degree-of-interest tree cut over the layer hierarchy.

A *cut* of the hierarchy (:func:`aevis_core.graph.hierarchy.build_hierarchy`) is a list of tree
nodes — collapsed groups or single layers — such that every layer lies under exactly one of them.
Which groups are opened follows Furnas' degree of interest (Furnas 1986; DOI trees, Heer & Card
2004), ``DOI(x) = API(x) − D(x, focus)``, with the datapath difference taking the role of the
distance to the focus:

    interest(g) = agg_{layer ∈ g} doi[layer]            agg = max (default) or mean
    doi[layer]  = max over set pairs (s, t) of 1 − Jaccard(C_s(layer), C_t(layer))
    DOI(g)      = interest(g) − β · depth(g)             (API(g) = −β · depth, favours shallow groups)

:func:`tree_cut` is greedy (not an exact DP over the tree): starting from the root it repeatedly
opens the group of highest DOI (ties: shallower, then earlier in graph order) whose opening keeps
the cut within ``budget``; a group that does not fit is skipped and the next one tried. Groups
are opened top-down, so a cut never shows a group while its parent is hidden. It costs
O(T log T) for T tree nodes.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aevis_core.datapath.similarity import jaccard
from aevis_core.graph.hierarchy import GroupNode

AGGREGATES = ("max", "mean")


@dataclass
class _Info:
    node: GroupNode
    parent: str | None
    depth: int
    pre: int      # pre-order index (graph order)
    end: int      # pre-order index one past the subtree


def _index(root: GroupNode) -> dict[str, _Info]:
    out: dict[str, _Info] = {}
    counter = itertools.count()

    def walk(n: GroupNode, parent: str | None, depth: int) -> None:
        if n.id in out:
            raise ValueError(f"hierarchy node id {n.id!r} occurs twice")
        info = _Info(n, parent, depth, next(counter), 0)
        out[n.id] = info
        for c in n.children:
            walk(c, n.id, depth + 1)
        info.end = next(counter)

    walk(root, None, 0)
    return out


def datapath_doi(critical: Mapping[str, Mapping[str, Iterable[int]]]) -> dict[str, float]:
    """Per-layer datapath difference ``max_{s<t} 1 − Jaccard(C_s, C_t)`` in [0, 1].

    ``critical``: set name → layer id → critical map indices (e.g. ``dp.layers[l].critical``).
    Layers missing from some set are compared among the sets that have them (0 with fewer than 2).
    """
    names = list(critical)
    layers: dict[str, None] = {}
    for s in names:
        layers.update(dict.fromkeys(critical[s]))
    out: dict[str, float] = {}
    for layer in layers:
        have = [set(critical[s][layer]) for s in names if layer in critical[s]]
        out[layer] = max((1.0 - jaccard(a, b) for a, b in itertools.combinations(have, 2)), default=0.0)
    return out


def group_doi(root: GroupNode, doi: Mapping[str, float], *, agg: str = "max", beta: float = 0.05) -> dict[str, float]:
    """DOI of every tree node: ``agg`` of ``doi`` over its layers (missing layers count 0) − β·depth."""
    if agg not in AGGREGATES:
        raise ValueError(f"unknown aggregate {agg!r}: use max or mean")
    out: dict[str, float] = {}

    def walk(n: GroupNode, depth: int) -> tuple[float, float, int]:   # (max, sum, count) over layers
        if n.layer is not None:
            v = float(doi.get(n.layer, 0.0))
            acc = (v, v, 1)
        else:
            parts = [walk(c, depth + 1) for c in n.children]
            acc = (max((p[0] for p in parts), default=0.0), sum(p[1] for p in parts), sum(p[2] for p in parts))
        interest = acc[0] if agg == "max" else (acc[1] / acc[2] if acc[2] else 0.0)
        out[n.id] = interest - beta * depth
        return acc

    walk(root, 0)
    return out


def tree_cut(root: GroupNode, doi: Mapping[str, float], budget: int = 50, *, agg: str = "max",
             beta: float = 0.05) -> list[str]:
    """Greedy DOI tree cut of at most ``budget`` visible nodes (ids in graph order).

    ``doi``: layer id → datapath difference (e.g. :func:`datapath_doi`). Opening a group with c
    children grows the cut by c − 1; the highest-DOI group that still fits is opened until none
    fits. Every layer is covered by exactly one returned node. ``budget`` < 1 is treated as 1.
    """
    info = _index(root)
    score = group_doi(root, doi, agg=agg, beta=beta)
    visible = {root.id}
    size = 1
    heap: list[tuple[float, int, int, str]] = []

    def push(n: GroupNode) -> None:
        if n.layer is None and n.children:
            i = info[n.id]
            heapq.heappush(heap, (-score[n.id], i.depth, i.pre, n.id))

    push(root)
    while heap:
        _, _, _, gid = heapq.heappop(heap)
        node = info[gid].node
        grow = len(node.children) - 1
        if size + grow > max(budget, 1):
            continue
        visible.discard(gid)
        for c in node.children:
            visible.add(c.id)
            push(c)
        size += grow
    return sorted(visible, key=lambda k: info[k].pre)


def _check_cut(cut: Iterable[str], info: Mapping[str, _Info]) -> None:
    for k in cut:
        if k not in info:
            raise ValueError(f"{k!r} is not a node of the hierarchy")


def expand(cut: Iterable[str], group_id: str, root: GroupNode) -> list[str]:
    """Open a visible group: replace ``group_id`` by its children (no-op for a layer or a hidden id)."""
    info = _index(root)
    cut = list(cut)
    _check_cut(cut, info)
    node = info[group_id].node if group_id in info else None
    if node is None or group_id not in cut or node.layer is not None or not node.children:
        return cut
    out = [k for k in cut if k != group_id] + [c.id for c in node.children]
    return sorted(out, key=lambda k: info[k].pre)


def collapse(cut: Iterable[str], group_id: str, root: GroupNode) -> list[str]:
    """Close ``group_id``: every visible node inside it is replaced by the group itself.

    Also works for a group above visible groups (closes several levels at once); a no-op when
    ``group_id`` is already visible or hidden inside a collapsed ancestor.
    """
    info = _index(root)
    cut = list(cut)
    _check_cut(cut, info)
    if group_id not in info:
        raise ValueError(f"{group_id!r} is not a node of the hierarchy")
    g = info[group_id]
    inside = [k for k in cut if g.pre <= info[k].pre < g.end]
    if not inside or inside == [group_id]:
        return cut
    out = [k for k in cut if k not in set(inside)] + [group_id]
    return sorted(out, key=lambda k: info[k].pre)


def cut_mapping(cut: Iterable[str], root: GroupNode) -> dict[str, str]:
    """Layer id → id of the visible node covering it (the ``visible`` argument of the layout).

    Raises ``ValueError`` when a layer is covered twice or not at all.
    """
    info = _index(root)
    out: dict[str, str] = {}
    for k in cut:
        if k not in info:
            raise ValueError(f"{k!r} is not a node of the hierarchy")
        for layer in info[k].node.layers():
            if layer in out:
                raise ValueError(f"layer {layer!r} is covered by both {out[layer]!r} and {k!r}")
            out[layer] = k
    missing = [layer for layer in root.layers() if layer not in out]
    if missing:
        raise ValueError(f"{len(missing)} layers are not covered by the cut, e.g. {missing[0]!r}")
    return out
