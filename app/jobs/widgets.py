"""The widgets every background job shows (progress bar, status, Cancel, error line) and the
``@callback`` options that drive them; ids come from :class:`app.ids.JobIds`, so the layout and the
job options cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import Input, Output, html, no_update

from app.ids import Job, JobIds

SetProgress = Callable[[tuple[str, str, str]], None]
Report = Callable[[int, int, str], None]


def progress_box(job: Job) -> html.Div:
    """Progress bar + status text of ``job`` (hidden while it is not running)."""
    ids = JobIds(job)
    return html.Div([html.Progress(id=ids.progress, value="0", max="1", className="progress"),
                     html.Span(id=ids.status, className="status")],
                    id=ids.box, className="progress-box", style={"display": "none"})


def error_line(job: Job) -> html.Div:
    """Where a failure of ``job`` is shown (one line)."""
    return html.Div(id=JobIds(job).error, className="error")


def cancel_button(job: Job) -> html.Button:
    """The Cancel button of ``job`` (enabled while it runs)."""
    return html.Button("Cancel", id=JobIds(job).cancel, n_clicks=0, disabled=True)


def reporter(set_progress: SetProgress, prefix: str = "") -> Report:
    """(done, total, stage) -> set_progress((value, max, text))."""
    def report(done: int, total: int, stage: str) -> None:
        set_progress((str(done), str(max(total, 1)), f"{prefix}{stage}: {done}/{total}"))

    return report


def error_outputs(n_outputs: int, error_index: int) -> Callable[[Exception], list[Any]]:
    """``on_error`` handler: no update everywhere but the error message at ``error_index``."""

    def handler(exc: Exception) -> list[Any]:
        text = str(exc).split("background callback: ", 1)[-1].splitlines()[0]
        out: list[Any] = [no_update] * n_outputs
        out[error_index] = text
        return out

    return handler


def job_options(job: Job, n_outputs: int, error_at: int, cancel: bool = True, button: bool = True) -> dict[str, Any]:
    """Keyword arguments of the background callback of ``job``: progress to its bar and status, its
    button disabled while running, Cancel (when ``cancel``), failures (a dead job process included)
    in output ``error_at``."""
    ids = JobIds(job)
    running: list[Any] = [(Output(ids.box, "style"), {"display": "flex"}, {"display": "none"})]
    if button:
        running.append((Output(ids.button, "disabled"), True, False))
    opts: dict[str, Any] = {
        "background": True,
        "progress": [Output(ids.progress, "value"), Output(ids.progress, "max"), Output(ids.status, "children")],
        "on_error": error_outputs(n_outputs, error_at),
    }
    if cancel:
        running.append((Output(ids.cancel, "disabled"), False, True))
        opts["cancel"] = [Input(ids.cancel, "n_clicks")]
    opts["running"] = running
    return opts
