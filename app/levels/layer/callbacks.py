"""Layer room callbacks (thin: validate -> service -> figure); every output follows the analysis context."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from aevis_core.analysis import Analysis
from aevis_core.graph.hierarchy import GroupNode
from aevis_core.layout.segment import calendar_layout
from aevis_core.layout.treecut import collapse, cut_mapping, expand, tree_cut
from app.guard import bound
from app.ids import Layer, Shell
from app.levels.layer import figures as fig
from app.payloads import AnalysisContext, LayerCut, LayerFocus, ViewState
from app.services import Services

ROW_WIDTH = 1100.0
CUT_BUDGET = 50
STATS = ("similarity", "activation", "jaccard")
LAM_RANGE = (0.0, 4.0)


def parent_group(root: GroupNode, layer: str) -> str | None:
    """Innermost named group containing ``layer`` (the one to collapse)."""
    path: list[GroupNode] = []

    def find(node: GroupNode, trail: list[GroupNode]) -> bool:
        if node.id == layer:
            path.extend(trail)
            return True
        return any(find(c, trail + [node]) for c in node.children)

    find(root, [])
    return next((g.id for g in reversed(path) if g.id), None)


def start_layer(services: Services, a: Analysis, url_view: Any, cx: AnalysisContext) -> str:
    """The layer a new analysis opens at: the shared URL's (for the analysis it describes), else the
    diverging point, else the layer whose datapaths differ most."""
    view = ViewState.applied(url_view)
    if view is not None and view.layer in a.stats.layers and view.groups == cx.groups:
        return str(view.layer)
    return services.analyses.initial_layer(a)


def cut_and_focus(services: Services, ctx_value: Any, tapped: Any, _collapse: Any, cut: Any, focus: Any,
                  url_view: Any) -> tuple[Any, Any]:
    """Visible nodes and the selected layer: reset for each analysis, then expand/collapse/select."""
    cx = AnalysisContext.from_json(ctx_value)
    if cx.analysis_key is None:
        return None, None
    a = services.analyses.require(cx.analysis_key)
    root = services.model.hierarchy
    current = LayerCut.from_json(cut)
    trig = ctx.triggered_id
    if current is None or current.analysis_key != a.key:
        layer = start_layer(services, a, url_view, cx)
        return LayerCut(a.key, tree_cut(root, services.analyses.doi(a), budget=CUT_BUDGET)).to_json(), \
            LayerFocus(a.key, layer).to_json()
    if trig == Layer.GRAPH and isinstance(tapped, dict):
        node = tapped.get("id")
        if tapped.get("is_group") and isinstance(node, str):
            return LayerCut(a.key, expand(current.nodes, node, root)).to_json(), no_update
        return no_update, LayerFocus(a.key, services.analyses.check_layer(a, node)).to_json()
    if trig == Layer.COLLAPSE:
        f = LayerFocus.from_json(focus)
        group = parent_group(root, f.layer) if f is not None else None
        if group:
            return LayerCut(a.key, collapse(current.nodes, group, root)).to_json(), no_update
    raise PreventUpdate


def layer_graph(services: Services, cut: Any, stat: Any, lam: Any, focus: Any, ctx_value: Any) -> tuple[Any, Any, Any]:
    """Cytoscape elements of the cut, laid out in rows (Eq. 6 with the row penalty λ)."""
    cx = AnalysisContext.from_json(ctx_value)
    c = LayerCut.from_json(cut)
    if cx.analysis_key is None or c is None or c.analysis_key != cx.analysis_key:
        return [], fig.STYLESHEET, "Layer level"
    a = services.analyses.require(cx.analysis_key)
    root = services.model.hierarchy
    mapping = cut_mapping(c.nodes, root)
    lam_v = float(lam) if isinstance(lam, int | float) and not isinstance(lam, bool) else 1.0
    lam_v = min(max(lam_v, LAM_RANGE[0]), LAM_RANGE[1])
    lay = calendar_layout(services.model.graph, ROW_WIDTH, lam_v, visible=mapping,
                          node_w=fig.NODE_W, node_h=fig.NODE_H, h_gap=26, v_gap=16, row_gap=44)
    f = LayerFocus.from_json(focus)
    layer = f.layer if f is not None and f.analysis_key == a.key else None
    els = fig.elements(services.model.graph, root, a, lay, mapping, stat if stat in STATS else "similarity", layer)
    return els, fig.STYLESHEET, f"Layer level · {cx.title}"


def overview(services: Services, els: Any) -> tuple[Any, Any]:
    """The main graph's nodes without dot plots."""
    return fig.overview_elements(els if isinstance(els, list) else []), fig.OVERVIEW_STYLE


def jump(services: Services, node: Any) -> tuple[Any, Any]:
    """Zoom the main graph to the node clicked in the overview."""
    pos = node.get("position") if isinstance(node, dict) else None
    if not isinstance(pos, dict) or not all(isinstance(pos.get(k), int | float) for k in ("x", "y")):
        raise PreventUpdate
    return fig.zoom_to({"x": float(pos["x"]), "y": float(pos["y"])})


def refit(services: Services, _n: Any, _els: Any) -> dict[str, Any]:
    """Fit the whole graph in the view."""
    return {"name": "preset", "fit": True, "padding": 12}


def restore_stat(services: Services, url_view: Any) -> Any:
    """The statistic of a shared URL."""
    view = ViewState.applied(url_view)
    if view is None or view.stat not in STATS:
        raise PreventUpdate
    return view.stat


def register(app: Dash, services: Services) -> None:
    """Attach the layer room's callbacks."""
    app.callback(Output(Layer.CUT, "data"), Output(Layer.FOCUS, "data"),
                 Input(Shell.CONTEXT, "data"), Input(Layer.GRAPH, "tapNodeData"), Input(Layer.COLLAPSE, "n_clicks"),
                 State(Layer.CUT, "data"), State(Layer.FOCUS, "data"), State(Shell.URL_VIEW, "data"),
                 prevent_initial_call=True)(bound(services, cut_and_focus, lambda m: (no_update, no_update)))
    app.callback(Output(Layer.GRAPH, "elements"), Output(Layer.GRAPH, "stylesheet"), Output(Layer.TITLE, "children"),
                 Input(Layer.CUT, "data"), Input(Layer.STAT, "value"), Input(Layer.LAM, "value"),
                 Input(Layer.FOCUS, "data"), State(Shell.CONTEXT, "data"))(
        bound(services, layer_graph, lambda m: ([], fig.STYLESHEET, f"Layer level · {m}")))
    app.callback(Output(Layer.OVERVIEW, "elements"), Output(Layer.OVERVIEW, "stylesheet"),
                 Input(Layer.GRAPH, "elements"))(bound(services, overview, lambda m: ([], fig.OVERVIEW_STYLE)))
    app.callback(Output(Layer.GRAPH, "zoom"), Output(Layer.GRAPH, "pan"),
                 Input(Layer.OVERVIEW, "tapNode"), prevent_initial_call=True)(
        bound(services, jump, lambda m: (no_update, no_update)))
    app.callback(Output(Layer.GRAPH, "layout"), Input(Layer.FIT, "n_clicks"), Input(Layer.GRAPH, "elements"))(
        bound(services, refit, lambda m: no_update))
    app.callback(Output(Layer.STAT, "value"), Input(Shell.URL_VIEW, "data"), prevent_initial_call=True)(
        bound(services, restore_stat, lambda m: no_update))
