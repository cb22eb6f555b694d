"""Pools service: the image sets a page can work on and their prepared pools (twins, predictions, scores).

A pool is identified by its content key (model, preprocessed pixels, attack, crafting model); it is
built once across processes (per-key ``flock``) and kept in the shared result store. Image sets are
the configured/demo set (``demo``) or a registered upload (16 hex digits), never a request path.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from aevis_core.attacks import AttackConfig
from aevis_core.cache import content_key
from aevis_core.data import ImageSet, demo_path, load_image_set
from aevis_core.errors import AEVisError
from aevis_core.models import ZOO, ModelEntry, load_model
from aevis_core.pool import Pool, build_pool
from app.config import DEMO_SET, AppConfig
from app.services import uploads
from app.services.model import ModelService
from app.services.store import ResultStore

log = logging.getLogger(__name__)
Report = Callable[[int, int, str], None]
POOL_KIND = "pool/v1"  # kind part of every pool's content key


class PoolService:
    """Image sets by id and their pools (key, build-once, read)."""

    def __init__(self, config: AppConfig, model: ModelService, store: ResultStore) -> None:
        self.config = config
        self.model = model
        self.store = store
        self._sets: dict[str, ImageSet] = {}
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()

    def image_set(self, set_id: str = DEMO_SET) -> ImageSet:
        """The configured/demo set or a registered upload (id checked first), capped at ``max_images``."""
        with self._lock:
            if set_id in self._sets:
                return self._sets[set_id]
        if set_id == DEMO_SET:
            if self.config.images:
                s = load_image_set(self.config.images, dataset=self.model.dataset,
                                   limits=self.config.decode_limits())
            else:
                demo = "cifar10" if self.model.dataset == "cifar10" else "nips2017"
                s = load_image_set(demo_path(demo), name=f"demo:{demo}")
        else:
            s = uploads.load_upload(self.config, set_id, self.model.dataset)
        if len(s) > self.config.max_images:
            s = s.subset(range(self.config.max_images))
        with self._lock:
            self._sets[set_id] = s
        return s

    def key(self, set_id: str = DEMO_SET, attack: AttackConfig | None = None, source: str | None = None) -> str:
        """Content key of the pool of ``set_id`` under ``attack`` (default MI-FGSM) crafted on ``source``."""
        cfg = attack or self.model.attack_config()
        memo = f"{set_id}:{json.dumps(cfg.to_dict(), sort_keys=True)}:{source}"
        with self._lock:
            if memo in self._keys:
                return self._keys[memo]
        x = self.model.entry.preprocess_many(self.image_set(set_id).images)
        key = content_key(POOL_KIND, self.model.entry.model_id, x, cfg.to_dict(), source)
        with self._lock:
            self._keys[memo] = key
        return key

    def get(self, key: str | None) -> Pool | None:
        """A prepared pool, or None."""
        value: Pool | None = self.store.get(key, Pool)
        return value

    def require(self, key: str | None) -> Pool:
        """A prepared pool, or a one-line error."""
        pool = self.get(key)
        if pool is None:
            raise AEVisError("the images are not prepared (yet): wait for the preparation, or choose the image set "
                             "again")
        return pool

    def prepare(self, set_id: str, report: Report, job_model: ModelService | None = None,
                attack: AttackConfig | None = None, source: str | None = None) -> str:
        """Key of the pool of ``set_id``, building and storing it unless it is stored already; one
        builder per key at a time (a second caller waits, then reads the first one's result)."""
        cfg = attack or self.model.attack_config()
        key = self.key(set_id, cfg, source)
        if self.store.has(key):
            return key
        with self.store.computing(key):
            if not self.store.has(key):
                report(0, 1, "loading the model and the images")
                worker = job_model or self.model
                src = self._source_model(source, worker)
                pool = build_pool(worker.entry, self.image_set(set_id), cfg, progress=report, source=src)
                self.store.put(key, pool)
                log.info("pool %s of set %s prepared", key[:24], set_id)
        return key

    def _source_model(self, source: str | None, worker: ModelService) -> ModelEntry | None:
        """The zoo model a transfer attack is crafted on (None: white-box), checked to fit."""
        if source is None:
            return None
        if source not in ZOO:
            raise AEVisError(f"unknown source model {source!r}")
        src = load_model(source, device=worker.device)
        if src.input_size != worker.entry.input_size or src.num_classes != worker.entry.num_classes:
            raise AEVisError(f"{source} does not take the same images and classes as {self.config.model}")
        return src

    def source_options(self) -> list[dict[str, str]]:
        """Models an attack can be crafted on: this one (white-box) and zoo models of the same data."""
        return [{"label": f"{name} (white-box)" if name == self.config.model else f"{name} (transfer)",
                 "value": name} for name, z in ZOO.items() if z.dataset == self.model.dataset]
