"""Neuron room: activation heat maps, top-activating patches and discrepancy maps of one feature map."""

from __future__ import annotations

from dash import dcc, html

from app.ids import Job, JobIds, Neuron
from app.jobs.widgets import cancel_button, error_line, progress_box
from app.levels.common import GRAPH_CONFIG
from app.levels.neuron.figures import empty_figure
from app.services.analyses import STRIDES


def layout() -> html.Div:
    """The neuron level panel."""
    return html.Div([
        dcc.Store(id=Neuron.FOCUS),
        dcc.Store(id=Neuron.DISC_RESULT),
        html.H3(id=Neuron.TITLE, children="Neuron level"),
        dcc.Checklist(id=Neuron.OVERLAY, options=[{"label": "heat maps over the input images", "value": "on"}],
                      value=[]),
        dcc.Graph(id=Neuron.HEATMAPS, config=GRAPH_CONFIG,
                  figure=empty_figure("Click a cluster in the treemap to see its feature map")),
        dcc.Graph(id=Neuron.PATCHES, config=GRAPH_CONFIG, style={"display": "none"}),
        html.Div([
            html.Button("Compute learned feature (discrepancy maps)", id=JobIds(Job.DISCREPANCY).button, n_clicks=0),
            html.Label(" occluder 8×8, stride "),
            dcc.Input(id=Neuron.STRIDE, type="number", value=4, min=STRIDES.start, max=STRIDES.stop - 1, step=1,
                      className="tiny-input"),
            cancel_button(Job.DISCREPANCY),
        ]),
        progress_box(Job.DISCREPANCY),
        error_line(Job.DISCREPANCY),
        dcc.Graph(id=Neuron.MAPS, config=GRAPH_CONFIG, style={"display": "none"}),
    ], className="panel")
