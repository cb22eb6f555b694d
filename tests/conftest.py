"""Shared fixtures: cached zoo models and demo sets; Chrome options for dash_duo."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("AEVIS_DEVICE", "cpu")

try:  # no tqdm monitor thread: forked job processes would kill it and pytest would warn
    import tqdm

    tqdm.tqdm.monitor_interval = 0
except ImportError:  # pragma: no cover
    pass


def pytest_setup_options():  # dash[testing] hook: headless Chromium as root, no network
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = os.environ.get("AEVIS_CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"):
        options.add_argument(arg)
    return options


@pytest.fixture(scope="session")
def resnet20():
    from aevis_core.models import load_model

    return load_model("cifar-resnet20")


@pytest.fixture(scope="session")
def resnet56():
    from aevis_core.models import load_model

    return load_model("cifar-resnet56")


@pytest.fixture(scope="session")
def lite0():
    from aevis_core.models import load_model

    return load_model("efficientnet-lite0")


@pytest.fixture(scope="session")
def cifar_demo():
    from aevis_core.data import demo_path, load_image_set

    return load_image_set(demo_path("cifar10"))


@pytest.fixture(scope="session")
def nips_demo():
    from aevis_core.data import demo_path, load_image_set

    return load_image_set(demo_path("nips2017"))


@pytest.fixture(scope="module")
def toy():
    """The hand-set ToyResNet (pixel-space wrapped) and its layer graph."""
    from aevis_core.graph import build_graph
    from aevis_core.models.base import ModelSpec, wrap
    from tests.toy_models import ToyResNet

    e = wrap(ModelSpec(ToyResNet(), (2, 2), ["a", "b"]), "toy")
    return e, build_graph(e.model, (1, 2, 2), "toy")


@pytest.fixture(scope="session")
def resnet20_graph(resnet20):
    """Layer graph of ResNet-20 (built once per session)."""
    from aevis_core.graph import build_graph

    return build_graph(resnet20.model, (3, 32, 32), "r20")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test leaves a screenshot: test-artifacts/FAILED-<test>.png."""
    outcome = yield
    report = outcome.get_result()
    duo = item.funcargs.get("dash_duo") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and duo is not None:
        from tests.browser_helpers import shot

        try:
            shot(duo, f"FAILED-{item.name}")
        except Exception:  # noqa: BLE001 - the browser may be gone; the failure itself is what matters
            pass
