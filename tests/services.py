"""Services the serving tests start themselves: redis-server, a Celery worker, the app over HTTP.

Everything binds 127.0.0.1 on a free port and is stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.config import AppConfig
from app.dash_client import DashClient

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throw-away redis-server on a loopback port; yields its URL."""
    exe = shutil.which("redis-server")
    assert exe, "redis-server is missing: scripts/setup.sh test installs Debian's redis-server"
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Worker:
    """``celery -A app.server.worker worker`` in its own process group, its log in a file."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", "app.server.worker", "worker", "--loglevel=info", "--concurrency=1",
             "--pool=prefork", "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for("ready.", 120)

    def wait_for(self, text: str, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if text in self.log.read_text(errors="replace"):
                return
            assert self.proc.poll() is None, f"celery worker exited:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"celery worker not {text!r} after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def pool_children(self) -> list[int]:
        import psutil

        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its pool)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self.out.closed:
            self.out.close()


def worker_env(cfg: AppConfig, **extra: str) -> dict[str, str]:
    env = dict(os.environ, AEVIS_JOB_BACKEND="celery", REDIS_URL=cfg.redis_url, AEVIS_MODEL=cfg.model,
               AEVIS_CACHE_DIR=str(cfg.cache_dir), AEVIS_MAX_IMAGES=str(cfg.max_images), AEVIS_DEVICE="cpu",
               PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


@contextmanager
def serve(cfg: AppConfig) -> Iterator[str]:
    """``create_app(cfg)`` on a threaded Werkzeug server on a free loopback port; yields its URL."""
    from werkzeug.serving import make_server

    from app.server.factory import create_app

    app = create_app(cfg)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


POOL = [("pool-result", "data"), ("pool-error", "children")]
ANALYZE = [("analysis-result", "data"), ("analyze-error", "children")]


def run_demo(url: str, auth: tuple[str, str] | None = None, keepalive: bool = True) -> tuple[str, str, dict]:
    """Pool + Analyze of the first preset through HTTP; (pool key, analysis key, summary).

    ``keepalive=False``: a new connection per request, so several server workers share the polls.
    """
    c = DashClient(url, auth=auth, poll_s=0.25, job_timeout=240)
    if not keepalive:
        c.session.headers["Connection"] = "close"
    c.load()
    out = c.fire(POOL, changed=[])
    pool = out["pool-result"]["data"]
    assert pool and pool["pool_key"], out
    presets = c.fire([("preset", "options")], {"pool-result.data": pool})["preset"]["options"]
    groups = c.fire([("groups", "data"), ("groups-hint", "children")],
                    {"preset.value": presets[0]["value"]})["groups"]["data"]
    out = c.fire(ANALYZE, {"analyze.n_clicks": 1})
    assert out["analyze-error"]["children"] == "", out
    result = out["analysis-result"]["data"]
    assert result["groups"] == groups
    context = c.fire([("context", "data")], {"analysis-result.data": result})["context"]["data"]
    assert context["analysis_key"] == result["analysis_key"]
    summary = c.fire([("analysis-summary", "children")], {"context.data": context})
    return pool["pool_key"], result["analysis_key"], summary
