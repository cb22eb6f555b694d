"""Result cache: content-hash keys in a diskcache directory shared by CLI, jobs and workers.

Keys hash what determines a result: the model identity (name + weights hash), the exact input
pixels (the preprocessed float tensor's bytes) and the method with all its parameters, so the
dashboard reuses results the CLI computed and vice versa. Values are written by AEVis itself
(diskcache pickles them); the directory must not be writable by untrusted users.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import diskcache
import numpy as np
import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


def default_cache_dir() -> Path:
    """``AEVIS_CACHE_DIR`` or ``./cache``."""
    return Path(os.environ.get("AEVIS_CACHE_DIR", "cache")).resolve()


def tensor_hash(x: torch.Tensor | np.ndarray) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (contiguous, on the CPU)."""
    arr = x.detach().cpu().contiguous().numpy() if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
    h = hashlib.sha256()
    h.update(f"{arr.dtype}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot hash {type(obj).__name__}")


def content_key(kind: str, *parts: Any) -> str:
    """Stable key ``kind:sha256(json(parts))``; tensors/arrays are replaced by their hash."""
    norm = [tensor_hash(p) if isinstance(p, torch.Tensor | np.ndarray) else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, default=_plain).encode()
    return f"{kind}:{hashlib.sha256(blob).hexdigest()}"


class ResultCache:
    """A diskcache.Cache at one explicit directory (every process/worker sees every entry)."""

    def __init__(self, directory: Path | str | None = None, size_limit_gb: float = 4.0) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "results"
        self.cache = diskcache.Cache(str(self.directory), size_limit=int(size_limit_gb * 2**30))

    def get(self, key: str) -> Any | None:
        """The cached value or None."""
        return self.cache.get(key)

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> tuple[T, bool]:
        """(value, hit): the cached value, or compute it, store it and return it.

        Concurrent callers with the same key may both compute; diskcache's atomic ``set``
        means the entry is never corrupt and the last writer wins with an identical value.
        """
        hit = self.cache.get(key)
        if hit is not None:
            log.info("cache hit %s", key[:24])
            return hit, True
        value = compute()
        try:
            self.cache.set(key, value)
        except OSError as exc:  # full or read-only disk: still return the result
            log.warning("could not store %s in the cache: %s", key[:24], exc)
        return value, False

    def close(self) -> None:
        """Close the underlying SQLite handles."""
        self.cache.close()
