"""Feature-map room callbacks (thin: validate -> service -> figure); every output follows the context."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from app.guard import bound
from app.ids import Fmap, Layer, Shell
from app.levels.fmap import figures as fig
from app.levels.neuron.figures import empty_figure
from app.payloads import AnalysisContext, LayerFocus, ViewResult, ViewState
from app.services import Services

MAX_PANELS = 4
K_RANGE = (1, 12)
COLORS = ("importance", "activation", "difference")
HIDDEN = {"display": "none"}


def pinned_layers(pinned: Any, analysis_key: str | None) -> list[str]:
    """Pinned layers of this analysis (pins of another analysis are dropped)."""
    if not isinstance(pinned, dict) or pinned.get("analysis_key") != analysis_key:
        return []
    layers = pinned.get("layers")
    return [p for p in layers if isinstance(p, str)][:MAX_PANELS] if isinstance(layers, list) else []


def pin(services: Services, _pin: Any, _unpin: Any, ctx_value: Any, url_view: Any, focus: Any,
        pinned: Any) -> Any:
    """Pin the selected layer (at most 3 pins + the selected layer) or unpin all; a new analysis starts
    with the pins of the shared URL that describes it, else none."""
    cx = AnalysisContext.from_json(ctx_value)
    if ctx.triggered_id == Fmap.UNPIN or cx.analysis_key is None:
        return None
    current = pinned_layers(pinned, cx.analysis_key)
    if ctx.triggered_id == Shell.CONTEXT:
        if isinstance(pinned, dict) and pinned.get("analysis_key") == cx.analysis_key:
            raise PreventUpdate
        view = ViewState.applied(url_view)
        if view is not None and view.pinned and view.groups == cx.groups:
            return {"analysis_key": cx.analysis_key, "layers": view.pinned}
        return None
    f = LayerFocus.from_json(focus)
    if f is None or f.analysis_key != cx.analysis_key:
        raise PreventUpdate
    current = [p for p in current if p != f.layer]
    return {"analysis_key": cx.analysis_key, "layers": current[-(MAX_PANELS - 2):] + [f.layer]}


def treemap(services: Services, focus: Any, k: Any, color: Any, pinned: Any, ctx_value: Any) -> tuple[Any, Any]:
    """Treemaps of the selected layer and the pinned ones (same analysis), side by side."""
    cx = AnalysisContext.from_json(ctx_value)
    f = LayerFocus.from_json(focus)
    if cx.analysis_key is None or f is None or f.analysis_key != cx.analysis_key:
        return empty_figure("Analyze two or more groups, then pick a layer"), "Feature-map level"
    a = services.analyses.require(cx.analysis_key)
    layer = services.analyses.check_layer(a, f.layer)
    kk = k if isinstance(k, int) and not isinstance(k, bool) and K_RANGE[0] <= k <= K_RANGE[1] else 4
    mode = color if color in COLORS else "importance"
    pins = pinned_layers(pinned, cx.analysis_key)
    layers = [p for p in pins if p != layer and p in a.stats.layers][-(MAX_PANELS - 1):] + [layer]
    title = f"Feature-map level · {layer} · {cx.title}"
    reason = fig.empty_reason(a, layer)
    if reason is not None and len(layers) == 1:
        return empty_figure(reason), title
    panels = [(lay, fig.treemap_rects(a, lay, kk, mode)) for lay in layers]
    names = " / ".join(a.datapaths)
    legend = fig.color_label(mode, a)
    if len(panels) == 1:
        return fig.figure(layer, panels[0][1], mode, f"{layer}: datapaths of {names} · colour: {legend}", legend), title
    return fig.panels_figure(panels, mode, f"datapaths of {names}, side by side · colour: {legend}", legend), title


def curves(services: Services, result: Any, ctx_value: Any, focus: Any) -> tuple[Any, Any]:
    """The faithfulness curves of the selected layer, when computed for this analysis."""
    cx = AnalysisContext.from_json(ctx_value)
    r = ViewResult.from_json(result)
    f = LayerFocus.from_json(focus)
    if r is None or f is None or r.analysis_key != cx.analysis_key or r.layer != f.layer:
        return no_update, HIDDEN
    table = services.analyses.stored(r.result_key)
    if not isinstance(table, dict):
        return no_update, HIDDEN
    group = next(iter(cx.groups), "")
    shown = table.get("datapath", {}).get("label", "") if isinstance(table.get("datapath"), dict) else ""
    title = f"{r.layer}: top-1 preserved when keeping k maps ({group}; datapath on screen: {shown or 'default'})"
    return fig.faithfulness_figure(table, title), {}


def restore_view(services: Services, url_view: Any) -> tuple[Any, Any]:
    """Colour mode and k of a shared URL."""
    view = ViewState.applied(url_view)
    if view is None:
        raise PreventUpdate
    color = view.color if view.color in COLORS else no_update
    k = view.k if view.k is not None and K_RANGE[0] <= view.k <= K_RANGE[1] else no_update
    return color, k


def register(app: Dash, services: Services) -> None:
    """Attach the feature-map room's callbacks."""
    app.callback(Output(Fmap.PINNED, "data"),
                 Input(Fmap.PIN, "n_clicks"), Input(Fmap.UNPIN, "n_clicks"), Input(Shell.CONTEXT, "data"),
                 State(Shell.URL_VIEW, "data"), State(Layer.FOCUS, "data"), State(Fmap.PINNED, "data"),
                 prevent_initial_call=True)(bound(services, pin, lambda m: no_update))
    app.callback(Output(Fmap.TREEMAP, "figure"), Output(Fmap.TITLE, "children"),
                 Input(Layer.FOCUS, "data"), Input(Fmap.K, "value"), Input(Fmap.COLOR, "value"),
                 Input(Fmap.PINNED, "data"), Input(Shell.CONTEXT, "data"))(
        bound(services, treemap, lambda m: (empty_figure(m), "Feature-map level")))
    app.callback(Output(Fmap.CURVES, "figure"), Output(Fmap.CURVES, "style"),
                 Input(Fmap.FAITH_RESULT, "data"), Input(Shell.CONTEXT, "data"), Input(Layer.FOCUS, "data"))(
        bound(services, curves, lambda m: (no_update, HIDDEN)))
    app.callback(Output(Fmap.COLOR, "value"), Output(Fmap.K, "value"), Input(Shell.URL_VIEW, "data"),
                 prevent_initial_call=True)(bound(services, restore_view, lambda m: (no_update, no_update)))
