"""aevis_core.layout: calendar DP, tree cut, Euler regions, K-means, squarified treemap."""

from __future__ import annotations

import itertools
import math
import random
import time

import numpy as np
import pytest

from aevis_core.graph import build_graph, build_hierarchy
from aevis_core.graph.hierarchy import GroupNode
from aevis_core.graph.types import Block, LayerGraph, LayerNode
from aevis_core.layout import (
    calendar_layout,
    collapse,
    cut_mapping,
    datapath_doi,
    edges_between_visible,
    euler_regions,
    expand,
    feature_treemap,
    group_doi,
    kmeans_clusters,
    layer_columns,
    layer_treemap,
    map_features,
    n_stack,
    region_patterns,
    segment_rows,
    segment_rows_brute,
    segmentation_cost,
    squarify,
    tree_cut,
)
from aevis_core.layout.euler import Region


@pytest.fixture(scope="module")
def r56(resnet56):
    g = build_graph(resnet56.model, (3, 32, 32), "cifar-resnet56")
    return g, build_hierarchy(g)


def _random_instance(rng: random.Random, m: int) -> tuple[list[float], list[tuple[int, int]]]:
    widths = [rng.uniform(0.5, 3.0) for _ in range(m)]
    spans = []
    for _ in range(rng.randint(0, 4)):
        a = rng.randrange(m)
        spans.append((a, min(m - 1, a + rng.randint(1, 4))))
    return widths, spans


# ----------------------------------------------------------------------------------------------
# segmentation DP
# ----------------------------------------------------------------------------------------------

def test_dp_equals_brute_force():
    rng = random.Random(0)
    for trial in range(150):
        m = rng.randint(1, 12)
        widths, spans = _random_instance(rng, m)
        max_width = rng.uniform(2.5, 9.0)
        lam = rng.choice([0.0, 0.05, 0.3, 1.0, 10.0])
        p = rng.choice([1.0, 2.0, 3.0])
        gap = rng.choice([0.0, 0.25])
        free_last = trial % 3 == 0
        kw = dict(p=p, gap=gap, free_last=free_last)
        dp = segment_rows(widths, max_width, spans, lam, **kw)
        bf = segment_rows_brute(widths, max_width, spans, lam, **kw)
        c_dp = segmentation_cost(widths, max_width, dp, spans, lam, **kw)
        c_bf = segmentation_cost(widths, max_width, bf, spans, lam, **kw)
        assert dp[0] == 0 and dp == sorted(set(dp)) and dp[-1] < m
        assert math.isfinite(c_dp)
        assert c_dp == pytest.approx(c_bf, rel=1e-9, abs=1e-12), (trial, widths, spans, max_width, lam, dp, bf)


def test_block_counted_once_and_empty_input():
    # one block over all 4 columns; two breaks inside it must cost λ once, not twice
    c = segmentation_cost([1, 1, 1, 1], 1.0, [0, 1, 2, 3], [(0, 3)], 5.0)
    assert c == pytest.approx(5.0)
    assert segment_rows([], 3.0, [], 1.0) == []
    assert segment_rows_brute([], 3.0, [], 1.0) == []


def _cuts(starts: list[int], spans: list[tuple[int, int]]) -> int:
    return sum(1 for a, b in spans if any(a < k <= b for k in starts[1:]))


def test_large_lambda_never_cuts_when_avoidable():
    rng = random.Random(1)
    checked = 0
    for _ in range(200):
        m = rng.randint(2, 11)
        widths, spans = _random_instance(rng, m)
        max_width = rng.uniform(3.0, 10.0)
        avoidable = False
        for mask in range(1 << (m - 1)):
            starts = [0] + [k for k in range(1, m) if mask >> (k - 1) & 1]
            if _cuts(starts, spans) == 0 and math.isfinite(
                    segmentation_cost(widths, max_width, starts, spans, 0.0)):
                avoidable = True
                break
        if not avoidable:
            continue
        checked += 1
        starts = segment_rows(widths, max_width, spans, 1e6)
        assert _cuts(starts, spans) == 0
    assert checked > 50


