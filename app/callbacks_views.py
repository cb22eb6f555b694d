"""View callbacks (layer, feature-map and neuron levels): read cached results, compute nothing heavy.

Only the neuron heat maps run a (truncated, cached) forward pass; discrepancy maps are a
background job.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import numpy as np
from dash import Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from aevis_core.analysis import Analysis
from aevis_core.cache import content_key
from aevis_core.graph.hierarchy import GroupNode, build_hierarchy
from aevis_core.graph.trace import FX_LOCK
from aevis_core.layout.segment import calendar_layout
from aevis_core.layout.treecut import collapse, cut_mapping, datapath_doi, expand, tree_cut
from aevis_core.neuron import activation_maps, dim_unimportant, discrepancy_map, top_activating
from aevis_core.pool import Pool
from app import jobs
from app.callbacks import load_analysis
from app.manager import job_options
from app.resources import Resources
from app.views import fmap as fv
from app.views import layer as lv
from app.views import neuron as nv

ROW_WIDTH = 1100.0
MAX_PANELS = 4


def hierarchy(res: Resources) -> GroupNode:
    """The layer hierarchy of the model (cheap to rebuild)."""
    return build_hierarchy(res.graph)


def doi_of(a: Analysis) -> dict[str, float]:
    """Per-layer degree of interest: datapath difference between the groups."""
    return datapath_doi({name: {k: v.critical for k, v in dp.layers.items()} for name, dp in a.datapaths.items()})


def initial_focus(a: Analysis, doi: dict[str, float]) -> str:
    """The diverging layer, else the layer whose datapaths differ most."""
    if a.divergence is not None and a.divergence.layer:
        return a.divergence.layer
    return max(doi, key=lambda k: (doi[k], k)) if doi else next(iter(a.stats.layers))


def heat_maps(res: Resources, a: Analysis, layer: str, channel: int, pool_key: str | None,
              per_group: int = 6) -> dict[str, np.ndarray]:
    """Activation maps (N, h, w) per group for the first ``per_group`` images; cached."""
    def compute() -> dict[str, np.ndarray]:
        pool = pool_or_stop(res, pool_key)
        with FX_LOCK:  # callbacks run in threads: no forward while another thread traces
            return {g: activation_maps(res.entry, res.graph, layer, channel, pool.tensor(ids[:per_group]))
                    for g, ids in a.groups.items()}

    return res.cache.get_or_compute(content_key("heat/v1", a.key, layer, channel, per_group), compute)[0]


def pool_or_stop(res: Resources, pool_key: str | None) -> Pool:
    """The page's pool, or stop the callback quietly (nothing to show yet)."""
    pool = res.pool(pool_key)
    if pool is None:
        raise PreventUpdate
    return pool


