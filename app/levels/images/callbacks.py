"""Images room callbacks (thin: validate -> service -> figure)."""

from __future__ import annotations

from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from aevis_core.pool import Pool
from app.guard import bound, fired
from app.ids import Groups, Images, Pattern, Shell
from app.levels.groups.presets import is_adversarial
from app.levels.images import figures as fig
from app.payloads import PoolResult, set_id_or_demo
from app.services import Services, uploads

FILTER_KINDS = ("all", "normal", "adversarial")
FILTER_CORRECT = ("all", "correct", "wrong")


def current_pool(services: Services, pool_result: Any, set_id: Any) -> Pool | None:
    """The pool of the chosen image set, once prepared (None while it is being prepared)."""
    pr = PoolResult.from_json(pool_result)
    if pr is None or pr.set_id != set_id_or_demo(set_id):
        return None
    return services.pools.get(pr.pool_key)


def image_sets(services: Services, _path: Any) -> Any:
    """Options of the image-set dropdown: the demo/configured set and the registered uploads."""
    return uploads.list_sets(services.config)


def upload(services: Services, contents: Any, names: Any) -> tuple[Any, Any, Any]:
    """Keep an upload as an image set and switch to it; list every refused file with its reason."""
    if not contents:
        raise PreventUpdate
    if not isinstance(contents, list) or not all(isinstance(c, str) for c in contents):
        return no_update, no_update, html.Div("upload failed: not a list of files", className="error")
    names = [str(n)[:200] for n in names] if isinstance(names, list) else []
    report = uploads.save_upload(services.config, list(contents), names + [f"file {i + 1}" for i in
                                                                           range(len(names), len(contents))])
    lines = uploads.report_lines(report)
    view = [html.Div(lines[0], className="ok" if report.set_id else "error")]
    view += [html.Div(t, className="error") for t in lines[1:]]
    if report.set_id is None:
        return no_update, no_update, view
    return uploads.list_sets(services.config), report.set_id, view


def pool_info(services: Services, pool_result: Any, set_id: Any) -> tuple[Any, Any, Any]:
    """Header line (model, images, attack), class filter options and attack sources of the pool."""
    pool = current_pool(services, pool_result, set_id)
    if pool is None:
        return f"{services.config.model} · preparing the images…", [], no_update
    n = sum(it.kind == "normal" for it in pool.items)
    eps = pool.attack.get("eps")
    eps_txt = f", ε={eps * 255:.1f}/255" if isinstance(eps, float) else ""
    info = f"{services.config.model} · {n} images + {n} {str(pool.attack.get('method')).upper()} twins{eps_txt}"
    return info, fig.class_options(pool), services.pools.source_options()


def render_list(services: Services, pool_result: Any, set_id: Any, cls: Any, kind: Any, correct: Any, sort: Any,
                selection: Any) -> Any:
    """Thumbnails of the pool passing the filters (out-of-range filter values read as "all")."""
    pool = current_pool(services, pool_result, set_id)
    pr = PoolResult.from_json(pool_result)
    if pool is None or pr is None:
        return html.Div("Preparing the images (attack, predictions, scores)…", className="hint")
    cls = cls if isinstance(cls, int) and not isinstance(cls, bool) else None
    kind = kind if kind in FILTER_KINDS else "all"
    correct = correct if correct in FILTER_CORRECT else "all"
    sorted_ = isinstance(sort, list) and "score" in sort
    items = fig.filter_items(pool, cls, kind, correct, "score" if sorted_ else "none")
    sel = [s for s in selection if isinstance(s, str)] if isinstance(selection, list) else []
    return fig.image_list(pool, pr.pool_key, items, sel) or html.Div("No image passes these filters.",
                                                                       className="hint")


