"""Result cache: content-hash keys in a diskcache directory shared by CLI, jobs and workers.

Keys hash what determines a result: the model identity (name + weights hash), the exact input
pixels (the preprocessed float tensor's bytes) and the method with all its parameters, so the
dashboard reuses results the CLI computed and vice versa. Values are written by AEVis itself
(diskcache pickles them); the directory must not be writable by untrusted users.

Faults: a cache that cannot be read or written (read-only, disk full, broken SQLite file) never
stops a computation: :meth:`ResultCache.get` reads as a miss, :meth:`ResultCache.put` returns
False and keeps the reason in :attr:`ResultCache.write_error`. Two processes computing the same
key are serialised by an ``flock`` on a per-key lock file (released by the OS when a holder dies),
so a result is computed once and the second caller reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
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


CACHE_ERRORS = (OSError, sqlite3.Error)


class ResultCache:
    """A diskcache.Cache at one explicit directory (every process/worker sees every entry)."""

    def __init__(self, directory: Path | str | None = None, size_limit_gb: float = 4.0) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "results"
        self.cache = diskcache.Cache(str(self.directory), size_limit=int(size_limit_gb * 2**30))
        self.write_error: str | None = None

    def get(self, key: str) -> Any | None:
        """The cached value or None (an unreadable cache reads as a miss, logged)."""
        try:
            return self.cache.get(key)
        except CACHE_ERRORS as exc:
            log.warning("could not read %s from the cache: %s", key[:24], exc)
            return None

    def has(self, key: str) -> bool:
        """Whether ``key`` is stored (without reading its value; False when the cache is unreadable)."""
        try:
            return key in self.cache
        except CACHE_ERRORS as exc:
            log.warning("could not read %s from the cache: %s", key[:24], exc)
            return False

    def put(self, key: str, value: Any) -> bool:
        """Store ``value``; False (reason in :attr:`write_error`, logged) when the disk refuses."""
        try:
            self.cache.set(key, value)
        except CACHE_ERRORS as exc:  # full or read-only disk: the caller still has the value
            self.write_error = f"{type(exc).__name__}: {exc}"
            log.warning("could not store %s in the cache: %s", key[:24], self.write_error)
            return False
        self.write_error = None
        return True

    @contextlib.contextmanager
    def computing(self, key: str) -> Iterator[None]:
        """Hold the per-key lock (blocks while another process or thread computes ``key``).

        An ``flock`` on ``<dir>/locks/<sha1(key)>.lock``: released by the OS if the holder dies,
        so a killed job never blocks a retry. No lock when the folder is not writable.
        """
        lock_dir = self.directory / "locks"
        try:
            lock_dir.mkdir(exist_ok=True)
            fd = os.open(lock_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            log.warning("no lock for %s (%s): concurrent callers may compute it twice", key[:24], exc)
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> tuple[T, bool]:
        """(value, hit): the cached value, or compute it (once across processes), store it, return it."""
        hit = self.get(key)
        if hit is not None:
            log.info("cache hit %s", key[:24])
            return hit, True
        with self.computing(key):
            hit = self.get(key)  # computed by another caller while we waited
            if hit is not None:
                return hit, True
            value = compute()
            self.put(key, value)
        return value, False

    def close(self) -> None:
        """Close the underlying SQLite handles."""
        self.cache.close()
