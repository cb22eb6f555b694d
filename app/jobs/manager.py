"""Background-callback managers whose dead, timed-out or lost jobs read as errors, never as idle.

Dash treats a job with no result and no running process as *cancelled*, so a job killed by the
OS (out of memory, a crashed worker) would leave the UI looking idle. The managers here:

* record a cancel by the user in the shared store; a job that stopped without a result and
  without such a record returns a ``background_callback_error`` (handed by Dash to the
  callback's ``on_error``, see :func:`error_outputs`), and the button works again (Retry);
* end a job that runs past ``job_timeout`` seconds and report it as such;
* give every request its own result key: Dash's key is a hash of the callback's source and
  arguments, so two users pressing the same button with the same inputs would otherwise share
  (and consume) one result slot.

:class:`ReportingDiskcacheManager` runs jobs as local processes with one explicit shared
diskcache folder; :mod:`app.jobs.celery_backend` has the Celery + Redis variant.
"""

from __future__ import annotations

import inspect
import time
import uuid
from typing import Any

from dash import DiskcacheManager

DIED = "the job stopped unexpectedly (its process was killed or ran out of memory); press the button again to retry"
DAY = 24 * 3600


def timed_out_message(limit: float) -> str:
    """One line for a job ended by the time limit."""
    return f"the job ran past the {limit:g} s limit (AEVIS_JOB_TIMEOUT) and was stopped; retry or ask for less"


def error_record(msg: str) -> dict[str, Any]:
    """The value Dash reads as a failed background callback."""
    return {"background_callback_error": {"msg": msg, "tb": ""}}


class PerRequestKeys:
    """Manager mixin: Dash's result key made unique per request (see the module docstring)."""

    def build_cache_key(self, *args: Any, **kwargs: Any) -> str:
        """Dash's key + a random suffix."""
        key = super().build_cache_key(*args, **kwargs)  # type: ignore[misc]
        return f"{key}-{uuid.uuid4().hex[:16]}"


class ReportingDiskcacheManager(PerRequestKeys, DiskcacheManager):  # type: ignore[misc]
    """DiskcacheManager + dead-job and time-limit reporting (one explicit shared cache directory)."""

    def __init__(self, cache: Any, job_timeout: float = 3600.0) -> None:
        super().__init__(cache)
        self.job_timeout = job_timeout

    def _cancel_key(self, job: Any) -> str:
        return f"aevis-cancelled-{job}"

    def start_launcher(self) -> None:
        """Fork the job launcher now (call when every callback is registered, before serving)."""
        from app.jobs.launcher import JobLauncher

        self.launcher = JobLauncher(dict(self.func_registry))

    def _start(self, key: str, job_fn: Any, args: Any, context: Any) -> Any:
        """A job process: forked by the launcher when there is one, else by Dash (from this process)."""
        launcher = getattr(self, "launcher", None)
        fn_key = next((k for k, v in self.func_registry.items() if v is job_fn), None)
        if launcher is None or fn_key is None or inspect.iscoroutinefunction(job_fn):
            return super().call_job_fn(key, job_fn, args, context)
        return launcher.start(fn_key, (key, self._make_progress_key(key), args, context))

    def job_running(self, job: Any) -> bool:
        """Dash's check, without the race of a job exiting between its two psutil calls."""
        import psutil

        try:
            return bool(super().job_running(job))
        except psutil.Error:
            return False

    def call_job_fn(self, key: str, job_fn: Any, args: Any, context: Any) -> Any:
        """Start the job process and remember when it started (for the time limit)."""
        job = self._start(key, job_fn, args, context)
        self.handle.set(f"aevis-started-{job}", time.time(), expire=2 * DAY)
        self.handle.delete(self._cancel_key(job))
        self.handle.delete(f"aevis-timeout-{job}")
        return job

    def terminate_job(self, job: Any) -> None:
        """Record the cancel, then kill the job as Dash does."""
        if job is not None:
            self.handle.set(self._cancel_key(job), True, expire=DAY)
        self._kill(job)

    def _kill(self, job: Any) -> None:
        """Dash's kill, without the race of a job exiting between its psutil calls."""
        import psutil

        try:
            DiskcacheManager.terminate_job(self, job)
        except psutil.NoSuchProcess:
            pass

    def _enforce_timeout(self, job: Any) -> bool:
        """End a job running past the limit; True when it was (or had been) ended that way."""
        if self.handle.get(f"aevis-timeout-{job}"):
            return True
        started = self.handle.get(f"aevis-started-{job}")
        if started is None or time.time() - float(started) <= self.job_timeout or not self.job_running(job):
            return False
        self.handle.set(f"aevis-timeout-{job}", True, expire=DAY)
        self._kill(job)  # not a user cancel
        return True

    def get_result(self, key: Any, job: Any) -> Any:
        """The job's result; an error record if it is gone without result or cancel, or timed out."""
        result = super().get_result(key, job)
        if result is not self.UNDEFINED or job is None:
            return result
        if self._enforce_timeout(job):
            return error_record(timed_out_message(self.job_timeout))
        if not self.job_running(job) and not self.handle.get(self._cancel_key(job)):
            # the job may have stored its result and exited between the read above and this check
            late = super().get_result(key, job)
            return late if late is not self.UNDEFINED else error_record(DIED)
        return result
