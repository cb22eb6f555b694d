"""Dashboard configuration from environment variables and ``aevis serve`` flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AppConfig:
    """Everything the dashboard needs to start; no model is loaded until first use.

    Environment (README, "Configuration"): ``AEVIS_MODEL``, ``AEVIS_IMAGES``, ``AEVIS_CACHE_DIR``,
    ``AEVIS_HOST``, ``AEVIS_PORT``, ``AEVIS_EPS`` (e.g. ``4/255``), ``AEVIS_ATTACK_STEPS``,
    ``AEVIS_MAX_IMAGES``, ``AEVIS_JOB_BACKEND`` (diskcache | celery), ``REDIS_URL``,
    ``AEVIS_USERS_FILE`` / ``AEVIS_USERS`` (basic auth), ``AEVIS_MAX_UPLOAD_MB``,
    ``AEVIS_MAX_ANALYSIS_IMAGES``, ``AEVIS_JOB_TIMEOUT``, ``AEVIS_MODEL_DIR``.
    """

    model: str = "efficientnet-lite0"
    images: str | None = None
    cache_dir: Path = Path("cache")
    host: str = "127.0.0.1"
    port: int = 8050
    eps: str | None = None
    attack_steps: int = 10
    max_images: int = 200
    debug: bool = False
    job_backend: str = "diskcache"
    redis_url: str = "redis://127.0.0.1:6379/0"
    users_file: Path | None = None
    users: str | None = None
    max_upload_mb: float = 50.0
    max_analysis_images: int = 200
    job_timeout: float = 3600.0
    model_dir: Path | None = None
    job_launcher: bool = True

    @classmethod
    def from_env(cls, **overrides: Any) -> AppConfig:
        """Defaults, then environment variables, then explicit overrides (CLI flags)."""
        env = os.environ
        cfg = cls(
            model=env.get("AEVIS_MODEL", cls.model),
            images=env.get("AEVIS_IMAGES") or None,
            cache_dir=Path(env.get("AEVIS_CACHE_DIR", "cache")),
            host=env.get("AEVIS_HOST", cls.host),
            port=int(env.get("AEVIS_PORT", cls.port)),
            eps=env.get("AEVIS_EPS") or None,
            attack_steps=int(env.get("AEVIS_ATTACK_STEPS", cls.attack_steps)),
            max_images=int(env.get("AEVIS_MAX_IMAGES", cls.max_images)),
            job_backend=env.get("AEVIS_JOB_BACKEND", cls.job_backend).strip().lower(),
            redis_url=env.get("REDIS_URL", cls.redis_url),
            users_file=Path(env["AEVIS_USERS_FILE"]) if env.get("AEVIS_USERS_FILE") else None,
            users=env.get("AEVIS_USERS") or None,
            max_upload_mb=float(env.get("AEVIS_MAX_UPLOAD_MB", cls.max_upload_mb)),
            max_analysis_images=int(env.get("AEVIS_MAX_ANALYSIS_IMAGES", cls.max_analysis_images)),
            job_timeout=float(env.get("AEVIS_JOB_TIMEOUT", cls.job_timeout)),
            model_dir=Path(env["AEVIS_MODEL_DIR"]) if env.get("AEVIS_MODEL_DIR") else None,
            job_launcher=env.get("AEVIS_JOB_LAUNCHER", "1") not in ("0", "false", "no"),
        )
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``ValueError`` with one line for a setting that cannot work."""
        if self.job_backend not in ("diskcache", "celery"):
            raise ValueError(f"AEVIS_JOB_BACKEND must be diskcache or celery, not {self.job_backend!r}")
        if self.max_upload_mb <= 0 or self.max_analysis_images <= 0 or self.job_timeout <= 0:
            raise ValueError("AEVIS_MAX_UPLOAD_MB, AEVIS_MAX_ANALYSIS_IMAGES and AEVIS_JOB_TIMEOUT must be positive")

    @property
    def auth_enabled(self) -> bool:
        """Basic auth is on when a users file or ``AEVIS_USERS`` is configured."""
        return self.users_file is not None or bool(self.users)

    @property
    def results_dir(self) -> Path:
        """diskcache folder of analysis results (shared by every worker)."""
        return self.cache_dir.resolve() / "results"

    @property
    def uploads_dir(self) -> Path:
        """Uploaded image sets (one folder per content hash, generated file names)."""
        return self.cache_dir.resolve() / "uploads"

    @property
    def jobs_dir(self) -> Path:
        """diskcache folder of the background-callback manager (one explicit shared folder)."""
        return self.cache_dir.resolve() / "jobs"
