"""Serving safely: basic auth, security headers with a Dash-compatible CSP, size limits.

* Basic auth is on when ``AEVIS_USERS_FILE`` (lines ``user:password-hash``) or ``AEVIS_USERS``
  (``user:password-hash,user2:...``) is set. Hashes come from ``aevis hash-password`` (werkzeug's
  scrypt/pbkdf2); a plain password is accepted too (compared in constant time) but logged as a
  warning. Every route — pages, assets, ``_dash-*`` endpoints, callbacks — answers 401 without
  valid credentials; only ``/healthz`` and ``/readyz`` are public.

  Why not ``dash-auth``: its BasicAuth deliberately leaves ``/_dash-layout``, ``/_dash-dependencies``
  and the assets public, lets through any callback whose ``pathname`` input names a public route
  (a client can send any pathname, so every routing callback is reachable unauthenticated), and
  answers 500 to a malformed ``Authorization`` header. The guard here is one ``before_request``
  hook with no exceptions but ``/healthz``.
* Headers on every response: a Content-Security-Policy whose ``script-src`` is ``'self'`` plus the
  hashes of Dash's inline scripts (``Dash.csp_hashes``), ``X-Frame-Options: DENY``,
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin``.
* ``MAX_CONTENT_LENGTH``: a hard cap on request bodies, twice the upload limit in base64 (x4/3)
  plus 1 MB, refused by Flask with 413 before it is read. Uploads between the limit and the cap
  reach the upload callback, which names them with the reason (a clear message in the UI).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
from pathlib import Path
from typing import Any

import flask
from dash import Dash
from werkzeug.security import check_password_hash

from app.config import AppConfig

log = logging.getLogger(__name__)
HASH_PREFIXES = ("scrypt:", "pbkdf2:")
PUBLIC_ROUTES = ["/healthz", "/readyz"]


def parse_users(text: str, source: str) -> dict[str, str]:
    """``user:secret`` entries (newlines or commas; ``#`` comments) -> {user: secret}."""
    users: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, secret = line.partition(":")
        if not sep or not user.strip() or not secret:
            raise ValueError(f"{source}: expected user:password-hash, got {line.split(':')[0]!r}…")
        users[user.strip()] = secret.strip()
    return users


def load_users(cfg: AppConfig) -> dict[str, str]:
    """Users from ``AEVIS_USERS_FILE`` and ``AEVIS_USERS`` (the file first; env entries override)."""
    users: dict[str, str] = {}
    if cfg.users_file is not None:
        try:
            users.update(parse_users(Path(cfg.users_file).read_text(encoding="utf-8"), str(cfg.users_file)))
        except OSError as exc:
            raise ValueError(f"cannot read AEVIS_USERS_FILE {cfg.users_file}: {exc.strerror}") from exc
    if cfg.users:
        users.update(parse_users(cfg.users, "AEVIS_USERS"))
    if not users:
        raise ValueError("authentication is configured but no user is defined")
    if any(not s.startswith(HASH_PREFIXES) for s in users.values()):
        log.warning("some users have plain-text passwords; store hashes from `aevis hash-password`")
    return users


def check_password(secret: str, password: str) -> bool:
    """True when ``password`` matches the stored hash (or plain secret, in constant time)."""
    if secret.startswith(HASH_PREFIXES):
        return check_password_hash(secret, password)
    return hmac.compare_digest(secret.encode("utf-8"), password.encode("utf-8"))


def credentials_ok(users: dict[str, str], header: str) -> bool:
    """True for a well-formed ``Basic`` header naming a user with the right password."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return False
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    secret = users.get(user)
    return bool(sep) and secret is not None and check_password(secret, password)


def require_auth(server: flask.Flask, users: dict[str, str]) -> None:
    """Answer 401 (with a Basic challenge) to every request without valid credentials."""

    @server.before_request
    def guard() -> Any:
        if flask.request.path in PUBLIC_ROUTES:
            return None
        if credentials_ok(users, flask.request.headers.get("Authorization", "")):
            return None
        return flask.Response("login required", 401, {"WWW-Authenticate": 'Basic realm="AEVis", charset="UTF-8"'})


def max_request_bytes(cfg: AppConfig) -> int:
    """Hard cap of a request body: 2 x the upload limit, base64-encoded (x4/3), plus 1 MB."""
    return int(math.ceil(2 * cfg.max_upload_mb * 4 / 3 + 1) * 2**20)


def content_security_policy(app: Dash) -> str:
    """CSP for the Dash page: scripts only from this origin plus Dash's inline-script hashes."""
    scripts = " ".join(["'self'", *app.csp_hashes()])
    return "; ".join([
        "default-src 'self'",
        f"script-src {scripts}",
        "style-src 'self' 'unsafe-inline'",  # React/Plotly/Cytoscape set inline styles
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def install(app: Dash, cfg: AppConfig) -> None:
    """Auth (when configured), security headers, request size limit and ``/healthz`` on ``app``."""
    server = app.server
    server.config["MAX_CONTENT_LENGTH"] = max_request_bytes(cfg)
    policy: dict[str, str] = {}

    @server.after_request
    def headers(resp: flask.Response) -> flask.Response:
        if "csp" not in policy:  # after every callback (incl. clientside) is registered
            policy["csp"] = content_security_policy(app)
        resp.headers.setdefault("Content-Security-Policy", policy["csp"])
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        return resp

    @server.route("/healthz")
    def healthz() -> Any:
        return {"status": "ok"}

    @server.route("/readyz")
    def readyz() -> Any:
        """200 once the demo pool is prepared, 503 before (says no more than that)."""
        from app.services.preparation import is_ready

        services = server.extensions.get("aevis_services")
        if services is not None and is_ready(services):
            return {"status": "ready"}
        return {"status": "preparing"}, 503

    @server.errorhandler(413)
    def too_large(_exc: Exception) -> Any:
        return (f"request too large: uploads are limited to {cfg.max_upload_mb:g} MB (AEVIS_MAX_UPLOAD_MB)", 413)

    if cfg.auth_enabled:
        require_auth(server, load_users(cfg))
        log.info("basic auth on (%s)", "users file" if cfg.users_file else "AEVIS_USERS")
    elif cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s WITHOUT authentication: set AEVIS_USERS_FILE", cfg.host)
