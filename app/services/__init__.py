"""The app's services: the model, the result store, pools, analyses and upload sets of one config.

Callbacks and jobs receive one :class:`Services` object; each service owns its keys, locks and
storage. Nothing is loaded until first use.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import AppConfig
from app.services.analyses import AnalysisService
from app.services.model import ModelService
from app.services.pools import PoolService
from app.services.store import ResultStore


@dataclass
class Services:
    """Everything a callback or job needs, for one :class:`AppConfig`."""

    config: AppConfig
    model: ModelService
    store: ResultStore
    pools: PoolService
    analyses: AnalysisService

    @classmethod
    def create(cls, config: AppConfig) -> Services:
        """Services of ``config`` (the web process's model stays on the CPU)."""
        model = ModelService(config, "cpu")
        store = ResultStore(config.results_dir)
        pools = PoolService(config, model, store)
        return cls(config, model, store, pools, AnalysisService(config, model, store, pools))

    def job_model(self) -> ModelService:
        """The model for heavy jobs: this one on CPU, a CUDA copy when a GPU is present."""
        device = self.config.job_device()
        return self.model if device == "cpu" else ModelService(self.config, device)
