"""Images room: image sets and uploads, filters, thumbnails, selection, Generate."""

from __future__ import annotations

from dash import dcc, html

from app.config import DEMO_SET
from app.ids import Images, Job, JobIds
from app.jobs.tasks import MAX_STEPS
from app.jobs.widgets import cancel_button, error_line, progress_box


def layout(default_eps: str) -> html.Div:
    """The images room (left column, top)."""
    return html.Div([
        dcc.Store(id=Images.SELECTION, data=[]),
        html.H3("Images"),
        html.Div([
            dcc.Dropdown(id=Images.IMAGE_SET, value=DEMO_SET, clearable=False, searchable=False,
                         options=[{"label": "demo images", "value": DEMO_SET}]),
            dcc.Upload(id=Images.UPLOAD, multiple=True, className="upload", children=html.Div(
                ["Add your images: drop PNG/JPEG/BMP/WEBP files or a .zip here, or ", html.A("choose files")])),
            dcc.Loading(html.Div(id=Images.UPLOAD_REPORT, className="upload-report"), type="dot"),
        ], className="image-sets"),
        progress_box(Job.POOL),
        error_line(Job.POOL),
        html.Div([
            dcc.Dropdown(id=Images.FILTER_CLASS, placeholder="class (true or predicted)", clearable=True),
            dcc.RadioItems(id=Images.FILTER_KIND, value="all", inline=True, options=[
                {"label": "all", "value": "all"}, {"label": "normal", "value": "normal"},
                {"label": "adversarial", "value": "adversarial"}]),
            dcc.RadioItems(id=Images.FILTER_CORRECT, value="all", inline=True, options=[
                {"label": "any", "value": "all"}, {"label": "correct", "value": "correct"},
                {"label": "wrong", "value": "wrong"}]),
            dcc.Checklist(id=Images.SORT_SCORE, options=[{"label": "sort by adversarial score", "value": "score"}],
                          value=[]),
        ], className="filters"),
        html.Div(id=Images.LIST, className="image-list"),
        html.Div([
            html.Span(id=Images.SELECTION_INFO, children="no image selected"),
            html.Button("Clear", id=Images.CLEAR_SELECTION, n_clicks=0),
        ], className="selection-bar"),
        html.Details([
            html.Summary("Generate adversarial versions"),
            html.Div([
                dcc.Dropdown(id=Images.GEN_METHOD, value="mifgsm", clearable=False, options=[
                    {"label": "MI-FGSM", "value": "mifgsm"}, {"label": "FGSM", "value": "fgsm"},
                    {"label": "PGD-L∞", "value": "pgd"}, {"label": "C&W-L2", "value": "cw"},
                    {"label": "DeepFool", "value": "deepfool"}]),
                dcc.Input(id=Images.GEN_EPS, value=default_eps, debounce=True, placeholder="ε, e.g. 4/255",
                          className="small-input"),
                dcc.Input(id=Images.GEN_STEPS, type="number", value=10, min=1, max=MAX_STEPS, step=1,
                          className="small-input"),
                dcc.Dropdown(id=Images.GEN_SOURCE, placeholder="craft on (white-box: this model)", clearable=True),
                html.Button("Generate", id=JobIds(Job.GENERATE).button, n_clicks=0),
                cancel_button(Job.GENERATE),
            ], className="generate"),
            progress_box(Job.GENERATE),
            error_line(Job.GENERATE),
        ], className="generate-box"),
    ])
