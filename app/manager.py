"""Background-callback manager whose dead jobs read as errors, not as "cancelled".

Dash's :class:`~dash.DiskcacheManager` treats a job with no result and no running process as
cancelled, so a job killed by the OS (out of memory, a crashed worker) would leave the UI looking
idle. Here a cancel by the user is recorded in the shared cache; a job that stopped without a
result and without such a record returns a ``background_callback_error``, which Dash hands to the
callback's ``on_error`` handler (see :func:`error_outputs`), and the button works again (Retry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import DiskcacheManager, no_update

DIED = "the job stopped unexpectedly (its process was killed or ran out of memory); press the button again to retry"


class ReportingDiskcacheManager(DiskcacheManager):  # type: ignore[misc]
    """DiskcacheManager + "died" detection (one explicit shared cache directory)."""

    def _cancel_key(self, job: Any) -> str:
        return f"aevis-cancelled-{job}"

    def terminate_job(self, job: Any) -> None:
        """Record the cancel, then kill the job as Dash does."""
        if job is not None:
            self.handle.set(self._cancel_key(job), True, expire=24 * 3600)
        super().terminate_job(job)

    def get_result(self, key: Any, job: Any) -> Any:
        """The job's result; an error record if its process is gone without result or cancel."""
        result = super().get_result(key, job)
        if (result is self.UNDEFINED and job is not None and not self.job_running(job)
                and not self.handle.get(self._cancel_key(job))):
            return {"background_callback_error": {"msg": DIED, "tb": ""}}
        return result


def error_outputs(n_outputs: int, error_index: int) -> Callable[[Exception], list[Any]]:
    """``on_error`` handler: no update everywhere but the error message at ``error_index``."""

    def handler(exc: Exception) -> list[Any]:
        text = str(exc).split("background callback: ", 1)[-1].splitlines()[0]
        out: list[Any] = [no_update] * n_outputs
        out[error_index] = text
        return out

    return handler


def job_options(name: str, n_outputs: int, error_at: int, cancel: bool = True,
                button: bool = True) -> dict[str, Any]:
    """Keyword arguments of a background callback whose widgets follow the layout's naming.

    ``{name}-progress`` / ``{name}-status`` / ``{name}-progress-box`` show progress; the button
    ``{name}`` is disabled while running and ``cancel-{name}`` (when ``cancel``) stops the job;
    failures (including a dead job process) land in output ``error_at``.
    """
    from dash import Input, Output

    running: list[Any] = [(Output(f"{name}-progress-box", "style"), {"display": "flex"}, {"display": "none"})]
    if button:
        running.append((Output(name, "disabled"), True, False))
    opts: dict[str, Any] = {
        "background": True,
        "progress": [Output(f"{name}-progress", "value"), Output(f"{name}-progress", "max"),
                     Output(f"{name}-status", "children")],
        "on_error": error_outputs(n_outputs, error_at),
    }
    if cancel:
        running.append((Output(f"cancel-{name}", "disabled"), False, True))
        opts["cancel"] = [Input(f"cancel-{name}", "n_clicks")]
    opts["running"] = running
    return opts
