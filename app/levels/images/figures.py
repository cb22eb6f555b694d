"""Images level, pure: thumbnails with labels, predictions, badges and scores; filters; class options."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from dash import html
from PIL import Image

from aevis_core.pool import Pool, PoolItem
from app.ids import thumb_id

THUMB_ROUTE = "/_aevis/pool"  # + /<pool key digest>/<row>.png, served by app.server.thumbnails


def thumbnail_png(pixels: np.ndarray, size: int = 64) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes, resized to ``size`` px (nearest for tiny images)."""
    img = Image.fromarray(pixels)
    if img.size[0] != size:
        method = Image.Resampling.NEAREST if img.size[0] < size else Image.Resampling.BILINEAR
        img = img.resize((size, size), method)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_src(pool_key: str, row: int) -> str:
    """Content-addressed URL of a pool image's thumbnail (immutable: the key hashes the pixels)."""
    return f"{THUMB_ROUTE}/{pool_key.split(':', 1)[1]}/{row}.png"


def filter_items(pool: Pool, cls: int | None = None, kind: str = "all", correct: str = "all",
                 sort: str = "none") -> list[PoolItem]:
    """Items passing the filters (class = true label or prediction), optionally sorted by score."""
    out = []
    for it in pool.items:
        if cls is not None and it.label != cls and it.pred != cls:
            continue
        if kind != "all" and it.kind != kind:
            continue
        ok = it.label is not None and it.pred == it.label
        if (correct == "correct" and not ok) or (correct == "wrong" and ok):
            continue
        out.append(it)
    if sort == "score":
        out.sort(key=lambda it: -it.score if math.isfinite(it.score) else math.inf)
    return out


def thumb(pool: Pool, pool_key: str, row: int, it: PoolItem, selected: bool) -> html.Div:
    """One clickable thumbnail card."""
    names = pool.class_names
    true = names[it.label] if it.label is not None else "?"
    ok = it.label is not None and it.pred == it.label
    badge = "ADV" if it.kind == "adversarial" else "NORMAL"
    scored = math.isfinite(it.score)
    return html.Div(
        [
            html.Img(src=thumbnail_src(pool_key, row), className="thumb-img", alt=it.id),
            html.Div(badge, className=f"badge badge-{it.kind}"),
            html.Div(f"true: {true}", className="thumb-line", title=true),
            html.Div(f"pred: {names[it.pred]} ({it.prob:.2f})",
                     className="thumb-line " + ("" if it.label is None else "ok" if ok else "wrong"),
                     title=names[it.pred]),
            html.Div(f"adv. score {it.score:.2f}" if scored else "adv. score —", className="thumb-line score",
                     style={"--score": f"{it.score if scored else 0:.3f}"},
                     title="" if scored else "too few images to fit the adversarial score"),
        ],
        id=thumb_id(it.id),
        className="thumb selected" if selected else "thumb",
        n_clicks=0,
        title=it.id,
    )


def image_list(pool: Pool, pool_key: str, items: Sequence[PoolItem], selection: Sequence[str]) -> list[html.Div]:
    """Thumbnail cards of ``items`` (images by URL, not inline: a list render is a few KB)."""
    idx = pool.index()
    sel = set(selection)
    return [thumb(pool, pool_key, idx[it.id], it, it.id in sel) for it in items]


def class_options(pool: Pool) -> list[dict[str, Any]]:
    """Dropdown options of the classes present (by label or prediction)."""
    present = sorted({it.label for it in pool.items if it.label is not None} | {it.pred for it in pool.items})
    return [{"label": pool.class_names[c], "value": c} for c in present]