def test_rows_respect_max_width():
    rng = random.Random(2)
    for _ in range(100):
        m = rng.randint(1, 40)
        widths = [rng.uniform(0.1, 4.0) for _ in range(m)]
        max_width = rng.uniform(1.0, 12.0)
        gap = rng.choice([0.0, 0.3])
        starts = segment_rows(widths, max_width, [], 0.0, gap=gap)
        for s, e in itertools.pairwise([*starts, m]):
            w = sum(widths[s:e]) + gap * (e - s - 1)
            assert e - s == 1 or w <= max_width + 1e-9
    # an over-wide column gets a row of its own
    assert segment_rows([1, 5, 1], 3.0, [], 0.0) == [0, 1, 2]


# ----------------------------------------------------------------------------------------------
# calendar layout
# ----------------------------------------------------------------------------------------------

def _toy_graph() -> LayerGraph:
    """input → a → b → c → add ← s (shortcut a → s → add) → out."""
    spec = [("input", []), ("a", ["input"]), ("b", ["a"]), ("c", ["b"]), ("s", ["a"]),
            ("add", ["c", "s"]), ("out", ["add"])]
    groups = {"b": ("blk",), "c": ("blk",), "s": ("blk",), "add": ("blk",)}
    nodes = {k: LayerNode(k, "input" if k == "input" else "conv", k, (4, 2, 2), 4, ins, k, groups.get(k, ()), i)
             for i, (k, ins) in enumerate(spec)}
    return LayerGraph("toy", nodes, [Block("block0", "residual", "a", "add", ["b", "c", "s", "add"])])


def test_edges_between_visible_projects_and_bridges():
    g = _toy_graph()
    full = {k: k for k in g.nodes}
    assert set(edges_between_visible(g, full)) == set(g.edges)
    coll = {k: ("blk" if k in ("b", "c", "s", "add") else k) for k in g.nodes}
    assert edges_between_visible(g, coll) == [("input", "a"), ("a", "blk"), ("blk", "out")]
    hidden = {k: k for k in g.nodes if k not in ("b", "c")}       # b and c hidden: a reaches add
    assert set(edges_between_visible(g, hidden)) == {("input", "a"), ("a", "s"), ("s", "add"), ("a", "add"),
                                                    ("add", "out")}


def test_toy_columns_lanes_and_collapsed_group():
    g = _toy_graph()
    lay = calendar_layout(g, max_width=1000.0, lam=1.0, node_w=10, h_gap=0)
    assert [lay.column[k] for k in ("input", "a", "b", "c", "add", "out")] == [0, 1, 2, 3, 4, 5]
    assert lay.column["s"] == 2 and lay.lane["s"] == 1 and lay.lane["b"] == 0
    assert lay.positions["s"][0] == lay.positions["b"][0] and lay.positions["s"][1] > lay.positions["b"][1]
    assert lay.block_spans == {"block0": (1, 4)}
    # rows of ≤ 4 columns: 3 + 3 is the tightest but cuts the block; a big λ breaks before it
    cheap = calendar_layout(g, max_width=40.0, lam=0.0, node_w=10, h_gap=0)
    assert cheap.row_starts == [0, 3] and cheap.cut_blocks == ["block0"]
    narrow = calendar_layout(g, max_width=40.0, lam=100.0, node_w=10, h_gap=0)
    assert narrow.row_starts == [0, 1, 5] and narrow.cut_blocks == []
    assert narrow.row["a"] == 1 and narrow.positions["a"][1] > narrow.positions["input"][1]
    root = build_hierarchy(g)
    vis = cut_mapping(["input", "a", "blk", "out"], root)
    lay2 = calendar_layout(g, max_width=1000.0, visible=vis, sizes={"blk": (40.0, 30.0)})
    assert lay2.nodes == ["input", "a", "blk", "out"]
    assert lay2.block_spans == {"block0": (1, 2)} and lay2.column_widths[2] == 40.0