def toggle(services: Services, _clicks: Any, _clear: Any, _pool: Any, selection: Any) -> list[str]:
    """Click a thumbnail to (de)select it; Clear, or other images, empty the selection."""
    trig = ctx.triggered_id
    if fired(Images.CLEAR_SELECTION) or fired(Shell.POOL_RESULT):
        return []
    if not isinstance(trig, dict) or not any(t.get("value") for t in ctx.triggered):
        raise PreventUpdate
    sel = [s for s in selection if isinstance(s, str)] if isinstance(selection, list) else []
    item = str(trig.get("index"))[:200]
    return [s for s in sel if s != item] if item in sel else sel + [item]


def thumb_outputs() -> list[dict[str, Any]]:
    """The thumbnail cards this request asks a class for (the renderer's own output list)."""
    outs = ctx.outputs_list[0] if ctx.outputs_list else []
    return [o for o in outs if isinstance(o, dict) and isinstance(o.get("id"), dict)] if isinstance(outs, list) else []


def show_selection(services: Services, selection: Any, pool_result: Any, set_id: Any) -> tuple[Any, Any, Any]:
    """Highlight the selected thumbnails; enable "compare with its predicted class" for one adversarial."""
    sel = {s for s in selection if isinstance(s, str)} if isinstance(selection, list) else set()
    classes = ["thumb selected" if t.get("id", {}).get("index") in sel else "thumb" for t in thumb_outputs()]
    pool = current_pool(services, pool_result, set_id)
    one_adv = pool is not None and len(sel) == 1 and is_adversarial(pool, next(iter(sel)))
    return classes, f"{len(sel)} selected" if sel else "no image selected", not one_adv


def register(app: Dash, services: Services) -> None:
    """Attach the images room's callbacks."""

    def bind(fn: Any, fallback: Any) -> Any:
        return bound(services, fn, fallback)

    def msg_div(m: str) -> Any:
        return html.Div(m, className="error")

    app.callback(Output(Images.IMAGE_SET, "options"), Input(Shell.URL, "pathname"))(
        bind(image_sets, lambda m: no_update))
    app.callback(Output(Images.IMAGE_SET, "options", allow_duplicate=True),
                 Output(Images.IMAGE_SET, "value", allow_duplicate=True), Output(Images.UPLOAD_REPORT, "children"),
                 Input(Images.UPLOAD, "contents"), State(Images.UPLOAD, "filename"), prevent_initial_call=True)(
        bind(upload, lambda m: (no_update, no_update, msg_div(f"upload failed: {m}"))))
    app.callback(Output(Shell.MODEL_INFO, "children"), Output(Images.FILTER_CLASS, "options"),
                 Output(Images.GEN_SOURCE, "options"),
                 Input(Shell.POOL_RESULT, "data"), Input(Images.IMAGE_SET, "value"))(
        bind(pool_info, lambda m: (m, no_update, no_update)))
    app.callback(Output(Images.LIST, "children"),
                 Input(Shell.POOL_RESULT, "data"), Input(Images.IMAGE_SET, "value"),
                 Input(Images.FILTER_CLASS, "value"), Input(Images.FILTER_KIND, "value"),
                 Input(Images.FILTER_CORRECT, "value"), Input(Images.SORT_SCORE, "value"),
                 State(Images.SELECTION, "data"))(bind(render_list, msg_div))
    app.callback(Output(Images.SELECTION, "data"),
                 Input({"type": Pattern.THUMB, "index": ALL}, "n_clicks"), Input(Images.CLEAR_SELECTION, "n_clicks"),
                 Input(Shell.POOL_RESULT, "data"), State(Images.SELECTION, "data"), prevent_initial_call=True)(
        bind(toggle, lambda m: no_update))
    app.callback(Output({"type": Pattern.THUMB, "index": ALL}, "className"), Output(Images.SELECTION_INFO, "children"),
                 Output(Groups.COMPARE_PREDICTED, "disabled"),
                 Input(Images.SELECTION, "data"),
                 State(Shell.POOL_RESULT, "data"), State(Images.IMAGE_SET, "value"))(
        bind(show_selection, lambda m: (["thumb"] * len(thumb_outputs()), m, True)))
