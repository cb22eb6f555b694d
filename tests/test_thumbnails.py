"""Thumbnails by content-addressed URL: immutable, ETag/304, pattern-checked, behind the login."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import AppConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from app.server.factory import create_app

    cfg = AppConfig(model="cifar-resnet20", cache_dir=Path(tmp_path_factory.mktemp("thumbs")) / "cache",
                    max_images=6, attack_steps=2, job_launcher=False)
    app = create_app(cfg)
    services = app.server.extensions["aevis_services"]
    key = services.pools.prepare("demo", lambda d, t, s: None)
    return app.server.test_client(), services, key


def test_thumbnail_route_serves_the_pool_pixels_immutably(served):
    from app.levels.images.figures import thumbnail_src

    client, services, key = served
    pool = services.pools.get(key)
    url = thumbnail_src(key, 7)  # row 7: the adversarial twin of image 1
    r = client.get(url)
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert "immutable" in r.headers["Cache-Control"] and r.headers["ETag"]
    img = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB"))
    assert img.shape == (64, 64, 3)
    assert np.array_equal(img[::2, ::2], pool.pixels[7])  # 32 px CIFAR image, nearest-neighbour x2
    again = client.get(url, headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


@pytest.mark.parametrize("path", ["/_aevis/pool/{key}/99.png", "/_aevis/pool/{bad}/0.png",
                                  "/_aevis/pool/{other}/0.png"])
def test_thumbnail_route_refuses_anything_else_with_404(served, path):
    client, _, key = served
    digest = key.split(":", 1)[1]
    url = path.format(key=digest, bad=digest[:-1] + "Z", other="0" * 64)
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("path", ["/_aevis/pool/../../etc/passwd", "/_aevis/pool/{key}/-1.png",
                                  "/_aevis/pool/{key}/0.png/x"])
def test_other_paths_never_reach_the_route(served, path):
    """Not the route's pattern: Dash's page route answers (the app's HTML), never image data or a file."""
    client, _, key = served
    r = client.get(path.format(key=key.split(":", 1)[1]))
    assert r.mimetype == "text/html" and b"<html" in r.data.lower() and b"root:" not in r.data


def test_image_list_sends_urls_not_inline_images(served):
    from app.levels.images import figures as fig

    _, services, key = served
    pool = services.pools.get(key)
    cards = fig.image_list(pool, key, pool.items, [])
    srcs = [c.children[0].src for c in cards]
    assert all(s.startswith("/_aevis/pool/") and not s.startswith("data:") for s in srcs)
    assert sum(len(s) for s in srcs) < 120 * len(srcs)


def test_thumbnails_need_a_login_when_auth_is_on(tmp_path, served):
    from werkzeug.security import generate_password_hash

    from app.server.factory import create_app

    _, _, key = served
    app = create_app(AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "c", job_launcher=False,
                               users=f"alice:{generate_password_hash('pw')}"))
    assert app.server.test_client().get(f"/_aevis/pool/{key.split(':', 1)[1]}/0.png").status_code == 401
