"""Every background job of the dashboard: prepare a pool, Generate twins, Analyze, discrepancy maps,
faithfulness. Each is a module-level function (validate -> service -> small typed result in a store);
the figures are drawn by the levels' callbacks from the stores, so a job's result is shown only
while it belongs to the page's analysis. :func:`register` attaches them to the app.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dash import Dash, Input, Output, State, no_update

from aevis_core.attacks import AttackConfig, parse_eps, validate_config
from aevis_core.errors import AEVisError
from app.config import DEMO_SET
from app.guard import fired, message_of
from app.ids import Fmap, Groups, Images, Job, JobIds, Layer, Neuron, Shell
from app.jobs.widgets import SetProgress, job_options, reporter
from app.payloads import (
    AnalysisContext,
    AnalysisResult,
    LayerFocus,
    MapFocus,
    PoolResult,
    ViewResult,
    ViewState,
    check_groups,
    set_id_or_demo,
)
from app.services import Services, preparation

log = logging.getLogger(__name__)
METHODS = ("mifgsm", "fgsm", "pgd", "cw", "deepfool")
MAX_STEPS = 200
RELAY_S = 0.5


def relay_preparation(services: Services, set_progress: SetProgress) -> str | None:
    """While the server's own preparation of the demo runs, show its progress; its pool key once ready."""
    cfg = services.config
    while True:
        st = preparation.read_status(cfg)
        if st is None or not st.alive:
            break
        set_progress((str(st.done), str(st.total), st.text()))
        time.sleep(RELAY_S)
    if st is not None and st.state == "ready" and st.pool_key and services.store.has(st.pool_key):
        return st.pool_key
    return None


def prepare_pool(set_progress: SetProgress, services: Services, _path: Any, set_id: Any) -> tuple[Any, Any]:
    """Pool of the chosen image set (the demo's comes from the server's start-up preparation)."""
    try:
        sid = set_id_or_demo(set_id)
        set_progress(("0", "1", "Preparing the images…"))
        key = relay_preparation(services, set_progress) if sid == DEMO_SET else None
        if key is None:
            key = services.pools.prepare(sid, reporter(set_progress, "Preparing the images: "),
                                         job_model=services.job_model())
        return PoolResult(sid, key).to_json(), ""
    except Exception as exc:  # noqa: BLE001 - one line in the UI
        return None, "Could not prepare the images: " + message_of(exc)


def generate_pool(set_progress: SetProgress, services: Services, _n: Any, method: Any, eps: Any, steps: Any,
                  source: Any, set_id: Any) -> tuple[Any, Any]:
    """Pool whose adversarial twins come from the chosen attack (white-box or transfer); bounded here."""
    try:
        sid = set_id_or_demo(set_id)
        if method not in METHODS:
            raise AEVisError(f"unknown attack {str(method)[:40]!r}: choose one of {', '.join(METHODS)}")
        if isinstance(steps, bool) or not isinstance(steps, int | float) or not 1 <= steps <= MAX_STEPS \
                or int(steps) != steps:
            raise AEVisError(f"steps must be a whole number from 1 to {MAX_STEPS}")
        if not isinstance(eps, str) or len(eps) > 32:
            raise AEVisError("eps must be written like 4/255 or 0.0157")
        valid_sources = {o["value"] for o in services.pools.source_options()}
        if source is not None and source not in valid_sources:
            raise AEVisError(f"unknown source model {str(source)[:40]!r}")
        cfg = validate_config(AttackConfig(method=method, eps=parse_eps(eps), steps=int(steps)))
        src = source if source and source != services.config.model else None
        key = services.pools.prepare(sid, reporter(set_progress, "Generating: "), job_model=services.job_model(),
                                     attack=cfg, source=src)
        return PoolResult(sid, key).to_json(), ""
    except Exception as exc:  # noqa: BLE001 - one line in the UI; the current images stay
        return no_update, message_of(exc)


def run_analysis(set_progress: SetProgress, services: Services, _n: Any, url_view: Any, groups: Any,
                 pool_result: Any, set_id: Any, method: Any = "qp") -> tuple[Any, Any]:
    """Analyze the groups with the chosen datapath method (or the groups and method of a shared URL,
    once its images are ready)."""
    try:
        pool = PoolResult.from_json(pool_result)
        if pool is None or pool.set_id != set_id_or_demo(set_id):
            raise AEVisError("the images are still being prepared; Analyze when the thumbnails are shown")
        if fired(Shell.URL_VIEW) and not fired(JobIds(Job.ANALYZE).button):
            view = ViewState.applied(url_view)
            if view is None or not view.groups:
                return no_update, no_update
            chosen = view.groups
            method = view.method or "qp"
        else:
            chosen = check_groups(groups, services.config.max_analysis_images)
        result = services.analyses.run(chosen, pool.pool_key, reporter(set_progress), services.job_model(), method)
        return AnalysisResult(result.key, pool.pool_key, result.groups).to_json(), ""
    except Exception as exc:  # noqa: BLE001 - one line in the UI; the previous result stays
        return no_update, message_of(exc)


