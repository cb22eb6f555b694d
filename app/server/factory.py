"""App factory: ``create_app(config)`` builds the Dash app; nothing heavy happens here.

The job backend is ``AEVIS_JOB_BACKEND``: ``diskcache`` (job processes on this machine, one explicit
shared folder ``<cache>/jobs`` so every gunicorn worker sees every job) or ``celery`` (Celery workers
through ``REDIS_URL``, :mod:`app.jobs.celery_backend`). An unwritable cache folder does not stop the
app: it falls back to a per-user folder in the temp dir and says so in a banner. With
``prepare_on_start`` the demo pool starts preparing at once (:mod:`app.services.preparation`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import diskcache
from dash import Dash

from app.config import AppConfig
from app.jobs import tasks
from app.jobs.manager import ReportingDiskcacheManager
from app.levels.fmap import callbacks as fmap_callbacks
from app.levels.groups import callbacks as groups_callbacks
from app.levels.images import callbacks as images_callbacks
from app.levels.layer import callbacks as layer_callbacks
from app.levels.neuron import callbacks as neuron_callbacks
from app.server import security, thumbnails
from app.services import Services, preparation
from app.services.model import configured_eps
from app.shell import callbacks as shell_callbacks
from app.shell.layout import build_layout

ASSETS = Path(__file__).resolve().parents[2] / "assets"
log = logging.getLogger(__name__)


def _writable(folder: Path) -> None:
    """Create ``folder`` and write a probe file in it, or raise OSError."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".probe-{os.getpid()}"
    probe.write_bytes(b"ok")
    probe.unlink()


def usable_cache(cfg: AppConfig) -> tuple[AppConfig, str | None]:
    """``cfg`` unchanged when its cache folder is writable, else a fallback folder and a notice."""
    try:
        for folder in (cfg.results_dir, cfg.jobs_dir):
            _writable(folder)
        return cfg, None
    except OSError as exc:
        digest = hashlib.sha1(str(cfg.cache_dir.resolve()).encode()).hexdigest()[:10]
        fallback = Path(tempfile.gettempdir()) / f"aevis-cache-{os.getuid()}-{digest}"
        notice = (f"The cache folder {cfg.cache_dir} is not writable ({exc.strerror or exc}): results are "
                  f"kept in {fallback} for now and will be recomputed after a restart. Fix AEVIS_CACHE_DIR.")
        log.error(notice)
        new = cfg.with_(cache_dir=fallback)
        for folder in (new.results_dir, new.jobs_dir):
            _writable(folder)  # nothing writable at all: fail at start with this error
        return new, notice


def make_manager(cfg: AppConfig) -> Any:
    """The background-callback manager of the configured job backend."""
    if cfg.job_backend == "celery":
        from app.jobs.celery_backend import ReportingCeleryManager, make_celery

        return ReportingCeleryManager(make_celery(cfg), job_timeout=cfg.job_timeout, heartbeat_s=cfg.heartbeat_s)
    return ReportingDiskcacheManager(diskcache.Cache(str(cfg.jobs_dir)), job_timeout=cfg.job_timeout)


def create_app(config: AppConfig | None = None) -> Dash:
    """The dashboard for ``config`` (default: from the environment)."""
    cfg, notice = usable_cache(config or AppConfig.from_env())
    manager = make_manager(cfg)
    app = Dash(__name__, title="AEVis", background_callback_manager=manager, assets_folder=str(ASSETS),
               suppress_callback_exceptions=True)
    services = Services.create(cfg)
    app.layout = build_layout(cfg, configured_eps(cfg), notice)
    for room in (shell_callbacks, images_callbacks, groups_callbacks, layer_callbacks, fmap_callbacks,
                 neuron_callbacks, tasks):
        room.register(app, services)
    thumbnails.install(app, services)
    security.install(app, cfg)
    app.server.config["AEVIS_CONFIG"] = cfg
    app.server.extensions["aevis_manager"] = manager
    app.server.extensions["aevis_services"] = services
    if isinstance(manager, ReportingDiskcacheManager) and cfg.job_launcher:
        manager.start_launcher()  # jobs fork from a single-threaded process (app/jobs/launcher.py)
    if cfg.prepare_on_start and cfg.job_backend == "diskcache":
        preparation.start(cfg)
    return app
