"""Cached datapath extraction: the entry point shared by the CLI and the dashboard jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import torch

from aevis_core.cache import ResultCache, content_key
from aevis_core.datapath.extract import Datapath, ExtractConfig, Progress, extract_datapath
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry


def cached_datapath(entry: ModelEntry, graph: LayerGraph, x: torch.Tensor, config: ExtractConfig,
                    cache: ResultCache | None, layers: Sequence[str] | None = None,
                    labels: Sequence[int | None] | None = None,
                    progress: Progress | None = None) -> tuple[Datapath, bool]:
    """(datapath, cache hit): extract, keyed by model id + weights, pixels, config and layers."""
    key = content_key("datapath/v1", entry.model_id, x, asdict(config),
                      list(layers) if layers is not None else None,
                      list(labels) if labels is not None and config.target == "true" else None)

    def compute() -> Datapath:
        return extract_datapath(entry, graph, x, config, layers=layers, labels=labels, progress=progress)

    if cache is None:
        return compute(), False
    return cache.get_or_compute(key, compute)
