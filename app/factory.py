"""App factory: ``create_app(config)`` builds the Dash app; nothing heavy happens here."""

from __future__ import annotations

import logging
from pathlib import Path

import dash_cytoscape as cyto
import diskcache
from dash import Dash

from app.callbacks import register
from app.config import AppConfig
from app.layout import build_layout
from app.manager import ReportingDiskcacheManager
from app.resources import Resources

ASSETS = Path(__file__).resolve().parent.parent / "assets"
log = logging.getLogger(__name__)


def create_app(config: AppConfig | None = None) -> Dash:
    """The dashboard for ``config`` (default: from the environment)."""
    cfg = config or AppConfig.from_env()
    cfg.jobs_dir.mkdir(parents=True, exist_ok=True)
    manager = ReportingDiskcacheManager(diskcache.Cache(str(cfg.jobs_dir)))
    cyto.load_extra_layouts()
    app = Dash(__name__, title="AEVis", background_callback_manager=manager, assets_folder=str(ASSETS),
               suppress_callback_exceptions=True)
    resources = Resources(cfg)
    app.layout = build_layout(cfg)
    register(app, resources)
    from app.callbacks_views import register_views

    register_views(app, resources)
    return app