def test_layer_columns_tolerates_backward_edges():
    col, lane = layer_columns(["x", "y", "z"], [("x", "y"), ("y", "z"), ("z", "y")])
    assert col == {"x": 0, "y": 1, "z": 2} and set(lane.values()) == {0}


def test_resnet56_calendar_layout(r56):
    g, root = r56
    max_width = 1200.0
    for lam in (0.0, 1.0, 50.0):
        t = time.perf_counter()
        lay = calendar_layout(g, max_width, lam, node_w=60, h_gap=20)
        dt = time.perf_counter() - t
        assert dt < 0.25          # ~2-5 ms on one core; generous for shared CI machines
        assert set(lay.positions) == set(g.nodes)
        xy = np.array(list(lay.positions.values()))
        assert np.isfinite(xy).all()
        for r in range(len(lay.row_starts)):
            xs = [lay.positions[k][0] for k in lay.nodes if lay.row[k] == r]
            assert max(xs) + 30 - (min(xs) - 30) <= max_width + 1e-6
        assert lay.width <= max_width
        # parallel branches share a column range: the shortcut of layer2.0 sits on lane 1
        assert lay.lane["layer2.0.shortcut.getitem"] == 1
        assert lay.column["layer2.0.shortcut.getitem"] == lay.column["layer2.0.conv1"]
        # every edge goes to a later column
        assert all(lay.column[u] < lay.column[v] for u, v in lay.edges)
        if lam >= 1.0:
            assert lay.cut_blocks == []
    assert calendar_layout(g, max_width, 0.0).cut_blocks      # λ = 0 packs rows and cuts blocks


# ----------------------------------------------------------------------------------------------
# tree cut
# ----------------------------------------------------------------------------------------------

def _groups(root: GroupNode) -> dict[str, GroupNode]:
    out: dict[str, GroupNode] = {}

    def walk(n: GroupNode) -> None:
        out[n.id] = n
        for c in n.children:
            walk(c)

    walk(root)
    return out


def test_tree_cut_covers_every_layer_once(r56):
    g, root = r56
    rng = random.Random(3)
    doi = {k: rng.random() for k in g.nodes}
    nodes = _groups(root)
    for budget in (1, 10, 50, 120, 1000):
        cut = tree_cut(root, doi, budget)
        vis = cut_mapping(cut, root)            # raises on double or missing cover
        assert set(vis) == set(g.nodes)
        assert len(cut) <= max(budget, 1)
        assert sum(len(nodes[k].layers()) for k in cut) == len(g.nodes)
        # maximal: no visible group can still be opened within the budget
        assert all(nodes[k].is_leaf or len(cut) - 1 + len(nodes[k].children) > budget for k in cut)
        assert budget >= len(g.nodes) or len(cut) >= budget - 7
    assert len(tree_cut(root, doi, 1000)) == len(g.nodes)


def test_tree_cut_expands_higher_doi_first(r56):
    g, root = r56
    doi = {k: (1.0 if k.startswith("layer3.") else 0.0) for k in g.nodes}
    cut = tree_cut(root, doi, 50)
    assert "layer1" in cut or all(not k.startswith("layer1.") or k.count(".") == 1 for k in cut)
    assert sum(k.startswith("layer3.") and k.count(".") == 2 for k in cut) > 20   # layer3 blocks opened
    assert not any(k.startswith(("layer1.", "layer2.")) and k.count(".") == 2 for k in cut)
    # one hot block is opened before its siblings
    doi2 = {k: (1.0 if k.startswith("layer2.4.") else 0.1) for k in g.nodes}
    cut2 = tree_cut(root, doi2, 25)
    assert "layer2.4.conv1" in cut2 and "layer2.4" not in cut2
    gd = group_doi(root, doi2, agg="mean")
    assert gd["layer2.4"] > gd["layer2.3"] and gd["layer2"] < gd["layer2.4"]


