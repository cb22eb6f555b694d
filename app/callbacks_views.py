"""View callbacks (layer, feature-map and neuron levels): read cached results only."""

from __future__ import annotations

from dash import Dash

from app.resources import Resources


def register_views(app: Dash, res: Resources) -> None:
    """Attach the view callbacks (filled in as the views land)."""
