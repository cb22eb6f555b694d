"""Uploads in the browser: good files become an image set with adversarial twins, bad ones are
named with their reason, and the app keeps serving (the demo set is still there)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.test_browser import shot

pytestmark = pytest.mark.browser


def png(seed: int, fmt: str = "PNG", size: int = 32) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "upload"
    d.mkdir()
    (d / "good1.png").write_bytes(png(1))
    (d / "good2.jpg").write_bytes(png(2, "JPEG"))
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("I am a text file")
    (d / "corrupt.png").write_bytes(png(3)[:80])
    (d / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../evil.png", png(4))
        z.writestr("photos/good3.png", png(5))
    (d / "batch.zip").write_bytes(buf.getvalue())
    return d


def test_upload_mixed_files(dash_duo, tmp_path, files):
    from app.config import AppConfig
    from app.server.factory import create_app

    app = create_app(AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "cache", max_images=20))
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text("#model-info", "20 images + 20", timeout=120)
    box = dash_duo.find_element("#upload input[type=file]")
    box.send_keys("\n".join(str(p) for p in sorted(files.iterdir())))
    dash_duo.wait_for_contains_text("#upload-report", "3 image(s) accepted", timeout=60)
    report = dash_duo.find_element("#upload-report").text
    for name, why in [("empty.png", "empty file"), ("notes.png", "not a supported image"),
                      ("corrupt.png", "corrupt or truncated"), ("drawing.svg", "not a supported image"),
                      ("batch.zip:../evil.png", "unsafe path")]:
        line = next((ln for ln in report.splitlines() if name in ln), "")
        assert why in line, (name, report)
    dash_duo.wait_for_contains_text("#model-info", "3 images + 3", timeout=120)
    dash_duo.wait_for_element("#image-list .thumb", timeout=30)
    shot(dash_duo, "07-upload")
    assert dash_duo.find_element("#image-set").text.startswith("upload")
    ids = {el.get_attribute("id") for el in dash_duo.find_elements("#image-list .thumb")}
    assert any("good3" in i for i in ids) and any("good1" in i for i in ids)
    # the demo images are one click away, and the app still serves them
    dash_duo.select_dcc_dropdown("#image-set", value="demo images")
    dash_duo.wait_for_contains_text("#model-info", "20 images + 20", timeout=120)
    assert dash_duo.get_logs() == []
