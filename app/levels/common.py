"""What the rooms share: the Plotly toolbar configuration."""

from __future__ import annotations

from typing import Any

# every figure: no Plotly logo, SVG export from the toolbar
GRAPH_CONFIG: Any = {"displaylogo": False, "toImageButtonOptions": {"format": "svg"}}