def register_views(app: Dash, res: Resources) -> None:
    """Attach the view callbacks."""

    @app.callback(Output("cut", "data"), Output("focus-layer", "data"),
                  Input("analysis-key", "data"), Input("layer-graph", "tapNodeData"),
                  Input("collapse-group", "n_clicks"),
                  State("cut", "data"), State("focus-layer", "data"), State("url-focus", "data"),
                  prevent_initial_call=True)
    def cut_and_focus(key: str | None, tapped: dict[str, Any] | None, _collapse: int, cut: list[str] | None,
                      focus: str | None, url_focus: dict[str, Any] | None) -> tuple[Any, Any]:
        a = load_analysis(res, key)
        if a is None:
            raise PreventUpdate
        root = hierarchy(res)
        trig = ctx.triggered_id
        if trig == "analysis-key" or not cut:
            doi = doi_of(a)
            wanted = (url_focus or {}).get("layer")
            layer = wanted if wanted in a.stats.layers else initial_focus(a, doi)
            return tree_cut(root, doi, budget=50), layer
        if trig == "layer-graph" and tapped:
            if tapped.get("is_group"):
                return expand(cut, tapped["id"], root), no_update
            return no_update, tapped["id"]
        if trig == "collapse-group" and focus:
            parent = _parent_group(root, focus, cut)
            if parent:
                return collapse(cut, parent, root), no_update
        raise PreventUpdate

    @app.callback(Output("layer-graph", "elements"), Output("layer-graph", "stylesheet"),
                  Input("cut", "data"), Input("stat", "value"), Input("lam", "value"), Input("focus-layer", "data"),
                  State("analysis-key", "data"))
    def layer_graph(cut: list[str] | None, stat: str, lam: float, focus: str | None,
                    key: str | None) -> tuple[Any, Any]:
        a = load_analysis(res, key)
        if a is None or not cut:
            return [], lv.STYLESHEET
        root = hierarchy(res)
        mapping = cut_mapping(cut, root)
        lay = calendar_layout(res.graph, ROW_WIDTH, float(lam or 0), visible=mapping,
                              node_w=lv.NODE_W, node_h=lv.NODE_H, h_gap=26, v_gap=16, row_gap=44)
        return lv.elements(res.graph, root, a, lay, mapping, stat or "similarity", focus), lv.STYLESHEET

    @app.callback(Output("layer-overview", "elements"), Output("layer-overview", "stylesheet"),
                  Input("layer-graph", "elements"))
    def overview(els: list[dict[str, Any]] | None) -> tuple[Any, Any]:
        return lv.overview_elements(els or []), lv.OVERVIEW_STYLE

    @app.callback(Output("layer-graph", "zoom"), Output("layer-graph", "pan"),
                  Input("layer-overview", "tapNode"), prevent_initial_call=True)
    def jump(node: dict[str, Any] | None) -> tuple[Any, Any]:
        if not node or "position" not in node:
            raise PreventUpdate
        return lv.zoom_to(node["position"])

    @app.callback(Output("layer-graph", "layout"), Input("fit-graph", "n_clicks"), Input("layer-graph", "elements"))
    def refit(_n: int, _els: Any) -> dict[str, Any]:
        return {"name": "preset", "fit": True, "padding": 12}

    @app.callback(Output("pinned", "data"), Input("pin-layer", "n_clicks"), Input("unpin-layers", "n_clicks"),
                  State("focus-layer", "data"), State("pinned", "data"), prevent_initial_call=True)
    def pin(_pin: int, _unpin: int, layer: str | None, pinned: list[str] | None) -> list[str]:
        if ctx.triggered_id == "unpin-layers":
            return []
        if not layer:
            raise PreventUpdate
        return [p for p in (pinned or []) if p != layer][-(MAX_PANELS - 2):] + [layer]

    @app.callback(Output("fmap-treemap", "figure"), Output("fmap-title", "children"),
                  Input("focus-layer", "data"), Input("fmap-k", "value"), Input("fmap-color", "value"),
                  Input("pinned", "data"), State("analysis-key", "data"))
    def treemap(layer: str | None, k: int, color: str, pinned: list[str] | None, key: str | None) -> tuple[Any, Any]:
        a = load_analysis(res, key)
        if a is None or not layer or layer not in a.stats.layers:
            return nv.empty_figure("Analyze two or more groups, then pick a layer"), "Feature-map level"
        layers = [p for p in (pinned or []) if p != layer and p in a.stats.layers][-(MAX_PANELS - 1):] + [layer]
        panels = [(lay, fv.treemap_rects(a, lay, int(k or 4), color or "importance")) for lay in layers]
        names = " / ".join(a.datapaths)
        title = f"Feature-map level · {layer}"
        if len(panels) == 1:
            return fv.figure(panels[0][1], color or "importance", f"{layer}: datapaths of {names}"), title
        return fv.panels_figure(panels, color or "importance", f"datapaths of {names}, side by side"), title

    @app.callback(Output("focus-map", "data"), Input("fmap-treemap", "clickData"), State("focus-layer", "data"),
                  prevent_initial_call=True)
    def pick_map(click: dict[str, Any] | None, layer: str | None) -> Any:
        if not click or not layer:
            raise PreventUpdate
        point = click["points"][0]
        data = point.get("customdata")
        if not data:
            raise PreventUpdate
        where = data[3] if len(data) > 3 and data[3] else layer
        return {"layer": where, "map": int(data[0]), "cluster": f"{data[2]} ({data[1]} maps)"}

    @app.callback(Output("neuron-heatmaps", "figure"), Output("neuron-title", "children"),
                  Input("focus-map", "data"), Input("overlay", "value"), State("analysis-key", "data"),
                  State("pool-key", "data"))
    def neuron(focus: dict[str, Any] | None, overlay: list[str] | None, key: str | None,
               pool_key: str | None) -> tuple[Any, Any]:
        a = load_analysis(res, key)
        if a is None or not focus:
            return nv.empty_figure("Click a cluster in the treemap to see its feature map"), "Neuron level"
        layer, ch = focus["layer"], int(focus["map"])
        maps = heat_maps(res, a, layer, ch, pool_key)
        titles = {g: [i.replace("~adv", "*") for i in ids[:6]] for g, ids in a.groups.items()}
        label = f"{layer} #{ch}"
        images = None
        pool = res.pool(pool_key)
        if overlay and pool is not None:
            idx = pool.index()
            images = {g: pool.pixels[[idx[i] for i in ids[:6]]] for g, ids in a.groups.items()}
        fig = nv.heatmap_figure(maps, titles, f"{label}: activation (red < 0 < green)", images=images)
        return fig, f"Neuron level · {label}"

    @app.callback(Output("top-patches", "figure"), Output("top-patches", "style"),
                  Input("focus-map", "data"), State("analysis-key", "data"), State("pool-key", "data"))
    def patches(focus: dict[str, Any] | None, key: str | None, pool_key: str | None) -> tuple[Any, Any]:
        a = load_analysis(res, key)
        if a is None or not focus:
            return no_update, {"display": "none"}
        crops, titles = top_patch_crops(res, a, focus["layer"], int(focus["map"]), pool_key)
        label = f"{focus['layer']} #{int(focus['map'])}: top-activating patches"
        return nv.image_figure(crops, titles, label), {}

    @app.callback(
        Output("discrepancy-maps", "figure"), Output("discrepancy-error", "children"),
        Input("discrepancy", "n_clicks"), State("focus-map", "data"), State("analysis-key", "data"),
        State("pool-key", "data"), State("disc-stride", "value"),
        **job_options("discrepancy", 2, 1),
        prevent_initial_call=True,
    )
    def discrepancy(set_progress: Any, _n: int, focus: dict[str, Any] | None, key: str | None,
                    pool_key: str | None, stride: int | None) -> tuple[Any, Any]:
        a = load_analysis(res, key)
        if a is None or not focus:
            return no_update, "Pick a feature map first (click a cluster in the treemap)."
        try:
            step = int(stride) if stride and 1 <= int(stride) <= 16 else 4
            return discrepancy_figure(res, a, focus["layer"], int(focus["map"]), pool_key, set_progress, step), ""
        except Exception as exc:  # noqa: BLE001 - one line in the UI
            return no_update, jobs.user_message(exc)

    @app.callback(
        Output("faithfulness-curves", "figure"), Output("faithfulness-curves", "style"),
        Output("faithfulness-error", "children"),
        Input("faithfulness", "n_clicks"), State("focus-layer", "data"), State("analysis-key", "data"),
        State("pool-key", "data"),
        **job_options("faithfulness", 3, 2),
        prevent_initial_call=True,
    )
    def faithfulness(set_progress: Any, _n: int, layer: str | None, key: str | None,
                     pool_key: str | None) -> tuple[Any, Any, Any]:
        a = load_analysis(res, key)
        pool = res.pool(pool_key)
        if a is None or pool is None or not layer:
            return no_update, no_update, "Analyze groups and pick a layer first."
        try:
            set_progress(("0", "1", "masking maps layer by layer…"))
            table = faithfulness_table(res, a, layer, pool_key)
        except Exception as exc:  # noqa: BLE001 - one line in the UI
            return no_update, no_update, jobs.user_message(exc)
        group = next(iter(a.groups))
        return fv.faithfulness_figure(table, f"{layer}: top-1 preserved when keeping k maps ({group})"), {}, ""

    @app.callback(Output("url", "search"), Input("groups", "data"), Input("focus-layer", "data"),
                  Input("focus-map", "data"), Input("stat", "value"), prevent_initial_call=True)
    def write_url(groups: Any, layer: Any, fmap: Any, stat: Any) -> str:
        state = {"groups": groups or {}, "layer": layer, "map": (fmap or {}).get("map"), "stat": stat}
        return "?view=" + urllib.parse.quote(json.dumps(state, separators=(",", ":")))

    @app.callback(Output("groups", "data", allow_duplicate=True), Output("stat", "value"),
                  Output("url-focus", "data"), Output("analyze", "n_clicks", allow_duplicate=True),
                  Input("pool-key", "data"), State("url", "href"), State("groups", "data"),
                  State("analyze", "n_clicks"), prevent_initial_call=True)
    def read_url(pool_key: str | None, href: str | None, groups: Any, n: int | None) -> tuple[Any, Any, Any, Any]:
        """Once the images are ready, restore a shared view: groups, statistic, layer, map; re-Analyze."""
        state = parse_view(href)
        if not pool_key or groups or not state or not state.get("groups"):
            raise PreventUpdate
        focus = {"layer": state.get("layer"), "map": state.get("map")}
        return state["groups"], state.get("stat") or no_update, focus, (n or 0) + 1


