"""gunicorn configuration: ``gunicorn -c python:app.server.gunicorn_conf app.server.wsgi:server``.

Every setting comes from :class:`app.config.AppConfig` (environment; defaults in brackets):

* ``AEVIS_HOST`` [127.0.0.1], ``AEVIS_PORT`` [8050] - bind address;
* ``AEVIS_WORKERS`` [2] worker processes, ``AEVIS_THREADS`` [4] threads each (callbacks are short:
  long work runs in job processes or Celery workers);
* ``AEVIS_REQUEST_TIMEOUT`` [120] s before a silent worker is killed;
* ``AEVIS_MAX_REQUESTS`` [1000] (+ up to 10 % jitter) requests before a worker is recycled.

Job processes of the diskcache backend are children of the worker that started them. A worker
that ends normally leaves them running (their results land in the shared cache and any worker
can hand them out). ``worker_abort`` - a worker killed for hanging - ends its job processes, so
no orphan keeps computing for nobody; the UI then reports those jobs as failed (Retry works).
"""

from __future__ import annotations

import logging
from typing import Any

from app.config import AppConfig

_cfg = AppConfig.from_env()
bind = f"{_cfg.host}:{_cfg.port}"
workers = _cfg.workers
threads = _cfg.threads
worker_class = "gthread"
timeout = _cfg.request_timeout
graceful_timeout = 30
max_requests = _cfg.max_requests
max_requests_jitter = max(1, max_requests // 10)
preload_app = False  # each worker builds the app itself; no model is loaded before first use
accesslog = _cfg.access_log
errorlog = "-"
loglevel = _cfg.log_level.lower()

log = logging.getLogger("aevis.gunicorn")


def end_job_processes(pid: int | None = None) -> list[int]:
    """Kill every descendant of ``pid`` (default: this process); returns the pids killed."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    killed = []
    for child in children:
        try:
            child.kill()
            killed.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=5)
    return killed


def worker_abort(worker: Any) -> None:
    """gunicorn hook (in the aborted worker, on SIGABRT after a timeout): end its job processes."""
    killed = end_job_processes()
    if killed:
        worker.log.warning("worker %s aborted: ended its job processes %s", worker.pid, killed)
