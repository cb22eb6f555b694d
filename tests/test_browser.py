"""The dashboard in headless Chromium (dash_duo): the whole demo flow on ResNet-20 / CIFAR-10."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ARTIFACTS = Path(os.environ.get("AEVIS_TEST_ARTIFACTS", "test-artifacts"))


@pytest.fixture
def app(tmp_path):
    from app.config import AppConfig
    from app.factory import create_app

    return create_app(AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "cache", max_images=40))


def shot(dash_duo, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dash_duo.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_demo_flow(dash_duo, app):
    dash_duo.start_server(app)
    dash_duo.wait_for_element(".thumb", timeout=120)
    assert len(dash_duo.find_elements(".thumb")) == 80
    shot(dash_duo, "01-image-list")
    # choose the preset groups "cat: normal vs adversarial"
    dash_duo.select_dcc_dropdown("#preset", value="cat: normal vs adversarial")
    dash_duo.wait_for_text_to_equal("#groups-view .group b", "cat: normal", timeout=10)
    dash_duo.find_element("#analyze").click()
    dash_duo.wait_for_contains_text("#analysis-summary", "diverging point", timeout=120)
    shot(dash_duo, "02-analysis")
    assert dash_duo.get_logs() == []