def parse_view(href: str | None) -> dict[str, Any] | None:
    """The ``view`` JSON of a dashboard URL (None when absent or malformed)."""
    if not href or "view=" not in href:
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlparse(href).query)
    try:
        state = json.loads(query["view"][0])
    except (KeyError, ValueError, IndexError):
        return None
    return state if isinstance(state, dict) else None


def top_patch_crops(res: Resources, a: Analysis, layer: str, channel: int, pool_key: str | None,
                    k: int = 6) -> tuple[list[np.ndarray], list[str]]:
    """Crops around the strongest activations of the map over all analysed images (cached)."""
    from aevis_core.neuron import top_patches

    def compute() -> tuple[list[np.ndarray], list[str]]:
        ids = [i for g in a.groups.values() for i in g]
        x = pool_or_stop(res, pool_key).tensor(ids)
        with FX_LOCK:
            tops = top_patches(res.entry, res.graph, layer, channel, x, k=min(k, len(ids)))
        return [t.crop for t in tops], [ids[t.image_index].replace("~adv", " (adv)") for t in tops]

    return res.cache.get_or_compute(content_key("patches/v1", a.key, layer, channel, k), compute)[0]


def faithfulness_table(res: Resources, a: Analysis, layer: str, pool_key: str | None) -> dict[str, Any]:
    """Equal-k faithfulness of the methods at ``layer`` on the first group's images (cached)."""
    from aevis_core.evaluate import faithfulness_curve

    def compute() -> dict[str, Any]:
        x = pool_or_stop(res, pool_key).tensor(next(iter(a.groups.values())))
        with FX_LOCK:
            return faithfulness_curve(res.entry, res.graph, x, layer, score="prob", normalize="l1")

    return res.cache.get_or_compute(content_key("faith/v1", a.key, layer), compute)[0]


