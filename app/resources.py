"""Per-process lazy resources: the model, its layer graph, the result cache and the image pool.

Nothing is loaded at import time. A :class:`Resources` object belongs to one app (or one job
process) and loads each thing once, under a lock; callbacks only read from it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from aevis_core.attacks import AttackConfig, parse_eps
from aevis_core.cache import ResultCache, content_key
from aevis_core.data import ImageSet, demo_path, load_image_set
from aevis_core.graph import LayerGraph, build_graph
from aevis_core.graph.trace import FX_LOCK
from aevis_core.models import ModelEntry, default_device, load_model
from aevis_core.pool import Pool
from app.config import AppConfig

log = logging.getLogger(__name__)


class Resources:
    """Lazily loaded model, graph, cache and image set of one :class:`AppConfig`."""

    def __init__(self, config: AppConfig, device: str | None = None) -> None:
        self.config = config
        self._device = device
        self._lock = threading.RLock()
        self._recent: OrderedDict[str, Any] = OrderedDict()  # content-addressed, so never stale

    def _memo(self, key: str, compute: Callable[[], Any], max_items: int = 8) -> Any:
        """``compute()`` once per key in this process (LRU of ``max_items``; None is not kept).

        Keys name immutable things (content hashes, upload ids), so an entry is never stale.
        """
        with self._lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return self._recent[key]
        value = compute()
        if value is not None:
            with self._lock:
                self._recent[key] = value
                while len(self._recent) > max_items:
                    self._recent.popitem(last=False)
        return value

    def cached(self, key: str | None) -> Any:
        """A result-cache value, memoised in this process (keys are content hashes: immutable)."""
        return self._memo(key, lambda: self.cache.get(key)) if key else None

    @cached_property
    def entry(self) -> ModelEntry:
        """The analysed model (CPU in the web process unless ``device`` is given)."""
        with self._lock:
            return load_model(self.config.model, model_dir=self.config.model_dir, device=self._device or "cpu")

    @cached_property
    def graph(self) -> LayerGraph:
        """Layer DAG of the model."""
        with self._lock, FX_LOCK:
            e = self.entry
            return build_graph(e.model, (3, *e.input_size), e.name)

    @cached_property
    def cache(self) -> ResultCache:
        """Result cache under the configured cache folder."""
        return ResultCache(self.config.results_dir)

    @cached_property
    def images(self) -> ImageSet:
        """The configured image folder, or the demo set matching the model's data."""
        with self._lock:
            if self.config.images:
                s = load_image_set(Path(self.config.images), dataset=self.entry.dataset)
            else:
                demo = "cifar10" if self.entry.dataset == "cifar10" else "nips2017"
                s = load_image_set(demo_path(demo), name=f"demo:{demo}")
            if len(s) > self.config.max_images:
                s = s.subset(range(self.config.max_images))
            return s

    def image_set(self, set_id: str | None = None) -> ImageSet:
        """The configured/demo set (``None`` or ``"demo"``) or a registered upload (by id, checked)."""
        if not set_id or set_id == "demo":
            return self.images
        from app.uploads import load_upload

        def load() -> ImageSet:
            s = load_upload(self.config, set_id, self.entry.dataset)
            return s.subset(range(self.config.max_images)) if len(s) > self.config.max_images else s

        value: ImageSet = self._memo(f"upload-set:{set_id}", load)
        return value

    def attack_config(self) -> AttackConfig:
        """MI-FGSM with the configured eps (default 4/255 ImageNet, 8/255 CIFAR)."""
        eps = self.config.eps or ("8/255" if self.entry.dataset == "cifar10" else "4/255")
        return AttackConfig(method="mifgsm", eps=parse_eps(eps), steps=self.config.attack_steps)

    def pool_key(self, attack: AttackConfig | None = None, source: str | None = None,
                 set_id: str | None = None) -> str:
        """Cache key of a pool (model, images, attack, model the attack was crafted on); memoised,
        since it hashes every preprocessed image of the set."""
        cfg = attack or self.attack_config()

        def compute() -> str:
            x = self.entry.preprocess_many(self.image_set(set_id).images)
            return content_key("pool/v1", self.entry.model_id, x, cfg.to_dict(), source)

        key: str = self._memo(f"pool-key:{set_id or 'demo'}:{json.dumps(cfg.to_dict(), sort_keys=True)}:{source}",
                              compute)
        return key

    def pool(self, key: str | None = None) -> Pool | None:
        """A prepared pool from the cache (the default one when ``key`` is None), else None."""
        value = self.cached(key or self.pool_key())
        return value if isinstance(value, Pool) else None

    def job_device(self) -> str:
        """Device for heavy jobs: CUDA when present (the web process itself stays on CPU)."""
        return str(default_device())
