"""Preparing the demo pool when the server starts, with progress any process can read.

``aevis serve`` and the WSGI entry start :func:`start` once: it launches ``python -m
app.services.preparation`` as its own process (its own session, so a recycled web worker does not
take it down; a non-blocking ``flock`` makes the second of two gunicorn workers exit at once). That
process builds the default pool of the configured/demo set and writes its progress to a small JSON
status file (atomic rename) under ``<cache>/status/``. The page's pool job relays that progress
("Preparing the demo: attacking 41 of 62 images") and ``/readyz`` answers 200 once it is ready.
A status whose process died (no heartbeat for :data:`STALE_S`) reads as not running, and the page's
job then builds the pool itself.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from app.config import DEMO_SET, AppConfig

log = logging.getLogger(__name__)
STALE_S = 30.0
PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class PrepStatus:
    """Where the preparation of the default pool stands."""

    state: str            # "running" | "ready" | "failed"
    done: int = 0
    total: int = 1
    stage: str = ""
    pool_key: str | None = None
    message: str = ""
    pid: int = 0
    updated: float = 0.0

    @property
    def alive(self) -> bool:
        """Running and heard from recently."""
        return self.state == "running" and time.time() - self.updated < STALE_S

    def text(self, n_images: int | None = None) -> str:
        """One line for the page."""
        if self.state == "ready":
            return "the demo is ready"
        if self.state == "failed":
            return f"preparing the demo failed: {self.message}"
        return f"Preparing the demo: {self.stage}" + (f" {self.done} of {self.total}" if self.total > 1 else "") + "…"


def config_digest(cfg: AppConfig) -> str:
    """Identity of the default pool's inputs (model, images, attack, cap): names its status file."""
    parts = [cfg.model, cfg.images, cfg.eps, cfg.attack_steps, cfg.max_images, str(cfg.model_dir)]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def status_path(cfg: AppConfig) -> Path:
    """The status file of the default pool of ``cfg``."""
    return cfg.status_dir / f"prepare-{config_digest(cfg)}.json"


def read_status(cfg: AppConfig) -> PrepStatus | None:
    """The last written status (None when none or unreadable)."""
    try:
        data = json.loads(status_path(cfg).read_text(encoding="utf-8"))
        return PrepStatus(**{f.name: data[f.name] for f in fields(PrepStatus) if f.name in data})
    except (OSError, ValueError, TypeError):
        return None


def write_status(cfg: AppConfig, status: PrepStatus) -> None:
    """Write the status atomically; a full or read-only disk only loses the progress line (logged)."""
    path = status_path(cfg)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(asdict(status)), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not write the preparation status: %s", exc)
        tmp.unlink(missing_ok=True)


def reporter(cfg: AppConfig) -> Callable[[int, int, str], None]:
    """A ``progress(done, total, stage)`` that writes the status at most every 0.5 s."""
    last = [0.0]

    def report(done: int, total: int, stage: str) -> None:
        now = time.time()
        if now - last[0] >= PROGRESS_EVERY_S or done >= total:
            last[0] = now
            write_status(cfg, PrepStatus("running", done, max(total, 1), stage, pid=os.getpid(), updated=now))

    return report


def is_ready(services: Any) -> bool:
    """Whether the default pool of ``services.config`` is prepared (status ready and pool stored)."""
    st = read_status(services.config)
    return bool(st is not None and st.state == "ready" and st.pool_key and services.store.has(st.pool_key))


def config_to_json(cfg: AppConfig) -> str:
    """The config as JSON (paths as strings) for the preparation process."""
    return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()})


def config_from_json(text: str) -> AppConfig:
    """Inverse of :func:`config_to_json`."""
    data: dict[str, Any] = json.loads(text)
    for name in ("cache_dir", "users_file", "model_dir"):
        if data.get(name) is not None:
            data[name] = Path(data[name])
    return AppConfig(**data)


def start(cfg: AppConfig) -> subprocess.Popen[bytes] | None:
    """Launch the preparation process unless the pool is ready (None then)."""
    st = read_status(cfg)
    if st is not None and (st.alive or st.state == "ready"):
        return None
    write_status(cfg, PrepStatus("running", 0, 1, "starting", pid=0, updated=time.time()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads beside the web workers
    env.setdefault("MALLOC_ARENA_MAX", "2")  # one-shot process: fewer glibc arenas, less resident memory
    log.info("preparing the demo pool in the background (status in %s)", status_path(cfg))
    return subprocess.Popen([sys.executable, "-m", "app.services.preparation", config_to_json(cfg)],
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True)


def run(cfg: AppConfig) -> int:
    """Build the default pool (in this process), writing the status; 0 on success."""
    lock_path = cfg.status_dir / f"prepare-{config_digest(cfg)}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another process is preparing the demo")
        return 0
    from app.services import Services

    report = reporter(cfg)
    try:
        services = Services.create(cfg)
        report(0, 1, "loading the model and the images")
        key = services.pools.prepare(DEMO_SET, report, job_model=services.job_model())
    except Exception as exc:  # noqa: BLE001 - written to the status, shown by the page
        from app.jobs.messages import user_message

        write_status(cfg, PrepStatus("failed", message=user_message(exc), pid=os.getpid(), updated=time.time()))
        return 1
    finally:
        os.close(fd)
    write_status(cfg, PrepStatus("ready", 1, 1, "ready", pool_key=key, pid=os.getpid(), updated=time.time()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m app.services.preparation CONFIG_JSON``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    args = parser.parse_args(argv)
    cfg = config_from_json(args.config)
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
