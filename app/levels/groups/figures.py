"""Groups room, pure: the group list and the analysis summary as Dash components."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dash import html

from aevis_core.analysis import Analysis
from aevis_core.faithfulness import describe
from app.ids import remove_group_id


def groups_view(groups: Mapping[str, Sequence[str]]) -> list[html.Div]:
    """One line per group: name, size, remove button."""
    return [html.Div([html.B(name), html.Span(f" {len(ids)} images "),
                      html.Button("×", id=remove_group_id(name), n_clicks=0, className="rm", title=f"remove {name}")],
                     className="group") for name, ids in groups.items()]


def summary(a: Analysis) -> list[html.Div]:
    """Groups, diverging point (with its control), per analysis."""
    lines = [html.Div(f"{name}: {len(ids)} images") for name, ids in a.groups.items()]
    lines.append(html.Div(f"datapath: {describe(next(iter(a.datapaths.values())).config)}", className="hint"))
    d = a.divergence
    if d is not None:
        lines.append(html.Div(f"diverging point: {d.layer or 'none found'}", className="diverging"))
        ev = d.evidence.get(d.layer) if d.layer else None
        if ev is not None:
            lines.append(html.Div(f"similarity drop {ev.effect:.3f} (95 % CI {ev.ci_low:.3f}–{ev.ci_high:.3f}), "
                                  f"p = {ev.p_value:.3g} over {d.n} pair(s) × {d.draws} control draws",
                                  className="evidence"))
        elif d.candidate:
            lines.append(html.Div(f"first drop at {d.candidate}, but the whole-network test does not reject "
                                  f"(p = {d.gate_p:.3g})", className="hint"))
        lines.append(html.Div(f"control: {d.control}, rms {d.rms_control_255:.1f}/255 vs adversarial "
                              f"{d.rms_adv_255:.1f}/255", className="hint"))
    elif a.pair is None:
        lines.append(html.Div("no adversarial twins of another group's images: no diverging point to look for",
                              className="hint"))
    return lines