def focused(services: Services, context: Any, focus: Any, kind: type[Any], hint: str) -> tuple[Any, Any, Any]:
    """(context, focus, analysis) when the focus (``kind``: LayerFocus or MapFocus) belongs to the
    page's analysis, else a one-line error ``hint``."""
    cx = AnalysisContext.from_json(context)
    f = kind.from_json(focus)
    if f is None or cx.analysis_key is None or f.analysis_key != cx.analysis_key:
        raise AEVisError(hint)
    return cx, f, services.analyses.require(cx.analysis_key)


def discrepancy(set_progress: SetProgress, services: Services, _n: Any, focus: Any, context: Any,
                stride: Any) -> tuple[Any, Any]:
    """Discrepancy maps of the selected feature map (cached per analysis, layer, map and stride)."""
    try:
        cx, f, a = focused(services, context, focus, MapFocus,
                           "pick a feature map first (click a cluster in the treemap)")
        key = services.analyses.discrepancy(a, cx.pool_key, f.layer, f.channel, stride, reporter(set_progress),
                                            services.job_model())
        return ViewResult(a.key, f.layer, key, f.channel).to_json(), ""
    except Exception as exc:  # noqa: BLE001 - one line in the UI
        return no_update, message_of(exc)


def faithfulness(set_progress: SetProgress, services: Services, _n: Any, focus: Any, context: Any) -> tuple[Any, Any]:
    """Faithfulness table of the selected layer (cached per analysis and layer)."""
    try:
        cx, f, a = focused(services, context, focus, LayerFocus, "Analyze groups and pick a layer first")
        key = services.analyses.faithfulness(a, cx.pool_key, f.layer, reporter(set_progress), services.job_model())
        return ViewResult(a.key, f.layer, key).to_json(), ""
    except Exception as exc:  # noqa: BLE001 - one line in the UI
        return no_update, message_of(exc)


def register(app: Dash, services: Services) -> None:
    """Attach every background job to ``app`` (module-level bodies, bound to ``services``)."""

    def bind(fn: Any) -> Any:
        def job(set_progress: SetProgress, *args: Any) -> Any:
            return fn(set_progress, services, *args)

        job.__name__ = job.__qualname__ = fn.__name__
        job.__doc__ = fn.__doc__
        job.__module__ = fn.__module__
        return job

    pool = JobIds(Job.POOL)
    app.callback(Output(Shell.POOL_RESULT, "data"), Output(pool.error, "children"),
                 Input(Shell.URL, "pathname"), Input(Images.IMAGE_SET, "value"),
                 **job_options(Job.POOL, 2, 1, cancel=False, button=False),
                 prevent_initial_call=False)(bind(prepare_pool))
    gen = JobIds(Job.GENERATE)
    app.callback(Output(Shell.POOL_RESULT, "data", allow_duplicate=True), Output(gen.error, "children"),
                 Input(gen.button, "n_clicks"), State(Images.GEN_METHOD, "value"), State(Images.GEN_EPS, "value"),
                 State(Images.GEN_STEPS, "value"), State(Images.GEN_SOURCE, "value"),
                 State(Images.IMAGE_SET, "value"),
                 **job_options(Job.GENERATE, 2, 1), prevent_initial_call=True)(bind(generate_pool))
    an = JobIds(Job.ANALYZE)
    app.callback(Output(Shell.ANALYSIS_RESULT, "data"), Output(an.error, "children"),
                 Input(an.button, "n_clicks"), Input(Shell.URL_VIEW, "data"), State(Groups.GROUPS, "data"),
                 State(Shell.POOL_RESULT, "data"), State(Images.IMAGE_SET, "value"), State(Groups.METHOD, "value"),
                 **job_options(Job.ANALYZE, 2, 1), prevent_initial_call=True)(bind(run_analysis))
    disc = JobIds(Job.DISCREPANCY)
    app.callback(Output(Neuron.DISC_RESULT, "data"), Output(disc.error, "children"),
                 Input(disc.button, "n_clicks"), State(Neuron.FOCUS, "data"), State(Shell.CONTEXT, "data"),
                 State(Neuron.STRIDE, "value"),
                 **job_options(Job.DISCREPANCY, 2, 1), prevent_initial_call=True)(bind(discrepancy))
    faith = JobIds(Job.FAITHFULNESS)
    app.callback(Output(Fmap.FAITH_RESULT, "data"), Output(faith.error, "children"),
                 Input(faith.button, "n_clicks"), State(Layer.FOCUS, "data"), State(Shell.CONTEXT, "data"),
                 **job_options(Job.FAITHFULNESS, 2, 1), prevent_initial_call=True)(bind(faithfulness))
