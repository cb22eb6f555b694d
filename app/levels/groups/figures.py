"""Groups room, pure: the group list and the analysis summary as Dash components."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dash import html

from aevis_core.analysis import Analysis
from app.ids import remove_group_id


def groups_view(groups: Mapping[str, Sequence[str]]) -> list[html.Div]:
    """One line per group: name, size, remove button."""
    return [html.Div([html.B(name), html.Span(f" {len(ids)} images "),
                      html.Button("×", id=remove_group_id(name), n_clicks=0, className="rm", title=f"remove {name}")],
                     className="group") for name, ids in groups.items()]


def summary(a: Analysis) -> list[html.Div]:
    """Groups, diverging point (with its control), per analysis."""
    lines = [html.Div(f"{name}: {len(ids)} images") for name, ids in a.groups.items()]
    if a.divergence is not None:
        lines.append(html.Div(f"diverging point: {a.divergence.layer or 'none found'}", className="diverging"))
    elif a.pair is None:
        lines.append(html.Div("no adversarial twins of another group's images: no diverging point to look for",
                              className="hint"))
    return lines
