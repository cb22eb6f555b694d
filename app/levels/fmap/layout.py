"""Feature-map room: Euler diagram of the datapaths as a treemap of K-means clusters; faithfulness."""

from __future__ import annotations

from dash import dcc, html

from app.ids import Fmap, Job, JobIds
from app.jobs.widgets import cancel_button, error_line, progress_box
from app.levels.common import GRAPH_CONFIG
from app.levels.fmap.callbacks import K_RANGE
from app.levels.neuron.figures import empty_figure


def layout() -> html.Div:
    """The feature-map level panel."""
    return html.Div([
        dcc.Store(id=Fmap.PINNED),
        dcc.Store(id=Fmap.FAITH_RESULT),
        html.H3(id=Fmap.TITLE, children="Feature-map level"),
        html.Div([
            html.Label("colour"),
            dcc.RadioItems(id=Fmap.COLOR, value="importance", inline=True, options=[
                {"label": "importance z", "value": "importance"},
                {"label": "activation", "value": "activation"},
                {"label": "activation difference", "value": "difference"}]),
            html.Label("clusters k"),
            dcc.Slider(id=Fmap.K, min=K_RANGE[0], max=K_RANGE[1], step=1, value=4),
            html.Button("Pin this layer (compare side by side)", id=Fmap.PIN, n_clicks=0),
            html.Button("Unpin all", id=Fmap.UNPIN, n_clicks=0),
        ], className="controls"),
        dcc.Graph(id=Fmap.TREEMAP, config=GRAPH_CONFIG, style={"height": "420px"},
                  figure=empty_figure("Analyze two or more groups, then pick a layer")),
        html.Div([
            html.Button("Faithfulness of this layer (keep only the top-k maps)", id=JobIds(Job.FAITHFULNESS).button,
                        n_clicks=0),
            cancel_button(Job.FAITHFULNESS),
        ]),
        progress_box(Job.FAITHFULNESS),
        error_line(Job.FAITHFULNESS),
        dcc.Graph(id=Fmap.CURVES, config=GRAPH_CONFIG, style={"display": "none"}),
    ], className="panel")
