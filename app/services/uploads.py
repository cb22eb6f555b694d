"""Upload sets: decode ``dcc.Upload`` contents, keep accepted images, a server-side registry.

Image sets are chosen by name from the registry (``demo`` or a 16-hex-digit id); a value from a
request is matched against that pattern and the registry listing before any path is built, so no
request-supplied path reaches the filesystem. Files are written with generated names only
(:func:`aevis_core.data.save_image_set`). Each set lives in ``<cache>/uploads/<id>/`` with a
``set.json`` (display name, count, time); sets with the same accepted pixels share one id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aevis_core.data import ImageSet, load_image_set, read_uploads, save_image_set
from aevis_core.errors import AEVisError
from app.config import DEMO_SET, AppConfig

log = logging.getLogger(__name__)
SET_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass
class UploadReport:
    """Outcome of one upload: the new set id (None when nothing was accepted) and the refusals."""

    set_id: str | None
    accepted: list[str]
    rejected: list[tuple[str, str]]


def decode_contents(contents: list[str], names: list[str], max_bytes: int) -> tuple[list[tuple[str, bytes]],
                                                                                     list[tuple[str, str]]]:
    """``data:...;base64,...`` strings -> (name, bytes); unreadable or too-large ones are refused."""
    files: list[tuple[str, bytes]] = []
    rejected: list[tuple[str, str]] = []
    total = 0
    for content, name in zip(contents, names, strict=False):
        label = str(name)[:200]
        _, sep, payload = str(content).partition(",")
        if not sep:
            rejected.append((label, "not a file upload"))
            continue
        if len(payload) * 3 // 4 > max_bytes - total:
            rejected.append((label, f"{len(payload) * 3 // 4 / 2**20:.1f} MB would take the upload over its "
                                    f"{max_bytes / 2**20:g} MB limit"))
            continue
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            rejected.append((label, "not valid base64 data"))
            continue
        total += len(data)
        files.append((label, data))
    return files, rejected


def set_id_of(images: ImageSet) -> str:
    """Content id of a set: sha256 over ids and pixels (16 hex digits)."""
    h = hashlib.sha256()
    for i, img in zip(images.ids, images.images, strict=True):
        h.update(i.encode())
        h.update(np.asarray(img).tobytes())
    return h.hexdigest()[:16]


def save_upload(cfg: AppConfig, contents: list[str], names: list[str]) -> UploadReport:
    """Decode, check and keep an upload; the accepted images become a registered image set."""
    limits = cfg.upload_limits()
    files, rejected = decode_contents(contents, names, limits.max_total_bytes)
    result = read_uploads(files, limits)
    rejected += result.rejected
    images = result.images
    if not len(images):
        return UploadReport(None, [], rejected)
    set_id = set_id_of(images)
    folder = cfg.uploads_dir / set_id
    if not (folder / "set.json").is_file():
        tmp = cfg.uploads_dir / f".{set_id}.{time.time_ns()}"
        save_image_set(images, tmp)
        first = images.meta[0].get("upload_name", images.ids[0]) if images.meta else images.ids[0]
        meta = {"name": f"upload {time.strftime('%Y-%m-%d %H:%M')} · {len(images)} images ({first[:40]})",
                "count": len(images), "created": time.time()}
        (tmp / "set.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            tmp.rename(folder)  # atomic: a set is complete or absent
        except OSError:  # the same set saved meanwhile by another request
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("upload kept as image set %s", set_id)  # counts: logged by read_uploads
    return UploadReport(set_id, list(images.ids), rejected)


def list_sets(cfg: AppConfig) -> list[dict[str, str]]:
    """Dropdown options: the configured/demo set, then uploaded sets (newest first)."""
    options = [{"label": "demo images" if not cfg.images else "configured images", "value": DEMO_SET}]
    found: list[tuple[float, str, str]] = []
    root = cfg.uploads_dir
    if root.is_dir():
        for folder in root.iterdir():
            if SET_ID.match(folder.name) and (folder / "set.json").is_file():
                try:
                    meta = json.loads((folder / "set.json").read_text(encoding="utf-8"))
                    found.append((float(meta["created"]), str(meta["name"]), folder.name))
                except (OSError, ValueError, KeyError, TypeError):
                    log.warning("skipping unreadable upload set %s", folder.name)
    options += [{"label": name, "value": sid} for _, name, sid in sorted(found, reverse=True)]
    return options


def upload_folder(cfg: AppConfig, set_id: str) -> Path:
    """The folder of a registered set, or AEVisError (id checked before any path is built)."""
    if not isinstance(set_id, str) or not SET_ID.match(set_id):
        raise AEVisError("unknown image set")
    folder = cfg.uploads_dir / set_id
    if not (folder / "set.json").is_file():
        raise AEVisError("unknown image set (it may have been removed from the server)")
    return folder


def load_upload(cfg: AppConfig, set_id: str, dataset: str | None) -> ImageSet:
    """A registered uploaded set, decoded again with the usual limits."""
    return load_image_set(upload_folder(cfg, set_id), name=f"upload:{set_id}", dataset=dataset,
                          limits=cfg.decode_limits())


def report_lines(report: UploadReport) -> list[Any]:
    """Plain strings for the UI: the accepted count, then one line per refused file."""
    lines: list[Any] = []
    if report.accepted:
        lines.append(f"{len(report.accepted)} image(s) accepted: {', '.join(report.accepted[:8])}"
                     + ("…" if len(report.accepted) > 8 else ""))
    else:
        lines.append("no image accepted")
    lines += [f"refused {name}: {why}" if not why.startswith(name) else f"refused {why}"
              for name, why in report.rejected]
    return lines
