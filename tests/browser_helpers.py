"""Helpers of the browser tests: screenshots, waiting on page state, clicking into the views."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

ARTIFACTS = Path(os.environ.get("AEVIS_TEST_ARTIFACTS", "test-artifacts"))
CY = "document.getElementById('layer-graph')._cyreg.cy"
TREEMAP = "document.querySelector('#fmap-treemap .js-plotly-plot')"
N_CLUSTERS = f"var g={TREEMAP}; return g && g.data && g.data[0] && g.data[0].x ? g.data[0].x.length + 1 : 0"


def shot(dash_duo: Any, name: str) -> None:
    """Save a screenshot to test-artifacts/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dash_duo.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_js(dash_duo: Any, script: str, timeout: float = 30, *args: Any) -> Any:
    """Until ``script`` returns something truthy; that value."""
    end = time.time() + timeout
    while time.time() < end:
        value = dash_duo.driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for: {script}")


def text(dash_duo: Any, element_id: str) -> str:
    """textContent of an element (not upper-cased by CSS)."""
    return str(dash_duo.driver.execute_script(f"var e=document.getElementById('{element_id}');"
                                              " return e ? e.textContent : ''"))


def wait_text(dash_duo: Any, element_id: str, needle: str, timeout: float = 60) -> str:
    """Until the element's textContent contains ``needle``."""
    return str(wait_js(dash_duo, f"var e=document.getElementById('{element_id}'); var t=e && e.textContent;"
                                 " return t && t.includes(arguments[0]) && t", timeout, needle))


def analyze(dash_duo: Any, timeout: float = 180) -> None:
    """Press Analyze and wait for the summary of the new analysis."""
    dash_duo.find_element("#analyze").click()
    wait_js(dash_duo, "var t=document.getElementById('context-info').textContent;"
                      " return t.startsWith('Showing the analysis of')", timeout)


def open_layer_with_clusters(dash_duo: Any) -> str:
    """The focused layer if its treemap has clusters, else the last ReLU layer that has some."""
    title = wait_text(dash_duo, "fmap-title", "·", 60)
    if wait_js(dash_duo, N_CLUSTERS, 15) > 1:
        return title.split("·")[1].strip()
    candidates = dash_duo.driver.execute_script(
        f"return {CY}.nodes().filter(n => !n.data('is_group') && n.id().includes('relu')).map(n => n.id())")
    for cand in reversed(candidates):
        dash_duo.driver.execute_script(f"{CY}.getElementById(arguments[0]).emit('tap')", cand)
        wait_text(dash_duo, "fmap-title", cand, 30)
        if wait_js(dash_duo, N_CLUSTERS, 15) > 1:
            return str(cand)
    raise AssertionError("no layer with a non-empty datapath")


def click_cluster(dash_duo: Any, timeout: float = 60) -> None:
    """Click the first cluster of the treemap (re-emitted until the neuron level follows)."""
    click = (f"var g={TREEMAP}; var t=g.data[0]; g.emit('plotly_click', {{points: [{{curveNumber: 0,"
             " pointNumber: 0, pointIndex: 0, x: t.x[0], y: t.y[0], customdata: t.customdata[0]}]});")
    end = time.time() + timeout
    while "#" not in text(dash_duo, "neuron-title") and time.time() < end:
        dash_duo.driver.execute_script(click)
        time.sleep(1.5)
    assert "#" in text(dash_duo, "neuron-title")
    wait_js(dash_duo, "var g=document.querySelector('#neuron-heatmaps .js-plotly-plot');"
                      " return g && g.data && g.data.filter(t => t.type === 'heatmap').length >= 1", 60)


def learned_feature(dash_duo: Any, timeout: float = 180) -> None:
    """Compute the learned feature of the selected map and wait for the discrepancy maps."""
    dash_duo.find_element("#discrepancy").click()
    wait_js(dash_duo, "var e=document.getElementById('discrepancy-maps');"
                      " var g=e.querySelector('.js-plotly-plot'); return e.style.display !== 'none'"
                      " && g && g.data && g.data.filter(t => t.type === 'image').length >= 1", timeout)


def panels_cleared(dash_duo: Any, timeout: float = 30) -> bool:
    """Until no panel shows an analysis: treemap hint, empty neuron level, hidden learned feature, no context."""
    return bool(wait_js(dash_duo,
        "return document.getElementById('context-info').textContent === ''"
        " && document.getElementById('fmap-treemap').textContent.includes('Analyze two or more groups')"
        " && document.getElementById('neuron-title').textContent === 'Neuron level'"
        " && document.getElementById('discrepancy-maps').style.display === 'none'"
        f" && {CY}.nodes().length === 0", timeout))
