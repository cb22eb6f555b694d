"""Groups room: selection to groups, presets, Analyze and the analysis summary."""

from __future__ import annotations

from dash import dcc, html

from app.ids import Groups, Job, JobIds
from app.jobs.widgets import cancel_button, error_line, progress_box
from app.services.analyses import METHOD_LABELS


def layout() -> html.Div:
    """The groups room (left column, below the images)."""
    return html.Div([
        dcc.Store(id=Groups.GROUPS, data={}),
        html.Div([
            dcc.Input(id=Groups.NAME, placeholder="group name", debounce=True, className="group-name", maxLength=80),
            html.Button("Add selection as group", id=Groups.ADD, n_clicks=0),
            html.Button("Compare with normal images of its predicted class", id=Groups.COMPARE_PREDICTED,
                        n_clicks=0, disabled=True),
        ], className="selection-bar"),
        html.H3("Groups"),
        dcc.Dropdown(id=Groups.PRESET, placeholder="presets…", clearable=True),
        html.Div(id=Groups.HINT, className="hint"),
        html.Div(id=Groups.VIEW, className="groups"),
        html.Button("Clear groups", id=Groups.CLEAR, n_clicks=0),
        html.Div([
            html.Label("datapath"),
            dcc.RadioItems(id=Groups.METHOD, value="qp", inline=True,
                           options=[{"label": label, "value": value} for value, label in METHOD_LABELS.items()]),
        ], className="method"),
        html.Div([
            html.Button("Analyze", id=JobIds(Job.ANALYZE).button, n_clicks=0, className="primary"),
            cancel_button(Job.ANALYZE),
        ], className="analyze-bar"),
        progress_box(Job.ANALYZE),
        error_line(Job.ANALYZE),
        html.Div(id=Groups.SUMMARY, className="summary"),
    ])