def _parent_group(root: GroupNode, layer: str, cut: list[str]) -> str | None:
    """Innermost group containing ``layer`` whose children are all visible (collapsible)."""
    path: list[GroupNode] = []

    def find(node: GroupNode, trail: list[GroupNode]) -> bool:
        if node.id == layer:
            path.extend(trail)
            return True
        return any(find(c, trail + [node]) for c in node.children)

    find(root, [])
    for g in reversed(path):
        if g.id:
            return g.id
    return None


def discrepancy_figure(res: Resources, a: Analysis, layer: str, channel: int, pool_key: str | None,
                       set_progress: Any, stride: int = 4) -> Any:
    """Discrepancy maps (occlusion, 8x8 patches) of the 3 most activating images of the groups."""
    pool = res.pool(pool_key)
    if pool is None:
        raise PreventUpdate
    ids = [i for g in a.groups.values() for i in g]
    x = pool.tensor(ids)
    top = top_activating(res.entry, res.graph, layer, channel, x, k=min(3, len(ids)))
    images, titles = [], []
    for j, idx in enumerate(top.tolist()):
        def prog(done: int, total: int, _j: int = j) -> None:
            set_progress((str(_j * total + done), str(3 * total), f"image {_j + 1}/3: {done}/{total} occlusions"))

        dmap = discrepancy_map(res.entry, res.graph, layer, channel, x[idx], patch=8, stride=stride, progress=prog)
        images.append(dim_unimportant(x[idx], dmap, keep_fraction=0.25))
        titles.append(ids[idx].replace("~adv", " (adv)"))
    label = f"{layer} #{channel}: learned feature (pixels that support it; 8×8 occluder, stride {stride})"
    return nv.image_figure(images, titles, label)
