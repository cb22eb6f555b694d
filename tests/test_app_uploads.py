"""The app's upload registry: size limit, kept sets, ids checked before any path is built."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from aevis_core.errors import AEVisError
from app.config import AppConfig
from app.services import uploads


def data_uri(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_upload_kept_as_a_registered_set(tmp_path):
    cfg = AppConfig(cache_dir=tmp_path / "cache", max_upload_mb=1)
    big = b"\x89PNG" + bytes(2 * 2**20)
    report = uploads.save_upload(cfg, [data_uri(png(1)), data_uri(big), "garbage", data_uri(png(2))],
                                 ["a.png", "huge.png", "x.png", "../../b.png"])
    assert report.accepted == ["a", "b"]
    reasons = dict(report.rejected)
    assert "over its 1 MB limit" in reasons["huge.png"] and reasons["x.png"] == "not a file upload"
    options = uploads.list_sets(cfg)
    assert options[0]["value"] == "demo" and options[1]["value"] == report.set_id
    s = uploads.load_upload(cfg, report.set_id, None)
    assert s.ids == ["a", "b"] and np.array_equal(np.asarray(s.images[0]), np.asarray(Image.open(io.BytesIO(png(1)))))
    assert sorted(p.name for p in (cfg.uploads_dir / report.set_id).iterdir()) == ["a.png", "b.png", "labels.csv",
                                                                                  "set.json"]
    again = uploads.save_upload(cfg, [data_uri(png(1)), data_uri(png(2))], ["a.png", "b.png"])
    assert again.set_id == report.set_id and len(uploads.list_sets(cfg)) == 2  # same pixels: same set


def test_nothing_accepted_registers_nothing(tmp_path):
    cfg = AppConfig(cache_dir=tmp_path / "cache")
    report = uploads.save_upload(cfg, [data_uri(b"")], ["empty.png"])
    assert report.set_id is None and report.rejected == [("empty.png", "empty.png: empty file")]
    assert uploads.report_lines(report) == ["no image accepted", "refused empty.png: empty file"]
    assert uploads.list_sets(cfg) == [{"label": "demo images", "value": "demo"}]


@pytest.mark.parametrize("bad", ["../../etc", "/etc/passwd", "0123456789abcdef/../x", "ABCDEF0123456789",
                                 "0123456789abcde", "", None, ["x"]])
def test_set_ids_are_checked_before_any_path(tmp_path, bad):
    cfg = AppConfig(cache_dir=tmp_path / "cache")
    with pytest.raises(AEVisError, match="unknown image set"):
        uploads.upload_folder(cfg, bad)


def test_registered_id_that_is_gone(tmp_path):
    with pytest.raises(AEVisError, match="may have been removed"):
        uploads.upload_folder(AppConfig(cache_dir=tmp_path / "cache"), "0123456789abcdef")
