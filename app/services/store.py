"""The shared result store of the app: the content-addressed disk cache plus a per-process memo.

Keys are content hashes (:func:`aevis_core.cache.content_key`), so a memoised value is never
stale. :meth:`ResultStore.put` raises :class:`CacheFullError` with one line when the disk refuses a
job's result (full or read-only), so a job never reports success for something it could not keep.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from aevis_core.cache import ResultCache
from aevis_core.errors import AEVisError

log = logging.getLogger(__name__)
T = TypeVar("T")


class CacheFullError(AEVisError):
    """A computed result could not be stored."""


class ResultStore:
    """Results by content key: disk cache shared by every process, memo of recent values in this one."""

    MEMO_KINDS = ("pool/", "analysis/")  # large and read by every view request; view data is read from disk

    def __init__(self, directory: Path, memo_items: int = 16) -> None:
        self.directory = directory
        self.cache = ResultCache(directory)
        self._memo: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._max = memo_items

    def _remember(self, key: str, value: Any) -> None:
        if not key.startswith(self.MEMO_KINDS):  # many small view results must not evict an analysis
            return
        with self._lock:
            self._memo[key] = value
            self._memo.move_to_end(key)
            while len(self._memo) > self._max:
                self._memo.popitem(last=False)

    def get(self, key: str | None, kind: type[T] | None = None) -> Any:
        """The value of ``key`` (memo, then disk), or None; when ``kind`` is given, None unless it is one."""
        if not key:
            return None
        with self._lock:
            value = self._memo.get(key)
        if value is None:
            value = self.cache.get(key)
            if value is not None:
                self._remember(key, value)
        if kind is not None and not isinstance(value, kind):
            return None
        return value

    def has(self, key: str) -> bool:
        """Whether ``key`` is stored (memo or disk)."""
        with self._lock:
            if key in self._memo:
                return True
        return self.cache.has(key)

    def write_message(self) -> str:
        """One line: a result was computed but the cache folder refused it."""
        return (f"the result was computed but could not be saved: the cache folder {self.directory} is full or "
                f"read-only ({self.cache.write_error}); free space or fix its permissions, then retry")

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` for every process, or raise :class:`CacheFullError`."""
        self._remember(key, value)
        if not self.cache.put(key, value):
            raise CacheFullError(self.write_message())

    @contextlib.contextmanager
    def computing(self, key: str) -> Iterator[None]:
        """The per-key cross-process lock (see :meth:`aevis_core.cache.ResultCache.computing`)."""
        with self.cache.computing(key):
            yield

    def once(self, key: str, compute: Callable[[], T], strict: bool = True) -> T:
        """The value of ``key``: stored, or computed once across processes and stored.

        ``strict=False`` (cheap view data): a refused write is logged and the value served anyway.
        """
        hit = self.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        with self.computing(key):
            hit = self.get(key)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
            value = compute()
            try:
                self.put(key, value)
            except CacheFullError:
                if strict:
                    raise
                log.warning("view result %s served without caching: %s", key[:24], self.cache.write_error)
        return value
