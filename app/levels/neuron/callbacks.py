"""Neuron room callbacks (thin: validate -> service -> figure); every output follows the context."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from app.guard import bound
from app.ids import Fmap, Neuron, Shell
from app.levels.neuron import figures as fig
from app.payloads import AnalysisContext, ClusterClick, MapFocus, ViewResult, ViewState
from app.services import Services
from app.services.analyses import PER_GROUP, item_label

HIDDEN = {"display": "none"}
PICK = "Click a cluster in the treemap to see its feature map"


def focus_of(services: Services, focus: Any, ctx_value: Any) -> tuple[AnalysisContext, MapFocus | None]:
    """The context and the selected map when it belongs to the context's analysis (else None)."""
    cx = AnalysisContext.from_json(ctx_value)
    f = MapFocus.from_json(focus)
    return cx, f if f is not None and cx.analysis_key is not None and f.analysis_key == cx.analysis_key else None


def pick_map(services: Services, click: Any, ctx_value: Any, url_view: Any, focus: Any) -> Any:
    """The selected feature map: a clicked cluster (checked against the analysis), or for a new
    analysis the map of the shared URL that describes it, else none."""
    cx = AnalysisContext.from_json(ctx_value)
    if cx.analysis_key is None:
        return None
    a = services.analyses.require(cx.analysis_key)
    if ctx.triggered_id == Shell.CONTEXT:
        current = MapFocus.from_json(focus)
        if current is not None and current.analysis_key == a.key:
            raise PreventUpdate
        view = ViewState.applied(url_view)
        if view is None or view.channel is None or view.groups != cx.groups or view.layer not in a.stats.layers:
            return None
        layer, channel = services.analyses.check_map(a, view.layer, view.channel)
        return MapFocus(a.key, layer, channel).to_json()
    hit = ClusterClick.from_event(click)
    if hit is None:
        raise PreventUpdate
    layer, channel = services.analyses.check_map(a, hit.layer, hit.channel)
    return MapFocus(a.key, layer, channel, f"{hit.region} ({hit.size} maps)").to_json()


def heatmaps(services: Services, focus: Any, overlay: Any, ctx_value: Any) -> tuple[Any, Any]:
    """Activation heat maps of the selected map for the images of each group (optionally over the images)."""
    cx, f = focus_of(services, focus, ctx_value)
    if f is None:
        return fig.empty_figure(PICK), "Neuron level"
    a = services.analyses.require(cx.analysis_key)
    maps = services.analyses.heat_maps(a, cx.pool_key, f.layer, f.channel)
    pool = services.pools.require(cx.pool_key)
    titles = {g: [item_label(pool, i) for i in ids[:PER_GROUP]] for g, ids in a.groups.items()}
    images = None
    if isinstance(overlay, list) and "on" in overlay:
        idx = pool.index()
        images = {g: pool.pixels[[idx[i] for i in ids[:PER_GROUP]]] for g, ids in a.groups.items()}
    label = f"{f.layer} #{f.channel}"
    figure = fig.heatmap_figure(maps, titles, f"{label}: activation (red < 0 < green)", images=images)
    return figure, f"Neuron level · {label} · {cx.title}"


def patches(services: Services, focus: Any, ctx_value: Any) -> tuple[Any, Any]:
    """Top-activating patches of the selected map over all analysed images."""
    cx, f = focus_of(services, focus, ctx_value)
    if f is None:
        return no_update, HIDDEN
    a = services.analyses.require(cx.analysis_key)
    crops, titles = services.analyses.top_patches(a, cx.pool_key, f.layer, f.channel)
    return fig.image_figure(crops, titles, f"{f.layer} #{f.channel}: top-activating patches"), {}


def discrepancy_maps(services: Services, result: Any, focus: Any, ctx_value: Any) -> tuple[Any, Any]:
    """The learned feature of the selected map, once computed for it (hidden otherwise)."""
    cx, f = focus_of(services, focus, ctx_value)
    r = ViewResult.from_json(result)
    if f is None or r is None or r.analysis_key != cx.analysis_key or (r.layer, r.channel) != (f.layer, f.channel):
        return no_update, HIDDEN
    stored = services.analyses.stored(r.result_key)
    if not isinstance(stored, tuple) or len(stored) != 2:
        return no_update, HIDDEN
    images, titles = stored
    label = f"{f.layer} #{f.channel}: learned feature (pixels that support it; 8×8 occluder)"
    return fig.image_figure(images, titles, label), {}


def register(app: Dash, services: Services) -> None:
    """Attach the neuron room's callbacks."""
    app.callback(Output(Neuron.FOCUS, "data"),
                 Input(Fmap.TREEMAP, "clickData"), Input(Shell.CONTEXT, "data"),
                 State(Shell.URL_VIEW, "data"), State(Neuron.FOCUS, "data"), prevent_initial_call=True)(
        bound(services, pick_map, lambda m: no_update))
    app.callback(Output(Neuron.HEATMAPS, "figure"), Output(Neuron.TITLE, "children"),
                 Input(Neuron.FOCUS, "data"), Input(Neuron.OVERLAY, "value"), Input(Shell.CONTEXT, "data"))(
        bound(services, heatmaps, lambda m: (fig.empty_figure(m), "Neuron level")))
    app.callback(Output(Neuron.PATCHES, "figure"), Output(Neuron.PATCHES, "style"),
                 Input(Neuron.FOCUS, "data"), Input(Shell.CONTEXT, "data"))(
        bound(services, patches, lambda m: (fig.empty_figure(m), {})))
    app.callback(Output(Neuron.MAPS, "figure"), Output(Neuron.MAPS, "style"),
                 Input(Neuron.DISC_RESULT, "data"), Input(Neuron.FOCUS, "data"), Input(Shell.CONTEXT, "data"))(
        bound(services, discrepancy_maps, lambda m: (fig.empty_figure(m), {})))
