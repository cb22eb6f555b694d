"""Celery + Redis job backend (``AEVIS_JOB_BACKEND=celery``): the same background callbacks.

The web processes and the Celery workers build the same Dash app (:func:`app.server.factory.create_app`),
so every background callback is registered as a Celery task of the same name on both sides
(Dash's :class:`~dash.CeleryManager`); results and progress go through the Redis result backend.
The worker: ``celery -A app.server.worker worker`` (see ``Procfile``).

Failure reporting on top of Dash's manager:

* a task that failed in the worker (``WorkerLostError`` when its pool process was killed,
  ``TimeLimitExceeded`` past ``AEVIS_JOB_TIMEOUT``) becomes a one-line error in the UI;
* a running task writes a heartbeat key every ``AEVIS_HEARTBEAT_S`` seconds (default 5, expiring
  after three periods); a task still marked STARTED whose heartbeat expired - its whole worker
  was killed - is reported failed instead of waiting forever;
* a task still queued shows "waiting for a worker" as its progress; it fails when no worker
  answers a ping (checked at most every 5 s), or after the time limit.

The result cache (``AEVIS_CACHE_DIR``) stays a diskcache folder: workers on other machines need
it on shared storage.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from dash import CeleryManager

from app.config import AppConfig
from app.jobs.manager import DAY, PerRequestKeys, error_record, timed_out_message

log = logging.getLogger(__name__)
LOST = "the Celery worker running the job stopped (killed or lost); press the button again to retry"
QUEUED = "queued: waiting for a Celery worker"
NO_WORKER = ("no Celery worker is running (start one: celery -A app.server.worker worker); "
             "press the button again to retry")




def make_celery(cfg: AppConfig) -> Celery:
    """The Celery app on ``REDIS_URL`` (broker and result backend), time limit = job timeout."""
    celery_app = Celery("aevis", broker=cfg.redis_url, backend=cfg.redis_url)
    celery_app.conf.update(
        task_track_started=True,          # STARTED is visible, so a lost worker can be told apart
        task_time_limit=cfg.job_timeout,  # hard limit: the pool process is killed
        task_acks_late=False,             # a killed job is reported, not silently re-run forever
        worker_prefetch_multiplier=1,     # long jobs: one at a time per pool process
        result_expires=DAY,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return celery_app


def _heartbeat_key(task_id: str) -> str:
    return f"aevis-heartbeat-{task_id}"


def with_heartbeat(fn: Callable[..., Any], backend: Any, period: float) -> Callable[..., Any]:
    """``fn`` run inside a Celery task, with a heartbeat key refreshed by a thread meanwhile."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from celery import current_task

        task_id = getattr(getattr(current_task, "request", None), "id", None)
        if not task_id:
            return fn(*args, **kwargs)
        stop = threading.Event()

        def beat() -> None:
            backend.client.set(_heartbeat_key(task_id), "1", px=int(3 * period * 1000))

        def beating() -> None:
            while not stop.wait(period):
                beat()

        beat()  # before the task's work starts
        t = threading.Thread(target=beating, name="aevis-heartbeat", daemon=True)
        t.start()
        try:
            return fn(*args, **kwargs)
        finally:
            stop.set()
            t.join(timeout=period + 1)
            backend.client.delete(_heartbeat_key(task_id))

    return run


class ReportingCeleryManager(PerRequestKeys, CeleryManager):  # type: ignore[misc]
    """CeleryManager + failed / lost / timed-out job reporting and per-request result keys."""

    def __init__(self, celery_app: Celery, job_timeout: float = 3600.0, heartbeat_s: float = 5.0) -> None:
        self.job_timeout = job_timeout
        self.heartbeat_s = heartbeat_s  # before Dash's __init__, which already wraps registered functions
        super().__init__(celery_app)

    @property
    def _kv(self) -> Any:
        return self.handle.backend.client  # redis client of the result backend

    def make_job_fn(self, fn: Any, progress: Any, key: Any = None) -> Any:
        """Dash's Celery task around ``fn`` with a heartbeat."""
        return super().make_job_fn(with_heartbeat(fn, self.handle.backend, self.heartbeat_s), progress, key)

    def call_job_fn(self, key: str, job_fn: Any, args: Any, context: Any) -> Any:
        """Queue the task; remember when (for the queue wait and the time limit)."""
        # shown until the task reports its own progress: (value, max, text) as in job_options
        self.handle.backend.set(self._make_progress_key(key), json.dumps(["0", "1", QUEUED]))
        job = super().call_job_fn(key, job_fn, args, context)
        self._kv.set(f"aevis-queued-{job}", str(time.time()), ex=2 * DAY)
        return job

    def terminate_job(self, job: Any) -> None:
        """Record the cancel, then revoke the task as Dash does."""
        if job is not None:
            self._kv.set(f"aevis-cancelled-{job}", "1", ex=DAY)
        super().terminate_job(job)

    def _waited(self, job: Any) -> float:
        queued = self._kv.get(f"aevis-queued-{job}")
        return time.time() - float(queued) if queued else 0.0

    def failure(self, job: Any) -> str | None:
        """Why the job ended without a result (None while it may still deliver one)."""
        task = self.get_task(job)
        status = task.status if task is not None else "PENDING"
        if status == "FAILURE":
            exc = task.result
            if type(exc).__name__ == "TimeLimitExceeded":
                return timed_out_message(self.job_timeout)
            if type(exc).__name__ == "WorkerLostError":
                return LOST
            return f"the job failed in the worker ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        if status == "REVOKED":
            return None if self._kv.get(f"aevis-cancelled-{job}") else LOST
        if status == "STARTED" and not self._kv.exists(_heartbeat_key(str(job))):
            first = self._kv.set(f"aevis-silent-{job}", str(time.time()), nx=True, ex=DAY)
            silent_since = time.time() if first else float(self._kv.get(f"aevis-silent-{job}") or time.time())
            return LOST if time.time() - silent_since > 3 * self.heartbeat_s else None
        if status == "PENDING":
            waited = self._waited(job)
            if waited > self.job_timeout:
                return f"no Celery worker took the job within {self.job_timeout:g} s; is a worker running?"
            if waited > 2 * self.heartbeat_s and not self.workers_alive():
                return NO_WORKER
        return None

    def workers_alive(self) -> bool:
        """Does any Celery worker answer a ping? (cached in Redis for a few seconds)"""
        cached = self._kv.get("aevis-workers-alive")
        if cached is not None:
            return bool(cached == b"1")
        alive = bool(self.handle.control.ping(timeout=1.0))
        self._kv.set("aevis-workers-alive", "1" if alive else "0", ex=5)
        return alive

    def get_result(self, key: Any, job: Any) -> Any:
        """The job's result, or an error record when it failed, was lost or timed out."""
        result = super().get_result(key, job)
        if result is not self.UNDEFINED or job is None:
            return result
        why = self.failure(job)
        return error_record(why) if why else result
