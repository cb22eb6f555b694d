"""Page layout: header, image list and groups (left), the three analysis levels (right)."""

from __future__ import annotations

from typing import Any

import dash_cytoscape as cyto
from dash import dcc, html

from app.config import AppConfig

GRAPH_CONFIG: Any = {"displaylogo": False, "toImageButtonOptions": {"format": "svg"}}


def _progress(prefix: str) -> html.Div:
    return html.Div([
        html.Progress(id=f"{prefix}-progress", value="0", max="1", className="progress"),
        html.Span(id=f"{prefix}-status", className="status"),
    ], id=f"{prefix}-progress-box", className="progress-box", style={"display": "none"})


def controls_left() -> html.Div:
    """Image list with filters, selection and groups, Analyze."""
    return html.Div([
        html.H3("Images"),
        html.Div([
            dcc.Dropdown(id="image-set", value="demo", clearable=False, searchable=False,
                         options=[{"label": "demo images", "value": "demo"}]),
            dcc.Upload(id="upload", multiple=True, className="upload", children=html.Div(
                ["Add your images: drop PNG/JPEG/BMP/WEBP files or a .zip here, or ", html.A("choose files")])),
            dcc.Loading(html.Div(id="upload-report", className="upload-report"), type="dot"),
        ], className="image-sets"),
        html.Div([
            dcc.Dropdown(id="filter-class", placeholder="class (true or predicted)", clearable=True),
            dcc.RadioItems(id="filter-kind", value="all", inline=True, options=[
                {"label": "all", "value": "all"}, {"label": "normal", "value": "normal"},
                {"label": "adversarial", "value": "adversarial"}]),
            dcc.RadioItems(id="filter-correct", value="all", inline=True, options=[
                {"label": "any", "value": "all"}, {"label": "correct", "value": "correct"},
                {"label": "wrong", "value": "wrong"}]),
            dcc.Checklist(id="sort-score", options=[{"label": "sort by adversarial score", "value": "score"}],
                          value=[]),
        ], className="filters"),
        html.Div(id="image-list", className="image-list"),
        html.Div([
            html.Span(id="selection-info", children="no image selected"),
            dcc.Input(id="group-name", placeholder="group name", debounce=True, className="group-name"),
            html.Button("Add selection as group", id="add-group", n_clicks=0),
            html.Button("Compare with normal images of its predicted class", id="compare-predicted",
                        n_clicks=0, disabled=True),
            html.Button("Clear", id="clear-selection", n_clicks=0),
        ], className="selection-bar"),
        html.Details([
            html.Summary("Generate adversarial versions"),
            html.Div([
                dcc.Dropdown(id="gen-method", value="mifgsm", clearable=False, options=[
                    {"label": "MI-FGSM", "value": "mifgsm"}, {"label": "FGSM", "value": "fgsm"},
                    {"label": "PGD-L∞", "value": "pgd"}, {"label": "C&W-L2", "value": "cw"},
                    {"label": "DeepFool", "value": "deepfool"}]),
                dcc.Input(id="gen-eps", value="4/255", debounce=True, placeholder="ε, e.g. 4/255",
                          className="small-input"),
                dcc.Input(id="gen-steps", type="number", value=10, min=1, max=200, className="small-input"),
                dcc.Dropdown(id="gen-source", placeholder="craft on (white-box: this model)", clearable=True),
                html.Button("Generate", id="generate", n_clicks=0),
            ], className="generate"),
            _progress("generate"),
            html.Div(id="generate-error", className="error"),
        ], className="generate-box"),
        html.H3("Groups"),
        dcc.Dropdown(id="preset", placeholder="presets…", clearable=True),
        html.Div(id="groups-view", className="groups"),
        html.Button("Clear groups", id="clear-groups", n_clicks=0),
        html.Div([
            html.Button("Analyze", id="analyze", n_clicks=0, className="primary"),
            html.Button("Cancel", id="cancel-analyze", n_clicks=0, disabled=True),
        ], className="analyze-bar"),
        _progress("analyze"),
        html.Div(id="analyze-error", className="error"),
        html.Div(id="analysis-summary", className="summary"),
    ], className="left")


