"""Security: basic auth on every route, headers with a CSP that admits Dash's inline scripts,
request size limit, configuration errors, gunicorn settings and its worker_abort hook."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import time

import pytest
from werkzeug.security import generate_password_hash

from app.config import AppConfig

ROUTES = ["/", "/_dash-layout", "/_dash-dependencies", "/assets/aevis.css", "/_favicon.ico", "/nope"]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    from app.server.factory import create_app

    d = tmp_path_factory.mktemp("auth")
    users = d / "users"
    users.write_text(f"# team\nalice:{generate_password_hash('wonderland')}\n\n")
    app = create_app(AppConfig(model="cifar-resnet20", cache_dir=d / "cache", users_file=users,
                               users="bob:builder", max_upload_mb=1))
    return app.server.test_client()


def callback_body() -> dict:
    return {"output": "analysis-summary.children", "outputs": {"id": "analysis-summary", "property": "children"},
            "inputs": [{"id": "context", "property": "data", "value": None}], "state": [],
            "changedPropIds": ["context.data"]}


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_refuses_without_credentials(secured, route):
    r = secured.get(route)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")


def test_callbacks_refuse_without_credentials(secured):
    r = secured.post("/_dash-update-component", json=callback_body())
    assert r.status_code == 401
    assert secured.post("/_dash-update-component", json=callback_body(), headers=basic("alice", "x")).status_code == 401
    ok = secured.post("/_dash-update-component", json=callback_body(), headers=basic("alice", "wonderland"))
    summary = ok.get_json()["response"]["analysis-summary"]["children"]
    assert ok.status_code == 200 and summary["props"]["children"] == ""


@pytest.mark.parametrize("headers", [
    basic("alice", "wrong"), basic("mallory", "wonderland"), basic("bob", "builder2"),
    {"Authorization": "Basic !!!not-base64"}, {"Authorization": "Bearer abc"}, {"Authorization": "Basic"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
])
def test_bad_credentials_are_401_not_500(secured, headers):
    assert secured.get("/", headers=headers).status_code == 401


@pytest.mark.parametrize("route", ROUTES[:5])
def test_every_route_serves_with_credentials(secured, route):
    assert secured.get(route, headers=basic("alice", "wonderland")).status_code == 200
    assert secured.get(route, headers=basic("bob", "builder")).status_code == 200  # plain-text entry


def test_health_is_public(secured):
    assert secured.get("/healthz").get_json() == {"status": "ok"}


def test_security_headers_and_csp_admit_dash_inline_scripts(secured):
    r = secured.get("/", headers=basic("alice", "wonderland"))
    h = r.headers
    assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
    csp = dict(part.strip().split(" ", 1) for part in h["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert "unsafe-inline" not in csp["script-src"] and "unsafe-eval" not in csp["script-src"]
    html = re.sub(r"<!--.*?-->", "", r.get_data(as_text=True), flags=re.S)  # e.g. Dash's <!--[if IE]> note
    inline = [m.group(2) for m in re.finditer(r"<script([^>]*)>(.*?)</script>", html, re.S)
              if "src=" not in m.group(1) and "application/json" not in m.group(1)]
    assert inline, "Dash renders at least one inline script"
    for script in inline:  # every executable inline script is allowed by its hash, nothing else is
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp["script-src"]
    assert secured.get("/_dash-layout", headers=basic("bob", "builder")).headers["X-Frame-Options"] == "DENY"


def test_request_over_the_size_limit_is_refused_with_a_message(secured):
    body = json.dumps(callback_body() | {"pad": "x" * (4 * 2**20)})  # cap: 2 x 1 MB x 4/3 + 1 MB
    r = secured.post("/_dash-update-component", data=body, content_type="application/json",
                     headers=basic("alice", "wonderland"))
    assert r.status_code == 413 and "uploads are limited to 1 MB" in r.get_data(as_text=True)
    assert secured.get("/healthz").status_code == 200  # still serving


def test_no_auth_by_default_and_bad_settings_fail_clearly(tmp_path, monkeypatch):
    from app.server.factory import create_app
    from app.server.security import load_users

    client = create_app(AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "c")).server.test_client()
    assert client.get("/").status_code == 200 and not client.application.debug
    with pytest.raises(ValueError, match="expected user:password-hash"):
        load_users(AppConfig(users="alice"))
    with pytest.raises(ValueError, match="cannot read AEVIS_USERS_FILE"):
        load_users(AppConfig(users_file=tmp_path / "missing"))
    monkeypatch.setenv("AEVIS_JOB_BACKEND", "rabbit")
    with pytest.raises(ValueError, match="AEVIS_JOB_BACKEND must be diskcache or celery"):
        AppConfig.from_env()


def test_config_from_env(monkeypatch, tmp_path):
    for k, v in {"AEVIS_JOB_BACKEND": "Celery", "REDIS_URL": "redis://127.0.0.1:6390/2", "AEVIS_MAX_UPLOAD_MB": "5",
                 "AEVIS_MAX_ANALYSIS_IMAGES": "30", "AEVIS_JOB_TIMEOUT": "60", "AEVIS_MODEL_DIR": str(tmp_path),
                 "AEVIS_USERS": "a:b"}.items():
        monkeypatch.setenv(k, v)
    cfg = AppConfig.from_env(port=9000)
    assert (cfg.job_backend, cfg.redis_url, cfg.max_upload_mb, cfg.max_analysis_images, cfg.job_timeout,
            cfg.model_dir, cfg.auth_enabled, cfg.port, cfg.host) == (
        "celery", "redis://127.0.0.1:6390/2", 5.0, 30, 60.0, tmp_path, True, 9000, "127.0.0.1")


def test_gunicorn_settings_from_env(monkeypatch):
    import importlib

    monkeypatch.setenv("AEVIS_WORKERS", "3")
    monkeypatch.setenv("AEVIS_PORT", "8123")
    import app.server.gunicorn_conf as conf

    conf = importlib.reload(conf)
    assert conf.bind == "127.0.0.1:8123" and conf.workers == 3 and conf.threads == 4
    assert conf.max_requests == 1000 and conf.timeout == 120 and callable(conf.worker_abort)


def test_worker_abort_ends_its_job_processes():
    """gunicorn calls worker_abort in the hanging worker: its job processes (children) must end."""
    code = ("import subprocess, sys, time\n"
            "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']) for _ in range(2)]\n"
            "print(' '.join(str(k.pid) for k in kids), flush=True)\n"
            "class W:\n    pid = 0\n    class log:\n        @staticmethod\n"
            "        def warning(*a): print('warned', flush=True)\n"
            "from app.server.gunicorn_conf import worker_abort\nworker_abort(W())\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pids = [int(x) for x in p.stdout.split()[:2]]
    assert "warned" in p.stdout
    import psutil

    time.sleep(0.2)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_hash_password_cli_output_works_as_a_users_file_line(tmp_path):
    from app.server.security import check_password, parse_users

    exe = [sys.executable, "-m", "app.server.cli", "hash-password", "carol"]
    p = subprocess.run(exe, input="s3cret pass\n", capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    users = parse_users(p.stdout, "stdout")
    assert list(users) == ["carol"] and users["carol"].startswith("scrypt:")
    assert check_password(users["carol"], "s3cret pass") and not check_password(users["carol"], "s3cret")
    empty = subprocess.run(exe, input="\n", capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "empty password" in empty.stderr
