"""Callbacks: thin (validate -> call core -> format). Long work runs as background callbacks."""

from __future__ import annotations

import json
import logging
from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from aevis_core.analysis import Analysis
from aevis_core.datapath.extract import datapath_to_dict
from aevis_core.pool import Pool
from app import jobs, uploads
from app.manager import job_options
from app.resources import Resources
from app.views import images as iv

log = logging.getLogger(__name__)
MAX_GROUPS = 4


def load_pool(res: Resources, key: str | None) -> Pool | None:
    """The pool the page works on (None until it is ready)."""
    return res.pool(key) if key else None


def load_analysis(res: Resources, key: str | None) -> Analysis | None:
    """A finished analysis from the cache."""
    value = res.cached(key)
    return value if isinstance(value, Analysis) else None


def groups_view(groups: dict[str, list[str]]) -> list[html.Div]:
    """One line per group: name, size, remove button."""
    return [html.Div([html.B(name), html.Span(f" {len(ids)} images "),
                      html.Button("×", id={"type": "rm-group", "index": name}, n_clicks=0, className="rm")],
                     className="group") for name, ids in groups.items()]


def add_group(groups: dict[str, list[str]], name: str | None, ids: list[str]) -> dict[str, list[str]]:
    """Groups with a new named group (name defaults to G1..G4); at most four groups."""
    if not ids:
        raise PreventUpdate
    out = dict(groups)
    name = (name or "").strip() or f"G{len(out) + 1}"
    if name not in out and len(out) >= MAX_GROUPS:
        return out
    out[name] = list(ids)
    return out


