"""Every panel follows the analysis it shows (issue: panels outlived their analysis).

One browser session through the transitions a researcher makes: re-analyse another preset, remove a
group, open a shared URL, switch to an uploaded image set. After each, the panels of the previous
analysis are gone (or name the new one), and a cluster click plus "Compute learned feature" work;
the console stays clean (``get_logs() == []``) and no request answers 500.
"""

from __future__ import annotations

import shutil

import pytest

from aevis_core.data import demo_path
from tests.browser_helpers import (
    CY,
    analyze,
    click_cluster,
    learned_feature,
    open_layer_with_clusters,
    panels_cleared,
    shot,
    text,
    wait_js,
    wait_text,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def app(tmp_path):
    from app.config import AppConfig
    from app.server.factory import create_app

    return create_app(AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "cache", max_images=40))


def pick_preset(dash_duo, name: str) -> None:
    dash_duo.select_dcc_dropdown("#preset", value=name)
    wait_text(dash_duo, "groups-view", name.split(":")[0] + ": normal", 20)


def explore(dash_duo, title: str, name: str) -> None:
    """The panels name analysis ``title``; a cluster click and its learned feature work."""
    wait_text(dash_duo, "context-info", title, 60)
    wait_text(dash_duo, "layer-title", title, 60)
    open_layer_with_clusters(dash_duo)
    assert title in text(dash_duo, "fmap-title")
    click_cluster(dash_duo)
    assert title in text(dash_duo, "neuron-title")
    learned_feature(dash_duo)
    shot(dash_duo, name)


def test_panels_follow_the_analysis_through_every_transition(dash_duo, app, tmp_path):
    dash_duo.start_server(app)
    dash_duo.wait_for_element(".thumb", timeout=180)
    assert panels_cleared(dash_duo)

    # 1. first analysis
    pick_preset(dash_duo, "cat: normal vs adversarial")
    analyze(dash_duo)
    explore(dash_duo, "cat: normal vs cat: adversarial", "state-01-cat")
    old_neuron = text(dash_duo, "neuron-title")

    # 2. re-analyse: new groups clear every panel at once, Analyze fills them for the new groups
    pick_preset(dash_duo, "bird: normal vs adversarial")
    wait_js(dash_duo, "return document.getElementById('context-info').textContent === ''", 30)
    assert panels_cleared(dash_duo)
    analyze(dash_duo)
    explore(dash_duo, "bird: normal vs bird: adversarial", "state-02-reanalysed")
    assert text(dash_duo, "neuron-title") != old_neuron

    # 3. remove a group: three groups analysed, then one removed -> cleared; Analyze again
    thumbs = dash_duo.find_elements("#image-list .thumb")
    thumbs[0].click()
    thumbs[1].click()
    dash_duo.wait_for_text_to_equal("#selection-info", "2 selected", timeout=20)
    dash_duo.find_element("#group-name").send_keys("extra\n")
    dash_duo.find_element("#add-group").click()
    wait_text(dash_duo, "groups-view", "extra", 20)
    analyze(dash_duo)
    wait_text(dash_duo, "context-info", "extra", 60)
    dash_duo.driver.execute_script(
        "Array.from(document.querySelectorAll('#groups-view .group'))"
        ".find(g => g.textContent.includes('extra')).querySelector('button').click()")
    wait_js(dash_duo, "return !document.getElementById('groups-view').textContent.includes('extra')", 20)
    wait_js(dash_duo, "return document.getElementById('context-info').textContent === ''", 30)
    assert panels_cleared(dash_duo)
    analyze(dash_duo)
    explore(dash_duo, "bird: normal vs bird: adversarial", "state-03-group-removed")

    # 4. open the shared URL: the same groups, analysis, layer and feature map come back
    url = dash_duo.driver.current_url
    assert "view=" in url
    layer = text(dash_duo, "fmap-title").split("·")[1].strip()
    neuron = text(dash_duo, "neuron-title")
    dash_duo.driver.get(url)
    wait_text(dash_duo, "context-info", "bird: normal vs bird: adversarial", 180)
    wait_text(dash_duo, "fmap-title", layer, 60)
    wait_js(dash_duo, "return document.getElementById('neuron-title').textContent === arguments[0]", 60, neuron)
    click_cluster(dash_duo)
    learned_feature(dash_duo)
    shot(dash_duo, "state-04-shared-url")

    # 5. switch the image set (an upload): the demo analysis is gone, the new set is analysed
    up = tmp_path / "mine"
    up.mkdir()
    for f in sorted((demo_path("cifar10") / "cat").iterdir())[:6]:
        shutil.copy(f, up / f"my-{f.name}")
    dash_duo.find_element("#upload input[type=file]").send_keys("\n".join(str(p) for p in sorted(up.iterdir())))
    wait_text(dash_duo, "upload-report", "6 image(s) accepted", 60)
    wait_text(dash_duo, "model-info", "6 images + 6", 180)
    assert panels_cleared(dash_duo)
    assert text(dash_duo, "groups-view").startswith("Select images")  # demo groups do not follow
    for kind, name in (("NORMAL", "mine"), ("ADV", "mine adv")):
        for el in dash_duo.find_elements("#image-list .thumb"):
            if el.find_element("css selector", ".badge").text == kind:
                el.click()
        dash_duo.wait_for_text_to_equal("#selection-info", "6 selected", timeout=20)
        box = dash_duo.find_element("#group-name")
        box.clear()
        box.send_keys(name + "\n")
        dash_duo.find_element("#add-group").click()
        wait_text(dash_duo, "groups-view", name, 20)
        dash_duo.find_element("#clear-selection").click()
    analyze(dash_duo)
    explore(dash_duo, "mine vs mine adv", "state-05-uploaded-set")
    assert wait_js(dash_duo, f"return {CY}.nodes().length") > 5
    assert dash_duo.get_logs() == []
