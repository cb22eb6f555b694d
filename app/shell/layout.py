"""Page shell: the shared stores, header, banner and the rooms in two columns."""

from __future__ import annotations

from dash import dcc, html

from app.config import AppConfig
from app.ids import Shell
from app.levels.fmap.layout import layout as fmap_layout
from app.levels.groups.layout import layout as groups_layout
from app.levels.images.layout import layout as images_layout
from app.levels.layer.layout import layout as layer_layout
from app.levels.neuron.layout import layout as neuron_layout


def build_layout(config: AppConfig, default_eps: str, notice: str | None = None) -> html.Div:
    """The whole page (``notice``: a server-side problem shown in a banner, e.g. an unwritable cache)."""
    return html.Div([
        dcc.Location(id=Shell.URL, refresh=False),
        dcc.Store(id=Shell.POOL_RESULT),
        dcc.Store(id=Shell.ANALYSIS_RESULT),
        dcc.Store(id=Shell.CONTEXT),
        dcc.Store(id=Shell.URL_VIEW),
        dcc.Download(id=Shell.DOWNLOAD),
        html.Header([
            html.H1("AEVis"),
            html.Span("why does the network misclassify adversarial examples?", className="subtitle"),
            html.Span(f"{config.model} · preparing the images…", id=Shell.MODEL_INFO, className="model-info"),
            html.Button("Download datapath JSON", id=Shell.EXPORT_JSON, n_clicks=0),
        ]),
        html.Div(notice or "", id=Shell.NOTICE, className="notice" if notice else ""),
        html.Div(id=Shell.CONTEXT_INFO, className="context-info"),
        html.Div([
            html.Div([images_layout(default_eps), groups_layout()], className="left"),
            html.Div([layer_layout(), fmap_layout(), neuron_layout()], className="right"),
        ], className="main"),
    ])
