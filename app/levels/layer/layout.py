"""Layer room: the segmented layer DAG with dot plots and its overview."""

from __future__ import annotations

import dash_cytoscape as cyto
from dash import dcc, html

from app.ids import Layer


def layout() -> html.Div:
    """The layer level panel."""
    return html.Div([
        dcc.Store(id=Layer.CUT),
        dcc.Store(id=Layer.FOCUS),
        html.H3(id=Layer.TITLE, children="Layer level"),
        html.Div([
            html.Label("statistic"),
            dcc.RadioItems(id=Layer.STAT, value="similarity", inline=True, options=[
                {"label": "activation similarity (adv. vs normal)", "value": "similarity"},
                {"label": "mean activation", "value": "activation"},
                {"label": "Jaccard of datapaths", "value": "jaccard"}]),
            html.Label("λ (row cut penalty)"),
            dcc.Slider(id=Layer.LAM, min=0, max=4, step=0.25, value=1, marks={0: "0", 1: "1", 2: "2", 4: "4"}),
            html.Button("Fit", id=Layer.FIT, n_clicks=0),
            html.Button("Collapse group of the selected layer", id=Layer.COLLAPSE, n_clicks=0),
        ], className="controls"),
        html.Div("Click a group (double border) to expand it; click a layer to open its feature maps. "
                 "Orange border: diverging point; blue: the selected layer; grey band: the control (5–95 %).",
                 className="legend"),
        html.Div([
            cyto.Cytoscape(id=Layer.GRAPH, elements=[], layout={"name": "preset", "fit": True},
                           style={"width": "100%", "height": "520px"}, minZoom=0.2, maxZoom=3,
                           stylesheet=[], boxSelectionEnabled=False),
            html.Div([
                html.Div("overview — click to zoom there", className="overview-title"),
                cyto.Cytoscape(id=Layer.OVERVIEW, elements=[], layout={"name": "preset", "fit": True},
                               style={"width": "220px", "height": "140px"}, userZoomingEnabled=False,
                               userPanningEnabled=False, autoungrabify=True, boxSelectionEnabled=False,
                               stylesheet=[]),
            ], className="overview"),
        ], className="graph-wrap"),
        html.Div(id=Layer.LEGEND, className="legend"),
    ], className="panel")
