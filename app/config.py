"""Dashboard configuration from environment variables and ``aevis serve`` flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class AppConfig:
    """Everything the dashboard needs to start; no model is loaded until first use.

    Environment: ``AEVIS_MODEL``, ``AEVIS_IMAGES``, ``AEVIS_CACHE_DIR``, ``AEVIS_HOST``,
    ``AEVIS_PORT``, ``AEVIS_EPS`` (e.g. ``4/255``), ``AEVIS_ATTACK_STEPS``, ``AEVIS_MAX_IMAGES``.
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

    @classmethod
    def from_env(cls, **overrides: object) -> AppConfig:
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
        )
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def results_dir(self) -> Path:
        """diskcache folder of analysis results (shared by every worker)."""
        return self.cache_dir.resolve() / "results"

    @property
    def jobs_dir(self) -> Path:
        """diskcache folder of the background-callback manager (one explicit shared folder)."""
        return self.cache_dir.resolve() / "jobs"
