"""The analysed model of one process: loaded once, its layer graph and hierarchy built once.

Threads of a web worker share one :class:`ModelService`; every torch or FX call that reads the
model goes through :meth:`ModelService.locked` (torch.fx tracing is not thread-safe, and one
forward at a time keeps a web worker's memory bounded).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from functools import cached_property

from aevis_core.attacks import AttackConfig, parse_eps
from aevis_core.graph import LayerGraph, build_graph
from aevis_core.graph.hierarchy import GroupNode, build_hierarchy
from aevis_core.graph.trace import FX_LOCK
from aevis_core.models import ModelEntry, load_model
from app.config import AppConfig

log = logging.getLogger(__name__)

DEFAULT_EPS = {"cifar10": "8/255"}  # per dataset; everything else 4/255
FALLBACK_EPS = "4/255"


def eps_for(config: AppConfig, dataset: str | None) -> str:
    """The pool's ε as text: ``AEVIS_EPS``, else the dataset default (8/255 CIFAR, 4/255 otherwise)."""
    return config.eps or DEFAULT_EPS.get(str(dataset), FALLBACK_EPS)


def configured_eps(config: AppConfig) -> str:
    """:func:`eps_for` without loading the model (the zoo knows its dataset; user models get 4/255)."""
    from aevis_core.models import ZOO

    return eps_for(config, ZOO[config.model].dataset if config.model in ZOO else None)


class ModelService:
    """Lazily loaded model entry, layer graph and hierarchy of ``config.model`` on ``device``."""

    def __init__(self, config: AppConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = device
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the process-wide model lock (FX tracing and forwards of view callbacks)."""
        with self._lock, FX_LOCK:
            yield

    @cached_property
    def entry(self) -> ModelEntry:
        """The model (``self.device``); loaded on first use, once per process."""
        with self._lock:
            log.info("loading model %s on %s", self.config.model, self.device)
            return load_model(self.config.model, model_dir=self.config.model_dir, device=self.device)

    @cached_property
    def graph(self) -> LayerGraph:
        """Layer DAG of the model (traced once per process, shared by threads)."""
        with self.locked():
            e = self.entry
            return build_graph(e.model, (3, *e.input_size), e.name)

    @cached_property
    def hierarchy(self) -> GroupNode:
        """Module hierarchy of the layer graph (for tree cuts)."""
        return build_hierarchy(self.graph)

    @property
    def dataset(self) -> str:
        """The model's dataset name (``imagenet``, ``cifar10``, ...)."""
        return str(self.entry.dataset)

    def default_eps(self) -> str:
        """The pool's ε as text: ``AEVIS_EPS``, else the dataset default (8/255 CIFAR, 4/255 otherwise)."""
        return eps_for(self.config, self.dataset)

    def attack_config(self) -> AttackConfig:
        """MI-FGSM of the default pool (configured ε and steps)."""
        return AttackConfig(method="mifgsm", eps=parse_eps(self.default_eps()), steps=self.config.attack_steps)
