"""Groups room callbacks (thin: validate -> service -> figure). The ``groups`` store has one writer."""

from __future__ import annotations

from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from aevis_core.pool import Pool
from app.guard import bound, fired
from app.ids import Groups, Images, Pattern, Shell
from app.levels.groups import figures as fig
from app.levels.groups.presets import compare_with_predicted, presets
from app.levels.images.callbacks import current_pool
from app.payloads import MAX_GROUPS, MAX_NAME, AnalysisContext, ViewState, check_groups
from app.services import Services
from app.services.analyses import METHOD_LABELS


def add_group(groups: dict[str, list[str]], name: Any, ids: list[str]) -> tuple[dict[str, list[str]], str]:
    """Groups with a new named group (name defaults to G1..G4); at most four groups. (groups, hint)."""
    if not ids:
        return groups, "select images first (click thumbnails)"
    out = dict(groups)
    name = (name if isinstance(name, str) else "").strip()[:MAX_NAME] or f"G{len(out) + 1}"
    if name not in out and len(out) >= MAX_GROUPS:
        return out, f"at most {MAX_GROUPS} groups: remove one first"
    out[name] = list(ids)
    return out, ""


def keep_known(pool: Pool | None, groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Groups restricted to images of ``pool`` (empty groups dropped): a new image set keeps nothing stale."""
    if pool is None:
        return {}
    known = pool.index()
    kept = {name: [i for i in ids if i in known] for name, ids in groups.items()}
    return {name: ids for name, ids in kept.items() if ids}


def edit_groups(services: Services, _add: Any, preset: Any, _cmp: Any, _clear: Any, _rm: Any, url_view: Any,
                pool_result: Any, name: Any, selection: Any, groups: Any, set_id: Any) -> tuple[Any, Any]:
    """Every change of the groups: add, preset, compare with predicted class, clear, remove, URL, new pool."""
    trig = ctx.triggered_id
    current = check_groups(groups)
    pool = current_pool(services, pool_result, set_id)
    if fired(Shell.URL_VIEW):  # before the pool: both fire together when a shared URL's images are ready
        view = ViewState.applied(url_view)
        if view is not None and view.groups and pool is not None:
            return keep_known(pool, view.groups), ""
    if trig == Groups.CLEAR:
        return {}, ""
    if fired(Shell.POOL_RESULT):
        kept = keep_known(pool, current)
        if kept == current:
            raise PreventUpdate
        return kept, "groups changed with the images: only images of this set are kept"
    if pool is None:
        return no_update, "the images are still being prepared"
    if trig == Groups.ADD:
        sel = [s for s in selection if isinstance(s, str) and s in pool.index()] if isinstance(selection, list) else []
        return add_group(current, name, sel)
    if trig == Groups.PRESET:
        if not preset:
            raise PreventUpdate
        chosen = presets(pool).get(str(preset))
        return (chosen, "") if chosen else (no_update, "unknown preset")
    if trig == Groups.COMPARE_PREDICTED:
        sel = [s for s in selection if isinstance(s, str)] if isinstance(selection, list) else []
        if len(sel) != 1:
            return no_update, "select exactly one adversarial image"
        cmp = compare_with_predicted(pool, sel[0])
        if cmp is None:
            pred = pool.items[pool.index()[sel[0]]].pred if sel[0] in pool.index() else None
            cls = pool.class_names[pred] if pred is not None else "its predicted class"
            return no_update, f"no normal image of {cls} in this image set: add some (upload) to compare"
        return cmp, ""
    if isinstance(trig, dict) and trig.get("type") == Pattern.REMOVE_GROUP:
        if not any(t.get("value") for t in ctx.triggered):
            raise PreventUpdate
        return {k: v for k, v in current.items() if k != trig.get("index")}, ""
    raise PreventUpdate


def restore_method(services: Services, url_view: Any) -> Any:
    """The datapath method of a shared URL."""
    view = ViewState.applied(url_view)
    if view is None or view.method not in METHOD_LABELS:
        raise PreventUpdate
    return view.method


def render_groups(services: Services, groups: Any) -> Any:
    """The group list (or how to make groups)."""
    return fig.groups_view(check_groups(groups)) or html.Div(
        "Select images and add them as 2–4 groups, or pick a preset.", className="hint")


def preset_options(services: Services, pool_result: Any, set_id: Any) -> Any:
    """Presets of the current pool."""
    pool = current_pool(services, pool_result, set_id)
    return [] if pool is None else [{"label": k, "value": k} for k in presets(pool)]


def summary(services: Services, context: Any) -> Any:
    """What the analysis on screen is, and whether it still matches the groups."""
    cx = AnalysisContext.from_json(context)
    if cx.analysis_key is None:
        return html.Div("Press Analyze to compare the groups." if len(cx.groups) >= 2 else "", className="hint")
    return fig.summary(services.analyses.require(cx.analysis_key))


def register(app: Dash, services: Services) -> None:
    """Attach the groups room's callbacks."""
    app.callback(Output(Groups.GROUPS, "data"), Output(Groups.HINT, "children"),
                 Input(Groups.ADD, "n_clicks"), Input(Groups.PRESET, "value"),
                 Input(Groups.COMPARE_PREDICTED, "n_clicks"), Input(Groups.CLEAR, "n_clicks"),
                 Input({"type": Pattern.REMOVE_GROUP, "index": ALL}, "n_clicks"), Input(Shell.URL_VIEW, "data"),
                 Input(Shell.POOL_RESULT, "data"),
                 State(Groups.NAME, "value"), State(Images.SELECTION, "data"), State(Groups.GROUPS, "data"),
                 State(Images.IMAGE_SET, "value"), prevent_initial_call=True)(
        bound(services, edit_groups, lambda m: (no_update, m)))
    app.callback(Output(Groups.METHOD, "value"), Input(Shell.URL_VIEW, "data"), prevent_initial_call=True)(
        bound(services, restore_method, lambda m: no_update))
    app.callback(Output(Groups.VIEW, "children"), Input(Groups.GROUPS, "data"))(
        bound(services, render_groups, lambda m: html.Div(m, className="error")))
    app.callback(Output(Groups.PRESET, "options"), Input(Shell.POOL_RESULT, "data"), Input(Images.IMAGE_SET, "value"))(
        bound(services, preset_options, lambda m: []))
    app.callback(Output(Groups.SUMMARY, "children"), Input(Shell.CONTEXT, "data"))(
        bound(services, summary, lambda m: html.Div(m, className="error")))
