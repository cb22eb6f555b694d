"""Dashboard logic without a browser: view functions and callbacks' helpers with plain inputs."""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pytest

from aevis_core.analysis import analyze
from aevis_core.attacks import AttackConfig
from aevis_core.graph import build_graph, build_hierarchy
from aevis_core.layout.segment import calendar_layout
from aevis_core.layout.treecut import cut_mapping, tree_cut
from aevis_core.pool import build_pool
from app.levels.fmap import figures as fv
from app.levels.groups import presets as gp
from app.levels.groups.callbacks import add_group
from app.levels.groups.figures import groups_view
from app.levels.images import figures as iv
from app.levels.layer import figures as lv
from app.levels.neuron import figures as nv
from app.payloads import MAX_GROUPS
from app.services.analyses import AnalysisService


@pytest.fixture(scope="module")
def setup(resnet20, cifar_demo):
    g = build_graph(resnet20.model, (3, 32, 32), "r20")
    s = cifar_demo.subset([i for i in range(100) if cifar_demo.labels[i] in (3, 5)])  # cats and dogs
    pool = build_pool(resnet20, s, AttackConfig(eps=8 / 255, steps=5))
    presets = gp.presets(pool)
    a = analyze(resnet20, g, pool, presets["cat: normal vs adversarial"])
    return resnet20, g, pool, a


def test_pool_and_filters(setup):
    _, _, pool, _ = setup
    assert len(pool.items) == 40 and pool.pixels.shape == (40, 32, 32, 3)
    adv = iv.filter_items(pool, kind="adversarial")
    assert len(adv) == 20 and all(it.id.endswith("~adv") for it in adv)
    cats = iv.filter_items(pool, cls=3, kind="normal")
    assert {it.label for it in cats} <= {3, 5} and all(it.label == 3 or it.pred == 3 for it in cats)
    wrong = iv.filter_items(pool, correct="wrong")
    assert all(it.pred != it.label for it in wrong)
    ranked = iv.filter_items(pool, sort="score")
    assert [it.score for it in ranked] == sorted((it.score for it in ranked), reverse=True)
    assert np.mean([it.score for it in adv]) > np.mean([it.score for it in iv.filter_items(pool, kind="normal")])


def test_presets_and_compare_with_predicted(setup):
    _, _, pool, _ = setup
    p = gp.presets(pool)
    assert set(p) == {"cat: normal vs adversarial", "dog: normal vs adversarial"}
    groups = p["cat: normal vs adversarial"]
    assert [len(v) for v in groups.values()] == [10, 10]
    adv = next(it for it in pool.items if it.kind == "adversarial" and it.pred in (3, 5) and it.pred != it.label)
    cmp = gp.compare_with_predicted(pool, adv.id)
    assert cmp is not None and list(cmp.values())[0] == [adv.id]
    assert all(pool.items[pool.index()[i]].label == adv.pred for i in list(cmp.values())[1])
    assert gp.compare_with_predicted(pool, "nope") is None


def test_add_group_limits():
    g: dict[str, list[str]] = {}
    for i in range(MAX_GROUPS + 2):
        g, hint = add_group(g, None, [f"img{i}"])
    assert list(g) == ["G1", "G2", "G3", "G4"] and "at most 4" in hint
    g, hint = add_group(g, "G2", ["x", "y"])
    assert g["G2"] == ["x", "y"] and len(groups_view(g)) == 4 and hint == ""
    assert add_group(g, "G5", [])[1].startswith("select images")


def test_layer_view_elements_and_dot_plots(setup):
    entry, g, _, a = setup
    root = build_hierarchy(g)
    doi = AnalysisService.doi(a)
    cut = tree_cut(root, doi, budget=30)
    mapping = cut_mapping(cut, root)
    lay = calendar_layout(g, 1100.0, 1.0, visible=mapping, node_w=lv.NODE_W, node_h=lv.NODE_H)
    els = lv.elements(g, root, a, lay, mapping, "similarity", max(doi, key=lambda k: (doi[k], k)))
    nodes = [e for e in els if "source" not in e["data"]]
    assert len(nodes) == len(cut) <= 30
    assert all(e["data"]["svg"].startswith("data:image/svg+xml") for e in nodes)
    assert sum(e["data"]["members"] for e in nodes) == len(g.nodes)
    assert any("diverging" in e["classes"] for e in nodes)  # the diverging layer is highlighted
    over = lv.overview_elements(els)
    assert len(over) == len(els) and all("svg" not in e["data"] for e in over)
    zoom, pan = lv.zoom_to({"x": 100.0, "y": 50.0}, zoom=2.0, width=400, height=200)
    assert zoom == 2.0 and pan == {"x": 0.0, "y": 0.0}
    svg = urllib.parse.unquote(lv.dot_plot_svg([[(0.5, "#f00", (0.2, 0.8))], [(1.0, "#f00", None)]], "similarity"))
    assert svg.count("<circle") == 2 and svg.count("<rect") == 2


