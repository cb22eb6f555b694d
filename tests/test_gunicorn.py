"""The served app as the Procfile runs it: gunicorn with app/server/gunicorn_conf.py, 2 workers, basic auth.

Every request opens a new connection, so jobs are started and polled by whichever worker accepts
it (one shared job folder); after a restart the analysis comes from the cache, not recomputed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from werkzeug.security import generate_password_hash

from tests.services import BIN, ROOT, free_port, run_demo

pytestmark = pytest.mark.slow
AUTH = ("alice", "wonder land")


class Gunicorn:
    def __init__(self, cache: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, AEVIS_PORT=str(self.port), AEVIS_WORKERS="2", AEVIS_THREADS="2",
                   AEVIS_MODEL="cifar-resnet20", AEVIS_MAX_IMAGES="20", AEVIS_CACHE_DIR=str(cache),
                   AEVIS_DEVICE="cpu", AEVIS_USERS=f"{AUTH[0]}:{generate_password_hash(AUTH[1])}",
                   AEVIS_LOG_LEVEL="INFO", PYTHONPATH=str(ROOT))
        self.out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(BIN / "gunicorn"), "-c", "python:app.server.gunicorn_conf",
                                      "app.server.wsgi:server"],
                                     cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        end = time.time() + 90
        while time.time() < end and self.proc.poll() is None:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or workers still booting
                pass
            time.sleep(0.2)
        self.stop()  # never leave a server behind
        raise AssertionError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            self.out.close()
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.out.close()


def test_gunicorn_auth_jobs_across_workers_and_restart_from_cache(tmp_path):
    cache = tmp_path / "cache"
    g = Gunicorn(cache, tmp_path / "first.log")
    try:
        assert requests.get(g.url, timeout=10).status_code == 401
        assert requests.get(f"{g.url}/_dash-layout", timeout=10).status_code == 401
        page = requests.get(g.url, auth=AUTH, timeout=10)
        assert page.status_code == 200 and "script-src 'self' 'sha256-" in page.headers["Content-Security-Policy"]
        first = run_demo(g.url, auth=AUTH, keepalive=False)
    finally:
        g.stop()
    log1 = (tmp_path / "first.log").read_text()
    assert log1.count("computing analysis") == 1 and "Traceback" not in log1
    assert log1.count("Booting worker with pid") == 2

    g = Gunicorn(cache, tmp_path / "second.log")
    try:
        t = time.time()
        again = run_demo(g.url, auth=AUTH, keepalive=False)
        elapsed = time.time() - t
    finally:
        g.stop()
    log2 = (tmp_path / "second.log").read_text()
    assert again == first  # same pool key, analysis key and summary
    assert "computing analysis" not in log2 and "loaded from the cache" in log2 and "Traceback" not in log2
    assert elapsed < 60
