"""Shell callbacks: the one analysis context, the shared URL (read once, written on every change), export.

The context (image set, pool key, groups, analysis key) is reduced from the stores the jobs and the
groups room write; its ``analysis_key`` is set only while the finished analysis was computed for
exactly this pool and these groups, so every panel keyed to it clears as soon as either changes.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from dash import Dash, Input, Output, State, no_update
from dash.exceptions import PreventUpdate

from app.config import DEMO_SET
from app.guard import bound
from app.ids import Fmap, Groups, Images, Layer, Neuron, Shell
from app.payloads import (
    AnalysisContext,
    AnalysisResult,
    LayerFocus,
    MapFocus,
    PayloadError,
    PoolResult,
    ViewState,
    check_groups,
    set_id_or_demo,
)
from app.services import Services


def context(services: Services, pool_result: Any, analysis_result: Any, groups: Any, set_id: Any,
            old: Any) -> Any:
    """The analysis context of the page (unchanged -> no update)."""
    sid = set_id_or_demo(set_id)
    pool = PoolResult.from_json(pool_result)
    pool_key = pool.pool_key if pool is not None and pool.set_id == sid else None
    current = check_groups(groups)
    result = AnalysisResult.from_json(analysis_result)
    key = None
    if result is not None and pool_key is not None and result.pool_key == pool_key and result.groups == current:
        key = result.analysis_key
    title = " vs ".join(current) if key else ""
    new = AnalysisContext(sid, pool_key, current, key, title).to_json()
    if new == old:
        raise PreventUpdate
    return new


def context_info(services: Services, ctx_value: Any) -> Any:
    """One line naming the analysis every panel below shows."""
    cx = AnalysisContext.from_json(ctx_value)
    if cx.analysis_key is None:
        return ""
    return f"Showing the analysis of {cx.title}" + ("" if cx.set_id == DEMO_SET else " (uploaded images)")


def parse_view(href: Any) -> ViewState | None:
    """The ``view`` of a dashboard URL (None when absent; PayloadError when malformed)."""
    if not isinstance(href, str) or "view=" not in href:
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlparse(href).query)
    try:
        state = json.loads(query["view"][0])
    except (KeyError, ValueError, IndexError):
        raise PayloadError("the view in the URL is not valid JSON") from None
    return ViewState.from_json(state)


def read_url(services: Services, pool_result: Any, href: Any, applied: Any, set_id: Any) -> tuple[Any, Any]:
    """Once per page load: the shared view, once its image set's pool is ready (switching set first;
    ``{"pending": set}`` meanwhile; ``{"abandoned": true}`` when the user picked another set)."""
    pending = applied.get("pending") if isinstance(applied, dict) else None
    if applied is not None and pending is None:
        raise PreventUpdate
    view = parse_view(href)
    if view is None:
        raise PreventUpdate
    current = set_id_or_demo(set_id)
    if view.set_id != current:
        if pending is None:
            return {"pending": view.set_id}, view.set_id
        return {"abandoned": True}, no_update
    pool = PoolResult.from_json(pool_result)
    if pool is None or pool.set_id != view.set_id:
        raise PreventUpdate
    return view.to_json(), no_update


def url_applied(href: Any, applied: Any) -> bool:
    """Whether the URL holds no view, or its view has been read (so the URL may be rewritten)."""
    if not isinstance(href, str) or "view=" not in href:
        return True
    return isinstance(applied, dict) and "pending" not in applied


def write_url(services: Services, ctx_value: Any, layer: Any, fmap: Any, stat: Any, color: Any, k: Any,
              pinned: Any, method: Any, href: Any, applied: Any) -> str:
    """The whole view state as ``?view=...`` (groups, set, statistic, layer, map, colour, k, pins);
    not before a shared view in the URL has been read."""
    if not url_applied(href, applied):
        raise PreventUpdate
    cx = AnalysisContext.from_json(ctx_value)
    lf = LayerFocus.from_json(layer)
    mf = MapFocus.from_json(fmap)
    pins = pinned.get("layers", []) if isinstance(pinned, dict) else []
    view = ViewState(cx.set_id, cx.groups, stat if isinstance(stat, str) else None,
                     lf.layer if lf else None, mf.channel if mf and lf and mf.layer == lf.layer else None,
                     color if isinstance(color, str) else None, k if isinstance(k, int) else None,
                     [p for p in pins if isinstance(p, str)], method if isinstance(method, str) else None)
    return "?view=" + urllib.parse.quote(json.dumps(view.to_json(), separators=(",", ":")))


def export(services: Services, _n: Any, ctx_value: Any) -> Any:
    """The analysis on screen as JSON."""
    cx = AnalysisContext.from_json(ctx_value)
    if cx.analysis_key is None:
        raise PreventUpdate
    doc = services.analyses.export_doc(services.analyses.require(cx.analysis_key))
    return {"content": json.dumps(doc), "filename": "aevis-datapath.json", "type": "application/json"}


def register(app: Dash, services: Services) -> None:
    """Attach the shell's callbacks."""
    app.callback(Output(Shell.CONTEXT, "data"),
                 Input(Shell.POOL_RESULT, "data"), Input(Shell.ANALYSIS_RESULT, "data"), Input(Groups.GROUPS, "data"),
                 Input(Images.IMAGE_SET, "value"), State(Shell.CONTEXT, "data"))(
        bound(services, context, lambda m: no_update))
    app.callback(Output(Shell.CONTEXT_INFO, "children"), Input(Shell.CONTEXT, "data"))(
        bound(services, context_info, lambda m: m))
    app.callback(Output(Shell.URL_VIEW, "data"), Output(Images.IMAGE_SET, "value", allow_duplicate=True),
                 Input(Shell.POOL_RESULT, "data"), State(Shell.URL, "href"), State(Shell.URL_VIEW, "data"),
                 State(Images.IMAGE_SET, "value"), prevent_initial_call=True)(
        bound(services, read_url, lambda m: ({"error": m}, no_update)))
    app.callback(Output(Shell.URL, "search"),
                 Input(Shell.CONTEXT, "data"), Input(Layer.FOCUS, "data"), Input(Neuron.FOCUS, "data"),
                 Input(Layer.STAT, "value"), Input(Fmap.COLOR, "value"), Input(Fmap.K, "value"),
                 Input(Fmap.PINNED, "data"), Input(Groups.METHOD, "value"), State(Shell.URL, "href"),
                 State(Shell.URL_VIEW, "data"),
                 prevent_initial_call=True)(
        bound(services, write_url, lambda m: no_update))
    app.callback(Output(Shell.DOWNLOAD, "data"), Input(Shell.EXPORT_JSON, "n_clicks"), State(Shell.CONTEXT, "data"),
                 prevent_initial_call=True)(bound(services, export, lambda m: no_update))