def test_expand_collapse_round_trip(r56):
    g, root = r56
    cut = tree_cut(root, {k: 0.5 for k in g.nodes}, 30)
    grp = next(k for k in cut if not _groups(root)[k].is_leaf)
    opened = expand(cut, grp, root)
    assert len(opened) == len(cut) - 1 + len(_groups(root)[grp].children)
    cut_mapping(opened, root)
    assert collapse(opened, grp, root) == cut
    leaf = next(k for k in cut if _groups(root)[k].is_leaf)
    assert expand(cut, leaf, root) == cut                                  # a layer cannot be opened
    # collapsing an ancestor closes several levels at once, and re-opening gives its children
    top = collapse(opened, "layer2", root)
    cut_mapping(top, root)
    assert "layer2" in top and not any(k.startswith("layer2.") for k in top)
    assert collapse(top, "layer2", root) == top
    assert set(expand(top, "layer2", root)) - set(top) == {c.id for c in _groups(root)["layer2"].children}


def test_datapath_doi():
    crit = {"A": {"l1": [1, 2, 3], "l2": [5]}, "B": {"l1": [3, 4], "l2": [5]}, "C": {"l1": [1, 2, 3]}}
    d = datapath_doi(crit)
    assert d["l1"] == pytest.approx(1 - 1 / 4) and d["l2"] == 0.0


# ----------------------------------------------------------------------------------------------
# Euler regions and K-means
# ----------------------------------------------------------------------------------------------

def test_euler_two_sets():
    regs = euler_regions({"A": {1, 2, 3}, "B": {3, 4}}, 10)
    assert [(r.label, r.maps) for r in regs] == [("A∩B", [3]), ("A only", [1, 2]), ("B only", [4])]
    assert regs[0].pattern == (True, True)
    assert euler_regions({"A": {1}, "B": {1}}, 2)[0].label == "A∩B"     # empty regions dropped
    with pytest.raises(ValueError):
        euler_regions({"A": {10}, "B": set()}, 10)


def test_euler_three_and_four_sets():
    crit = {"A": {0, 1, 2, 6}, "B": {1, 2, 3, 5}, "C": {2, 4, 5, 6}}
    got = {r.label: r.maps for r in euler_regions(crit, 8)}
    assert got == {"A∩B∩C": [2], "A∩B": [1], "A∩C": [6], "B∩C": [5], "A only": [0], "B only": [3],
                   "C only": [4]}
    assert [r.label for r in euler_regions(crit, 8)][0] == "A∩B∩C"
    rng = np.random.default_rng(0)
    sets = {s: set(rng.choice(40, 15, replace=False).tolist()) for s in "ABCD"}
    regs = euler_regions(sets, 40)
    assert len(region_patterns(4)) == 15
    union = set().union(*sets.values())
    assert sorted(j for r in regs for j in r.maps) == sorted(union)          # a partition of the union
    for r in regs:
        for j in r.maps:
            assert tuple(j in sets[s] for s in "ABCD") == r.pattern


def test_kmeans_deterministic_and_clipped():
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 0.1, (10, 3)), rng.normal(5, 0.1, (10, 3))])
    maps = list(range(20))
    a = kmeans_clusters(maps, feats, 2, seed=0)
    b = kmeans_clusters(maps, feats, 2, seed=0)
    assert a == b and sorted(map(sorted, a)) == [list(range(10)), list(range(10, 20))]
    assert len(kmeans_clusters([3, 7], feats, 5)) == 2                   # k clipped to #maps
    assert kmeans_clusters([4], feats, 3) == [[4]]
    assert kmeans_clusters([], feats, 3) == []
    dup = np.zeros((6, 2))
    assert kmeans_clusters(range(6), dup, 4) == [list(range(6))]       # k clipped to distinct rows
    f = map_features(np.ones((5, 20)), np.zeros((3, 20)))
    assert f.shape == (20, 8)


