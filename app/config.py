"""Dashboard configuration: the ONLY place in ``app/`` that reads the environment.

:meth:`AppConfig.from_env` reads every ``AEVIS_*`` variable (and ``REDIS_URL``) once; the rest of the
app receives the :class:`AppConfig` object. The README's "Configuration" table lists every field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from aevis_core.data import UploadLimits
from aevis_core.data.decode import DecodeLimits

DEMO_SET = "demo"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _flag(raw: str) -> bool:
    return raw.strip().lower() not in ("0", "false", "no", "off", "")


def _path(raw: str) -> Path | None:
    return Path(raw) if raw else None


# env variable -> (field, parser); fields absent here are not configurable from the environment
ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "AEVIS_MODEL": ("model", str),
    "AEVIS_IMAGES": ("images", lambda s: s or None),
    "AEVIS_CACHE_DIR": ("cache_dir", Path),
    "AEVIS_HOST": ("host", str),
    "AEVIS_PORT": ("port", int),
    "AEVIS_EPS": ("eps", lambda s: s or None),
    "AEVIS_ATTACK_STEPS": ("attack_steps", int),
    "AEVIS_MAX_IMAGES": ("max_images", int),
    "AEVIS_JOB_BACKEND": ("job_backend", lambda s: s.strip().lower()),
    "REDIS_URL": ("redis_url", str),
    "AEVIS_USERS_FILE": ("users_file", _path),
    "AEVIS_USERS": ("users", lambda s: s or None),
    "AEVIS_MAX_UPLOAD_MB": ("max_upload_mb", float),
    "AEVIS_MAX_UPLOAD_FILES": ("max_upload_files", int),
    "AEVIS_MAX_UPLOAD_MP": ("max_upload_mp", float),
    "AEVIS_MAX_PIXELS": ("max_pixels", int),
    "AEVIS_MAX_IMAGE_MB": ("max_image_mb", float),
    "AEVIS_MAX_ANALYSIS_IMAGES": ("max_analysis_images", int),
    "AEVIS_JOB_TIMEOUT": ("job_timeout", float),
    "AEVIS_HEARTBEAT_S": ("heartbeat_s", float),
    "AEVIS_MODEL_DIR": ("model_dir", _path),
    "AEVIS_JOB_LAUNCHER": ("job_launcher", _flag),
    "AEVIS_PREPARE_ON_START": ("prepare_on_start", _flag),
    "AEVIS_DEVICE": ("device", lambda s: s.strip().lower() or "auto"),
    "AEVIS_WORKERS": ("workers", int),
    "AEVIS_THREADS": ("threads", int),
    "AEVIS_REQUEST_TIMEOUT": ("request_timeout", int),
    "AEVIS_MAX_REQUESTS": ("max_requests", int),
    "AEVIS_ACCESS_LOG": ("access_log", lambda s: s or None),
    "AEVIS_LOG_LEVEL": ("log_level", lambda s: s.strip().upper() or "INFO"),
}


@dataclass(frozen=True)
class AppConfig:
    """Everything the dashboard needs to start; no model is loaded until first use."""

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
    max_upload_files: int = 200
    max_upload_mp: float = 100.0
    max_pixels: int = 16_000_000
    max_image_mb: float = 20.0
    max_analysis_images: int = 200
    job_timeout: float = 3600.0
    heartbeat_s: float = 5.0
    model_dir: Path | None = None
    job_launcher: bool = True
    prepare_on_start: bool = False  # from_env: True (the server prepares the demo when it starts)
    device: str = "auto"
    workers: int = 2
    threads: int = 4
    request_timeout: int = 120
    max_requests: int = 1000
    access_log: str | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AppConfig:
        """Defaults, then environment variables, then explicit overrides (CLI flags; None = not given).

        Raises ``ValueError`` with one line naming the variable for a value that cannot be parsed.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {"prepare_on_start": True}
        for var, (name, parse) in ENV.items():
            raw = source.get(var)
            if raw is None:
                continue
            try:
                values[name] = parse(raw)
            except ValueError:
                raise ValueError(f"{var}={raw!r} is not a valid value") from None
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None and k in known})
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def with_(self, **changes: Any) -> AppConfig:
        """A copy with some fields changed (validated)."""
        cfg = replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``ValueError`` with one line for a setting that cannot work."""
        if self.job_backend not in ("diskcache", "celery"):
            raise ValueError(f"AEVIS_JOB_BACKEND must be diskcache or celery, not {self.job_backend!r}")
        positive = {"AEVIS_MAX_UPLOAD_MB": self.max_upload_mb, "AEVIS_MAX_ANALYSIS_IMAGES": self.max_analysis_images,
                    "AEVIS_JOB_TIMEOUT": self.job_timeout, "AEVIS_MAX_IMAGES": self.max_images,
                    "AEVIS_MAX_UPLOAD_FILES": self.max_upload_files, "AEVIS_MAX_UPLOAD_MP": self.max_upload_mp,
                    "AEVIS_MAX_PIXELS": self.max_pixels, "AEVIS_MAX_IMAGE_MB": self.max_image_mb,
                    "AEVIS_HEARTBEAT_S": self.heartbeat_s, "AEVIS_ATTACK_STEPS": self.attack_steps,
                    "AEVIS_WORKERS": self.workers, "AEVIS_THREADS": self.threads}
        bad = [name for name, value in positive.items() if not value > 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"AEVIS_DEVICE must be auto, cpu or cuda[:N], not {self.device!r}")

    @property
    def auth_enabled(self) -> bool:
        """Basic auth is on when a users file or ``AEVIS_USERS`` is configured."""
        return self.users_file is not None or bool(self.users)

    @property
    def loopback(self) -> bool:
        """Whether the server binds a loopback address only."""
        return self.host in LOOPBACK

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

    @property
    def status_dir(self) -> Path:
        """Small JSON status files (demo preparation progress, readiness)."""
        return self.cache_dir.resolve() / "status"

    def upload_limits(self) -> UploadLimits:
        """Limits of one upload and of each decoded image."""
        return UploadLimits(max_files=self.max_upload_files, max_total_bytes=int(self.max_upload_mb * 2**20),
                            max_total_pixels=int(self.max_upload_mp * 1e6), image=self.decode_limits())

    def decode_limits(self) -> DecodeLimits:
        """Limits of one image (pixels from the header, file bytes)."""
        return DecodeLimits(max_pixels=self.max_pixels, max_bytes=int(self.max_image_mb * 2**20))

    def job_device(self) -> str:
        """Device of heavy jobs: CUDA when present unless ``AEVIS_DEVICE=cpu`` (the web process stays on CPU)."""
        if self.device == "cpu":
            return "cpu"
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        return "cuda" if self.device == "auto" else self.device
