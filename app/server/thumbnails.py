"""Thumbnails of pool images by content-addressed URL: ``/_aevis/pool/<digest>/<row>.png``.

The digest is the SHA-256 part of the pool's content key, so a URL always names the same pixels:
responses are ``immutable`` with an ETag (a second list render costs the browser nothing) instead of
~1 MB of inline base64 per render. Both parts are pattern-checked before the pool is looked up in
the result store (never a filesystem path); anything else is a plain 404.
"""

from __future__ import annotations

import re
from typing import Any

import flask
from dash import Dash

from app.levels.images.figures import THUMB_ROUTE, thumbnail_png
from app.services import Services
from app.services.pools import POOL_KIND

DIGEST = re.compile(r"^[0-9a-f]{64}$")
MAX_AGE = 365 * 24 * 3600


def install(app: Dash, services: Services) -> None:
    """Add the thumbnail route to the app's server."""

    @app.server.route(f"{THUMB_ROUTE}/<digest>/<int:row>.png")
    def thumbnail(digest: str, row: int) -> Any:
        if not DIGEST.match(digest):
            return flask.Response("not found", 404)
        etag = f"{digest[:32]}-{row}"
        if flask.request.if_none_match.contains(etag):
            return flask.Response(status=304, headers={"ETag": f'"{etag}"'})
        pool = services.pools.get(f"{POOL_KIND}:{digest}")
        if pool is None or not 0 <= row < len(pool.items):
            return flask.Response("not found", 404)
        resp = flask.Response(thumbnail_png(pool.pixels[row]), mimetype="image/png")
        resp.headers["Cache-Control"] = f"public, max-age={MAX_AGE}, immutable"
        resp.set_etag(etag)
        return resp