def register(app: Dash, res: Resources) -> None:
    """Attach every callback of the dashboard to ``app``."""

    @app.callback(
        Output("pool-key", "data"), Output("pool-error", "children"),
        Input("url", "pathname"), Input("image-set", "value"),
        **job_options("pool", 2, 1, cancel=False, button=False),
        prevent_initial_call=False,
    )
    def prepare(set_progress: Any, _path: str | None, set_id: str | None) -> tuple[Any, Any]:
        try:
            return jobs.prepare_pool(set_progress, res, set_id), ""
        except Exception as exc:  # noqa: BLE001 - shown as one line
            return None, f"Could not prepare the images: {jobs.user_message(exc)}"

    @app.callback(Output("image-set", "options"), Input("url", "pathname"))
    def image_sets(_path: str | None) -> Any:
        return uploads.list_sets(res.config)

    @app.callback(Output("image-set", "options", allow_duplicate=True), Output("image-set", "value"),
                  Output("upload-report", "children"),
                  Input("upload", "contents"), State("upload", "filename"), prevent_initial_call=True)
    def upload(contents: list[str] | None, names: list[str] | None) -> tuple[Any, Any, Any]:
        if not contents:
            raise PreventUpdate
        try:
            report = uploads.save_upload(res.config, list(contents), list(names or []))
        except Exception as exc:  # noqa: BLE001 - the page keeps working; the log has the details
            return no_update, no_update, html.Div(f"upload failed: {jobs.user_message(exc)}", className="error")
        lines = uploads.report_lines(report)
        view = [html.Div(lines[0], className="ok" if report.set_id else "error")]
        view += [html.Div(t, className="error") for t in lines[1:]]
        if report.set_id is None:
            return no_update, no_update, view
        return uploads.list_sets(res.config), report.set_id, view

    @app.callback(
        Output("pool-key", "data", allow_duplicate=True), Output("generate-error", "children"),
        Input("generate", "n_clicks"), State("gen-method", "value"), State("gen-eps", "value"),
        State("gen-steps", "value"), State("gen-source", "value"), State("image-set", "value"),
        **job_options("generate", 2, 1, cancel=False),
        prevent_initial_call=True,
    )
    def generate(set_progress: Any, _n: int, method: str, eps: str, steps: int, source: str,
                 set_id: str | None) -> tuple[Any, Any]:
        try:
            return jobs.generate_pool(set_progress, res, method, eps, steps, source, set_id), ""
        except Exception as exc:  # noqa: BLE001 - shown as one line, the current images stay
            return no_update, jobs.user_message(exc)

    @app.callback(Output("model-info", "children"), Output("filter-class", "options"), Output("preset", "options"),
                  Output("gen-source", "options"), Input("pool-key", "data"))
    def pool_ready(key: str | None) -> tuple[Any, Any, Any, Any]:
        pool = load_pool(res, key)
        if pool is None:
            return "preparing…", [], [], []
        n = sum(it.kind == "normal" for it in pool.items)
        eps = pool.attack.get("eps")
        eps_txt = f", ε={eps * 255:.1f}/255" if isinstance(eps, float) else ""
        info = f"{res.config.model} · {n} images + {n} {str(pool.attack.get('method')).upper()} twins{eps_txt}"
        from aevis_core.models import ZOO

        dataset = res.entry.dataset
        sources = [{"label": f"{name} (transfer)" if name != res.config.model else f"{name} (white-box)",
                    "value": name} for name, z in ZOO.items() if z.dataset == dataset]
        return info, iv.class_options(pool), [{"label": k, "value": k} for k in iv.presets(pool)], sources

    @app.callback(Output("image-list", "children"),
                  Input("pool-key", "data"), Input("filter-class", "value"), Input("filter-kind", "value"),
                  Input("filter-correct", "value"), Input("sort-score", "value"), State("selection", "data"))
    def render_list(key: str | None, cls: int | None, kind: str, correct: str, sort: list[str],
                    selection: list[str]) -> Any:
        pool = load_pool(res, key)
        if pool is None:
            return html.Div("Preparing the demo images (attack, predictions, scores)…", className="hint")
        items = iv.filter_items(pool, cls, kind or "all", correct or "all", "score" if sort else "none")
        return iv.image_list(pool, items, selection or [])

    @app.callback(Output("selection", "data"),
                  Input({"type": "thumb", "index": ALL}, "n_clicks"), Input("clear-selection", "n_clicks"),
                  State("selection", "data"), prevent_initial_call=True)
    def toggle(_clicks: list[int], _clear: int, selection: list[str]) -> list[str]:
        trig = ctx.triggered_id
        if trig == "clear-selection":
            return []
        if not isinstance(trig, dict) or not any(t["value"] for t in ctx.triggered):
            raise PreventUpdate
        sel = list(selection or [])
        item = trig["index"]
        return [s for s in sel if s != item] if item in sel else sel + [item]

    @app.callback(Output({"type": "thumb", "index": ALL}, "className"), Output("selection-info", "children"),
                  Output("compare-predicted", "disabled"),
                  Input("selection", "data"), State({"type": "thumb", "index": ALL}, "id"))
    def show_selection(selection: list[str], ids: list[dict[str, str]]) -> tuple[Any, Any, Any]:
        sel = set(selection or [])
        classes = ["thumb selected" if i["index"] in sel else "thumb" for i in ids]
        one_adv = len(sel) == 1 and next(iter(sel)).endswith("~adv")
        return classes, f"{len(sel)} selected" if sel else "no image selected", not one_adv

    @app.callback(Output("groups", "data"),
                  Input("add-group", "n_clicks"), Input("preset", "value"), Input("compare-predicted", "n_clicks"),
                  Input("clear-groups", "n_clicks"), Input({"type": "rm-group", "index": ALL}, "n_clicks"),
                  State("group-name", "value"), State("selection", "data"), State("groups", "data"),
                  State("pool-key", "data"), prevent_initial_call=True)
    def edit_groups(_add: int, preset: str | None, _cmp: int, _clear: int, _rm: list[int], name: str | None,
                    selection: list[str], groups: dict[str, list[str]], key: str | None) -> Any:
        trig = ctx.triggered_id
        pool = load_pool(res, key)
        if trig == "clear-groups":
            return {}
        if trig == "add-group":
            return add_group(groups or {}, name, selection or [])
        if trig == "preset" and preset and pool is not None:
            return iv.presets(pool).get(preset, groups)
        if trig == "compare-predicted" and pool is not None and selection:
            return iv.compare_with_predicted(pool, selection[0]) or groups
        if isinstance(trig, dict) and trig.get("type") == "rm-group" and any(t["value"] for t in ctx.triggered):
            return {k: v for k, v in (groups or {}).items() if k != trig["index"]}
        raise PreventUpdate

    @app.callback(Output("groups-view", "children"), Input("groups", "data"))
    def render_groups(groups: dict[str, list[str]]) -> Any:
        return groups_view(groups or {}) or html.Div("Select images and add them as 2–4 groups, or pick a preset.",
                                                     className="hint")

    @app.callback(
        Output("analysis-key", "data"), Output("analyze-error", "children"),
        Input("analyze", "n_clicks"), State("groups", "data"), State("pool-key", "data"),
        **job_options("analyze", 2, 1),
        prevent_initial_call=True,
    )
    def run_analyze(set_progress: Any, _n: int, groups: dict[str, list[str]], pool_key: str | None) -> tuple[Any, Any]:
        try:
            result = jobs.run_analysis(set_progress, res, groups or {}, pool_key)
        except Exception as exc:  # noqa: BLE001 - shown as one line, previous result kept
            return no_update, jobs.user_message(exc)
        return result.key, ""

    @app.callback(Output("analysis-summary", "children"), Input("analysis-key", "data"))
    def summary(key: str | None) -> Any:
        a = load_analysis(res, key)
        if a is None:
            return ""
        lines = [f"{name}: {len(ids)} images" for name, ids in a.groups.items()]
        if a.divergence is not None:
            lines.append(f"diverging point: {a.divergence.layer or 'none found'}")
        return [html.Div(t) for t in lines]

    @app.callback(Output("download", "data"), Input("export-json", "n_clicks"), State("analysis-key", "data"),
                  prevent_initial_call=True)
    def export(_n: int, key: str | None) -> Any:
        a = load_analysis(res, key)
        if a is None:
            raise PreventUpdate
        doc = {"model": a.model_id, "groups": a.groups,
               "datapaths": {k: datapath_to_dict(v) for k, v in a.datapaths.items()},
               "statistics": a.stats.to_dict(),
               "divergence": a.divergence.to_dict() if a.divergence else None}
        return {"content": json.dumps(doc), "filename": "aevis-datapath.json", "type": "application/json"}