def layer_level() -> html.Div:
    """R2: the segmented layer DAG with dot plots."""
    return html.Div([
        html.H3("Layer level"),
        html.Div([
            html.Label("statistic"),
            dcc.RadioItems(id="stat", value="similarity", inline=True, options=[
                {"label": "activation similarity (adv. vs normal)", "value": "similarity"},
                {"label": "mean activation", "value": "activation"},
                {"label": "Jaccard of datapaths", "value": "jaccard"}]),
            html.Label("λ (row cut penalty)"),
            dcc.Slider(id="lam", min=0, max=4, step=0.25, value=1, marks={0: "0", 1: "1", 2: "2", 4: "4"}),
            html.Button("Fit", id="fit-graph", n_clicks=0),
            html.Button("Collapse group of the selected layer", id="collapse-group", n_clicks=0),
        ], className="controls"),
        html.Div("Click a group (double border) to expand it; click a layer to open its feature maps. "
                 "Orange border: diverging point; grey band: noise control (5–95 %).", className="legend"),
        html.Div([
            cyto.Cytoscape(id="layer-graph", elements=[], layout={"name": "preset", "fit": True},
                           style={"width": "100%", "height": "520px"}, minZoom=0.2, maxZoom=3,
                           stylesheet=[], boxSelectionEnabled=False),
            html.Div([
                html.Div("overview — click to zoom there", className="overview-title"),
                cyto.Cytoscape(id="layer-overview", elements=[], layout={"name": "preset", "fit": True},
                               style={"width": "220px", "height": "140px"}, userZoomingEnabled=False,
                               userPanningEnabled=False, autoungrabify=True, boxSelectionEnabled=False,
                               stylesheet=[]),
            ], className="overview"),
        ], className="graph-wrap"),
        html.Div(id="layer-legend", className="legend"),
    ], className="panel")


def fmap_level() -> html.Div:
    """R3/R4: Euler diagram as a treemap of datapath maps, K-means clusters."""
    return html.Div([
        html.H3(id="fmap-title", children="Feature-map level"),
        html.Div([
            html.Label("colour"),
            dcc.RadioItems(id="fmap-color", value="importance", inline=True, options=[
                {"label": "importance z", "value": "importance"},
                {"label": "activation", "value": "activation"},
                {"label": "activation difference", "value": "difference"}]),
            html.Label("clusters k"),
            dcc.Slider(id="fmap-k", min=1, max=12, step=1, value=4),
            html.Button("Pin this layer (compare side by side)", id="pin-layer", n_clicks=0),
            html.Button("Unpin all", id="unpin-layers", n_clicks=0),
        ], className="controls"),
        dcc.Graph(id="fmap-treemap", config=GRAPH_CONFIG, style={"height": "420px"}),
        html.Div([
            html.Button("Faithfulness of this layer (keep only the top-k maps)", id="faithfulness", n_clicks=0),
            html.Button("Cancel", id="cancel-faithfulness", n_clicks=0, disabled=True),
        ]),
        _progress("faithfulness"),
        html.Div(id="faithfulness-error", className="error"),
        dcc.Graph(id="faithfulness-curves", config=GRAPH_CONFIG, style={"display": "none"}),
    ], className="panel")


def neuron_level() -> html.Div:
    """R3: activation heat maps and discrepancy maps of one feature map."""
    return html.Div([
        html.H3(id="neuron-title", children="Neuron level"),
        dcc.Checklist(id="overlay", options=[{"label": "heat maps over the input images", "value": "on"}],
                      value=[]),
        dcc.Graph(id="neuron-heatmaps", config=GRAPH_CONFIG),
        dcc.Graph(id="top-patches", config=GRAPH_CONFIG, style={"display": "none"}),
        html.Div([
            html.Button("Compute learned feature (discrepancy maps)", id="discrepancy", n_clicks=0),
            html.Label(" occluder 8×8, stride "),
            dcc.Input(id="disc-stride", type="number", value=4, min=1, max=16, step=1, className="tiny-input"),
            html.Button("Cancel", id="cancel-discrepancy", n_clicks=0, disabled=True),
        ]),
        _progress("discrepancy"),
        html.Div(id="discrepancy-error", className="error"),
        dcc.Graph(id="discrepancy-maps", config=GRAPH_CONFIG),
    ], className="panel")


def build_layout(config: AppConfig, notice: str | None = None) -> html.Div:
    """The whole page (``notice``: a server-side problem shown in a banner, e.g. an unwritable cache)."""
    return html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="pool-key"),
        dcc.Store(id="selection", data=[]),
        dcc.Store(id="groups", data={}),
        dcc.Store(id="analysis-key"),
        dcc.Store(id="cut"),
        dcc.Store(id="focus-layer"),
        dcc.Store(id="focus-map"),
        dcc.Store(id="pinned", data=[]),
        dcc.Store(id="url-focus"),
        dcc.Download(id="download"),
        html.Header([
            html.H1("AEVis"),
            html.Span("why does the network misclassify adversarial examples?", className="subtitle"),
            html.Span(id="model-info", className="model-info"),
            html.Button("Download datapath JSON", id="export-json", n_clicks=0),
        ]),
        html.Div(notice or "", id="notice", className="notice" if notice else ""),
        _progress("pool"),
        html.Div(id="pool-error", className="error"),
        html.Div([
            controls_left(),
            html.Div([layer_level(), fmap_level(), neuron_level()], className="right"),
        ], className="main"),
    ])