def test_treemap_covers_every_critical_map(setup):
    _, _, _, a = setup
    layer = "layer3.0.relu2"
    rects = fv.treemap_rects(a, layer, 3, "importance")
    crit = set().union(*(set(dp.layers[layer].critical) for dp in a.datapaths.values()))
    regions = [r for r in rects if r.kind == "region"]
    assert sorted(m for r in regions for m in r.maps) == sorted(crit)
    clusters = [r for r in rects if r.kind == "cluster"]
    assert sorted(m for r in clusters for m in r.maps) == sorted(crit)
    fig = fv.figure(layer, rects, "difference", "t")
    assert len(fig.layout.shapes) >= len(regions) and len(fig.data[0].x) == len(clusters)
    assert fig.data[1].marker.cmin == -fig.data[1].marker.cmax  # symmetric scale for differences
    two = fv.panels_figure([("a", rects), ("b", rects)], "importance", "t")
    xs = two.data[0].x
    assert len(xs) == 2 * len(clusters) and max(xs) > 1 > min(xs)  # second panel to the right
    assert {c["layer"] for c in two.data[0].customdata} == {"a", "b"}
    assert all(set(c) == {"layer", "channel", "size", "region"} for c in two.data[0].customdata)


def test_neuron_figures():
    maps = {"A": np.random.default_rng(0).standard_normal((3, 4, 4)), "B": np.zeros((2, 4, 4))}
    fig = nv.heatmap_figure(maps, {"A": ["a", "b", "c"], "B": ["d", "e"]}, "label")
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 5 and heat[0].zmin == -heat[0].zmax
    one = nv.heatmap_figure({"A": maps["A"][:1], "B": maps["B"][:1]}, {"A": ["a"], "B": ["d"]}, "label")
    # a 2x1 grid: no empty cells
    assert len(one.layout.annotations) == 2 and "xaxis3" not in one.layout.to_plotly_json()
    over = nv.heatmap_figure(maps, {"A": ["a", "b", "c"], "B": ["d", "e"]}, "label",
                             images={"A": np.zeros((3, 8, 8, 3), dtype=np.uint8)})
    assert len([t for t in over.data if t.type == "image"]) == 3
    overlaid = [t for t in over.data if t.type == "heatmap"][0]
    assert overlaid.dx == 2 and overlaid.opacity == 0.6  # a 4x4 map stretched over the 8x8 image
    img = nv.image_figure([np.zeros((4, 4, 3), dtype=np.uint8)], ["x"], "t")
    assert img.data[0].type == "image"


def test_export_json_is_serialisable(setup):
    from aevis_core.datapath.extract import datapath_to_dict

    _, _, _, a = setup
    doc = {"datapaths": {k: datapath_to_dict(v) for k, v in a.datapaths.items()}, "statistics": a.stats.to_dict(),
           "divergence": a.divergence.to_dict() if a.divergence else None}
    assert json.loads(json.dumps(doc))["divergence"]["layer"] == a.divergence.layer


def test_summary_names_the_diverging_point_its_evidence_and_the_control(setup):
    from app.levels.groups.figures import summary

    _, _, _, a = setup
    text = " ".join(str(c.children) for c in summary(a))
    assert f"diverging point: {a.divergence.layer}" in text
    assert "control: shuffled, rms" in text and "/255 vs adversarial" in text
    if a.divergence.layer:
        assert "95 % CI" in text and f"× {a.divergence.draws} control draws" in text


def test_layer_labels_are_the_shortest_unique_suffixes():
    names = lv.short_names(["layer1.2.bn1", "layer3.2.bn1", "layer3.1.bn1", "conv1", "layer1", "fc"])
    assert names == {"layer1.2.bn1": "layer1.2.bn1", "layer3.2.bn1": "layer3.2.bn1", "layer3.1.bn1": "1.bn1",
                     "conv1": "conv1", "layer1": "layer1", "fc": "fc"}
    assert len(set(names.values())) == len(names)


def test_treemap_clusters_clickable_over_their_area_legend_and_empty_state(setup):
    _, _, _, a = setup
    layer = "layer3.0.relu2"
    rects = fv.treemap_rects(a, layer, 3, "importance")
    fig = fv.figure(layer, rects, "activation", "t", fv.color_label("activation", a))
    sizes = list(fig.data[0].marker.size)
    assert fig.data[0].marker.symbol == "square" and max(sizes) > 60  # a big cluster: a big click target
    assert fig.data[1].marker.colorbar.title.text.startswith("mean activation<br>(")
    assert fv.color_label("difference", a) == f"activation difference ({a.pair[0]} − {a.pair[1]})"
    assert fv.empty_reason(a, layer) is None
    import copy

    b = copy.deepcopy(a)
    for dp in b.datapaths.values():
        dp.layers[layer].critical = []
    assert fv.empty_reason(b, layer).startswith(f"No critical maps in {layer} for {' or '.join(b.datapaths)}")
