"""The server prepares the demo when it starts: /readyz is 503 until the pool is ready, then 200;
the page's pool job relays the preparation's progress from the first second."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.config import AppConfig
from app.services import preparation
from app.services.preparation import PrepStatus

pytestmark = pytest.mark.slow


def test_readyz_503_until_the_demo_is_prepared_at_start_then_200(tmp_path: Path) -> None:
    from app.server.factory import create_app

    cfg = AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "cache", max_images=12, prepare_on_start=True,
                    attack_steps=2)
    app = create_app(cfg)  # starts the preparation process; no browser has asked for anything
    client = app.server.test_client()
    first = client.get("/readyz")
    assert first.status_code == 503 and first.get_json() == {"status": "preparing"}
    seen = set()
    end = time.time() + 240
    while time.time() < end:
        st = preparation.read_status(cfg)
        if st is not None:
            seen.add(st.state)
        if client.get("/readyz").status_code == 200:
            break
        time.sleep(0.5)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {"status": "ready"}
    st = preparation.read_status(cfg)
    assert st is not None and st.state == "ready" and "running" in seen
    services = app.server.extensions["aevis_services"]
    assert services.pools.key("demo") == st.pool_key  # the pool the page will ask for
    assert preparation.start(cfg) is None  # a second web worker starts nothing: it is ready


def test_the_pool_job_relays_the_preparation_progress(tmp_path: Path) -> None:
    from app.jobs.tasks import relay_preparation
    from app.services import Services

    cfg = AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "cache")
    services = Services.create(cfg)
    preparation.write_status(cfg, PrepStatus("running", 41, 62, "attacking", pid=os.getpid(), updated=time.time()))
    shown: list[tuple[str, str, str]] = []

    def progress(value: tuple[str, str, str]) -> None:
        shown.append(value)
        if len(shown) == 2:  # the preparation finishes (its pool is stored) while the page relays it
            services.store.put("pool/v1:" + "a" * 64, {"stand-in": True})
            preparation.write_status(cfg, PrepStatus("ready", 1, 1, "ready", pool_key="pool/v1:" + "a" * 64,
                                                     updated=time.time()))

    key = relay_preparation(services, progress)
    assert shown[0] == ("41", "62", "Preparing the demo: attacking 41 of 62…")
    assert key == "pool/v1:" + "a" * 64


def test_a_dead_preparation_is_not_waited_for(tmp_path: Path) -> None:
    from app.jobs.tasks import relay_preparation
    from app.services import Services

    cfg = AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "cache")
    stale = time.time() - preparation.STALE_S - 1
    preparation.write_status(cfg, PrepStatus("running", 3, 62, "attacking", pid=1, updated=stale))
    t = time.time()
    assert relay_preparation(Services.create(cfg), lambda _v: None) is None  # the job builds it itself
    assert time.time() - t < 2
