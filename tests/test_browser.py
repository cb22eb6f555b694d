"""The dashboard in headless Chromium (dash_duo): the whole demo flow on ResNet-20 / CIFAR-10.

Screenshots of each level are saved to ``test-artifacts/`` (``AEVIS_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ARTIFACTS = Path(os.environ.get("AEVIS_TEST_ARTIFACTS", "test-artifacts"))

CY = "document.getElementById('layer-graph')._cyreg.cy"


@pytest.fixture
def app(tmp_path):
    from app.config import AppConfig
    from app.server.factory import create_app

    return create_app(AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "cache", max_images=40))


def shot(dash_duo, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dash_duo.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_js(dash_duo, script: str, timeout: float = 30):
    end = time.time() + timeout
    while time.time() < end:
        value = dash_duo.driver.execute_script(script)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for: {script}")


def analyze_cats(dash_duo) -> None:
    dash_duo.wait_for_element(".thumb", timeout=120)
    dash_duo.select_dcc_dropdown("#preset", value="cat: normal vs adversarial")
    dash_duo.wait_for_text_to_equal("#groups-view .group b", "cat: normal", timeout=10)
    dash_duo.find_element("#analyze").click()
    dash_duo.wait_for_contains_text("#analysis-summary", "diverging point", timeout=120)


def test_demo_flow(dash_duo, app):
    dash_duo.start_server(app)
    dash_duo.wait_for_element(".thumb", timeout=120)
    assert len(dash_duo.find_elements(".thumb")) == 80
    shot(dash_duo, "01-image-list")
    # selecting thumbnails and adding them as a group
    thumbs = dash_duo.find_elements(".thumb")
    thumbs[0].click()
    thumbs[1].click()
    dash_duo.wait_for_text_to_equal("#selection-info", "2 selected", timeout=10)
    analyze_cats(dash_duo)
    # layer level: the cut graph with dot plots is drawn
    n_nodes = wait_js(dash_duo, f"return {CY} && {CY}.nodes().length", timeout=30)
    assert 10 <= n_nodes <= 60
    shot(dash_duo, "02-layer-level")
    # the overview mirrors the graph; a click there zooms the main view to that node
    ov = "document.getElementById('layer-overview')._cyreg.cy"
    assert wait_js(dash_duo, f"return {ov} && {ov}.nodes().length") == n_nodes
    zoom0 = dash_duo.driver.execute_script(f"return {CY}.zoom()")
    dash_duo.driver.execute_script(f"{ov}.nodes()[3].emit('tap')")
    wait_js(dash_duo, f"return Math.abs({CY}.zoom() - 1.2) < 1e-6 && Math.abs({CY}.zoom() - {zoom0}) > 1e-6")
    # expand a group node
    group = wait_js(dash_duo, f"var g={CY}.nodes().filter(n => n.data('is_group')); return g.length && g[0].id()")
    dash_duo.driver.execute_script(f"{CY}.getElementById(arguments[0]).emit('tap')", group)
    wait_js(dash_duo, f"return {CY}.nodes().length > {n_nodes}")
    # select a layer: the treemap of its feature maps appears (take the last ReLU layer whose
    # datapaths are not empty: a layer may have no critical map at all)
    candidates = dash_duo.driver.execute_script(
        f"return {CY}.nodes().filter(n => !n.data('is_group') && n.id().includes('relu')).map(n => n.id())")
    layer = None
    for cand in reversed(candidates):
        dash_duo.driver.execute_script(f"{CY}.getElementById(arguments[0]).emit('tap')", cand)
        dash_duo.wait_for_contains_text("#fmap-title", cand.upper(), timeout=30)  # h3 is upper-cased by CSS
        if wait_js(dash_duo, "var g=document.querySelector('#fmap-treemap .js-plotly-plot');"
                             " return g && g.data && g.data[0] && g.data[0].x ? g.data[0].x.length + 1 : 0") > 1:
            layer = cand
            break
    assert layer is not None, "no ReLU layer with a non-empty datapath"
    dash_duo.find_element("#faithfulness").click()
    wait_js(dash_duo, "var g=document.querySelector('#faithfulness-curves .js-plotly-plot');"
                      " return g && g.data && g.data.length >= 3", timeout=120)
    shot(dash_duo, "03-feature-map-level")
    # click a cluster: heat maps of that feature map
    click = ("var g=document.querySelector('#fmap-treemap .js-plotly-plot');"
             "var t=g.data[0]; g.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: 0, pointIndex: 0,"
             " x: t.x[0], y: t.y[0], customdata: t.customdata[0]}]});")
    end = time.time() + 60  # re-emit until the graph's handlers have picked it up (re-renders race)
    while "#" not in dash_duo.find_element("#neuron-title").text and time.time() < end:
        dash_duo.driver.execute_script(click)
        time.sleep(1.5)
    dash_duo.wait_for_contains_text("#neuron-title", "#", timeout=5)
    wait_js(dash_duo, "var g=document.querySelector('#neuron-heatmaps .js-plotly-plot');"
                      " return g && g.data && g.data.filter(t => t.type === 'heatmap').length >= 2")
    wait_js(dash_duo, "var g=document.querySelector('#top-patches .js-plotly-plot');"
                      " return g && g.data && g.data.filter(t => t.type === 'image').length >= 3")
    # discrepancy map (background job with progress)
    dash_duo.find_element("#discrepancy").click()
    wait_js(dash_duo, "var g=document.querySelector('#discrepancy-maps .js-plotly-plot');"
                      " return g && g.data && g.data.filter(t => t.type === 'image').length >= 1", timeout=120)
    dash_duo.driver.execute_script("document.getElementById('neuron-title').scrollIntoView()")
    shot(dash_duo, "04-neuron-level")
    url = dash_duo.driver.current_url
    assert "view=" in url  # the view is in the URL
    # pin the layer, pick another one: both treemaps side by side
    dash_duo.find_element("#pin-layer").click()
    other = wait_js(dash_duo, f"var l={CY}.nodes().filter(n => !n.data('is_group') && n.id() !== arguments[0]"
                              " && n.id().includes('conv')); return l.length && l[0].id()".replace(
                                  "arguments[0]", repr(layer)))
    dash_duo.driver.execute_script(f"{CY}.getElementById(arguments[0]).emit('tap')", other)
    wait_js(dash_duo, "var g=document.querySelector('#fmap-treemap .js-plotly-plot');"
                      " return g && g.data && new Set(g.data[0].customdata.map(c => c.layer)).size === 2")
    dash_duo.driver.execute_script("document.getElementById('fmap-title').scrollIntoView()")
    shot(dash_duo, "06-side-by-side")
    # a colleague opening the URL gets the same groups, analysis and layer
    dash_duo.driver.get(url)
    try:
        dash_duo.wait_for_contains_text("#analysis-summary", "diverging point", timeout=120)
    finally:
        shot(dash_duo, "07-shared-url")
    dash_duo.wait_for_contains_text("#fmap-title", layer.upper(), timeout=30)
    assert dash_duo.get_logs() == []


def test_failing_job_shows_its_error(dash_duo, app):
    dash_duo.start_server(app)
    dash_duo.wait_for_element(".thumb", timeout=120)
    dash_duo.find_elements(".thumb")[0].click()
    dash_duo.wait_for_text_to_equal("#selection-info", "1 selected", timeout=10)
    dash_duo.find_element("#add-group").click()  # one group only: Analyze must refuse with a message
    dash_duo.wait_for_text_to_equal("#groups-view .group b", "G1", timeout=10)
    dash_duo.find_element("#analyze").click()
    dash_duo.wait_for_contains_text("#analyze-error", "choose 2 to 4 groups", timeout=60)
    # generating adversarial versions: a bad eps is refused in one line, FGSM replaces the twins
    dash_duo.find_element(".generate-box summary").click()
    eps = dash_duo.find_element("#gen-eps")
    eps.clear()
    eps.send_keys("lots\n")
    dash_duo.find_element("#generate").click()
    dash_duo.wait_for_contains_text("#generate-error", "eps", timeout=60)
    shot(dash_duo, "05-generate-error")
    dash_duo.select_dcc_dropdown("#gen-method", value="FGSM")  # option text
    eps.clear()
    eps.send_keys("8/255\n")
    dash_duo.find_element("#generate").click()
    dash_duo.wait_for_contains_text("#model-info", "+ 40 FGSM twins", timeout=120)
    assert dash_duo.find_element("#generate-error").text == ""
    assert dash_duo.get_logs() == []


def test_killed_job_shows_failure_and_retry_works(dash_duo, app):
    import psutil

    dash_duo.start_server(app)
    dash_duo.wait_for_element(".thumb", timeout=120)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    dash_duo.find_element(".generate-box summary").click()
    dash_duo.select_dcc_dropdown("#gen-method", value="C&W-L2")
    steps = dash_duo.find_element("#gen-steps")
    steps.clear()
    steps.send_keys("200")
    dash_duo.find_element("#generate").click()
    dash_duo.wait_for_element("#generate-progress-box[style*='flex']", timeout=30)
    jobs = wait_js_pid(me, before)
    for p in jobs:
        p.kill()
    dash_duo.wait_for_contains_text("#generate-error", "stopped unexpectedly", timeout=60)
    assert dash_duo.find_element("#generate").is_enabled()
    # retry (a fast attack this time) works and replaces the twins
    dash_duo.select_dcc_dropdown("#gen-method", value="FGSM")
    dash_duo.find_element("#generate").click()
    dash_duo.wait_for_contains_text("#model-info", "+ 40 FGSM twins", timeout=120)
    dash_duo.wait_for_text_to_equal("#generate-error", "", timeout=10)
    assert dash_duo.get_logs() == []


def wait_js_pid(me, before, timeout: float = 30):
    end = time.time() + timeout
    while time.time() < end:
        new = [p for p in me.children(recursive=True) if p.pid not in before and p.status() != "zombie"]
        if new:
            return new
        time.sleep(0.2)
    raise AssertionError("no job process appeared")


def test_killed_extraction_shows_failure_nothing_lost_and_retry_works(dash_duo, app):
    import psutil

    dash_duo.start_server(app)
    dash_duo.wait_for_element(".thumb", timeout=120)
    dash_duo.select_dcc_dropdown("#preset", value="cat: normal vs adversarial")
    dash_duo.wait_for_text_to_equal("#groups-view .group b", "cat: normal", timeout=10)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    dash_duo.find_element("#analyze").click()
    for p in wait_js_pid(me, before):  # the Analyze job process, killed mid-extraction
        p.kill()
    dash_duo.wait_for_contains_text("#analyze-error", "stopped unexpectedly", timeout=60)
    # nothing else is lost: images, groups and the button are still there
    assert len(dash_duo.find_elements(".thumb")) == 80
    assert len(dash_duo.find_elements("#groups-view .group")) == 2
    assert dash_duo.find_element("#analyze").is_enabled()
    dash_duo.find_element("#analyze").click()  # Retry
    dash_duo.wait_for_contains_text("#analysis-summary", "diverging point", timeout=120)
    dash_duo.wait_for_text_to_equal("#analyze-error", "", timeout=10)
    assert dash_duo.get_logs() == []