# ----------------------------------------------------------------------------------------------
# treemap
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_c,expected", [(1, 1), (9, 1), (10, 2), (99, 2), (100, 3), (1000, 4)])
def test_n_stack(n_c, expected):
    assert n_stack(n_c) == expected
    assert n_stack(n_c) == math.floor(math.log10(n_c) + 1e-12) + 1


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def _assert_tiles(children, parent, counts):
    area = (parent[2] - parent[0]) * (parent[3] - parent[1])
    areas = [(c[2] - c[0]) * (c[3] - c[1]) for c in children]
    assert sum(areas) == pytest.approx(area, rel=1e-9)
    total = sum(counts)
    for a, n in zip(areas, counts, strict=True):
        assert a == pytest.approx(area * n / total, rel=1e-6, abs=1e-12)
    for c in children:
        assert parent[0] - 1e-9 <= c[0] <= c[2] <= parent[2] + 1e-9
        assert parent[1] - 1e-9 <= c[1] <= c[3] <= parent[3] + 1e-9
    for a, b in itertools.combinations(children, 2):
        assert _overlap(a, b) <= 1e-9 * area


def test_squarify_tiles_parent():
    rng = random.Random(4)
    for _ in range(60):
        vals = [rng.randint(1, 60) for _ in range(rng.randint(1, 12))]
        box = (rng.uniform(-5, 5), rng.uniform(-5, 5))
        box = (*box, box[0] + rng.uniform(0.5, 20), box[1] + rng.uniform(0.5, 20))
        _assert_tiles(squarify(vals, box), box, vals)
    r = squarify([6, 6, 4, 3, 2, 2, 1], (0, 0, 6, 4))                  # Bruls et al.'s example
    ratios = [max(w / h, h / w) for w, h in ((x1 - x0, y1 - y0) for x0, y0, x1, y1 in r)]
    assert max(ratios) < 3.0


def test_feature_treemap_nesting():
    rng = np.random.default_rng(1)
    sets = {"A": set(rng.choice(64, 30, replace=False).tolist()), "B": set(rng.choice(64, 25, replace=False).tolist())}
    feats = rng.normal(size=(64, 5))
    z = rng.random(64)
    box = (0.0, 0.0, 4.0, 3.0)
    rects = layer_treemap(sets, 64, feats, k=3, map_values=z, box=box)
    regions = [r for r in rects if r.kind == "region"]
    regs = euler_regions(sets, 64)
    assert [r.region_label for r in regions] == [r.label for r in regs]
    _assert_tiles([(r.x0, r.y0, r.x1, r.y1) for r in regions], box, [len(r.maps) for r in regs])
    for reg in regions:
        cl = [r for r in rects if r.kind == "cluster" and r.region_label == reg.region_label]
        assert sorted(j for c in cl for j in c.maps) == reg.maps
        _assert_tiles([(c.x0, c.y0, c.x1, c.y1) for c in cl], (reg.x0, reg.y0, reg.x1, reg.y1),
                      [len(c.maps) for c in cl])
        for c in cl:
            assert c.value == pytest.approx(z[c.maps].mean())
            st = [r for r in rects if r.kind == "stack" and r.region_label == c.region_label
                  and r.cluster_index == c.cluster_index]
            assert len(st) == n_stack(len(c.maps))
            assert sorted(j for s in st for j in s.maps) == c.maps
            for s in st:
                assert c.x0 - 1e-9 <= s.x0 < s.x1 <= c.x1 + 1e-9 and c.y0 - 1e-9 <= s.y0 < s.y1 <= c.y1 + 1e-9
    # a region of 150 maps in one cluster -> 3 stacked rectangles; padding keeps clusters inside
    big = feature_treemap([Region((True,), "A only", list(range(150)))], None, None, pad=0.05)
    assert [r.kind for r in big] == ["region", "cluster", "stack", "stack", "stack"]
    assert big[1].x0 == pytest.approx(0.05) and big[1].x1 == pytest.approx(0.95)
    assert math.isnan(big[1].value) and big[1].to_dict()["value"] is None
