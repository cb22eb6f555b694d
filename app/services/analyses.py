"""Analyses service: run Analyze, read analyses, and the per-analysis view data (heat maps, patches,
discrepancy maps, faithfulness), each cached under a key derived from the analysis key.

Every request value (layer, channel, stride) is checked against the analysis before any model call:
an unknown layer or a channel past the layer's maps is a one-line :class:`AEVisError`, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from aevis_core.analysis import Analysis, analyze
from aevis_core.cache import content_key
from aevis_core.datapath.extract import ExtractConfig, datapath_to_dict
from aevis_core.errors import AEVisError
from aevis_core.layout.treecut import datapath_doi
from aevis_core.neuron import activation_maps, dim_unimportant, discrepancy_map, top_activating, top_patches
from aevis_core.pool import Pool
from app.config import AppConfig
from app.services.model import ModelService
from app.services.pools import PoolService
from app.services.store import CacheFullError, ResultStore

log = logging.getLogger(__name__)
Report = Callable[[int, int, str], None]
PER_GROUP = 6          # heat maps per group (the grid shows at most this many per row)
TOP_PATCHES = 6
DISCREPANCY_IMAGES = 3
STRIDES = range(1, 17)
# datapath methods a user can pick (ExtractConfig.method): the held-out default, the learned gates, a baseline
METHOD_LABELS = {"qp": "QP (default)", "gates": "learned gates", "gradxact_topk": "grad×act top-k"}


def item_label(pool: Pool, item_id: str) -> str:
    """Display name of a pool item: its id, marked "(adv)" when it is an adversarial twin."""
    idx = pool.index().get(item_id)
    if idx is not None and pool.items[idx].kind == "adversarial":
        return f"{pool.items[idx].source} (adv)"
    return item_id


class AnalysisService:
    """Analyses by key and the view data computed from them."""

    def __init__(self, config: AppConfig, model: ModelService, store: ResultStore, pools: PoolService) -> None:
        self.config = config
        self.model = model
        self.store = store
        self.pools = pools

    # -- analyses -------------------------------------------------------------------------------
    def get(self, key: str | None) -> Analysis | None:
        """A finished analysis, or None."""
        value: Analysis | None = self.store.get(key, Analysis)
        return value

    def require(self, key: str | None) -> Analysis:
        """A finished analysis, or a one-line error."""
        a = self.get(key)
        if a is None:
            raise AEVisError("this analysis is not available any more: press Analyze again")
        return a

    def run(self, groups: dict[str, list[str]], pool_key: str | None, report: Report,
            job_model: ModelService | None = None, method: str = "qp") -> Analysis:
        """Analyze ``groups`` of the pool with the datapath ``method`` (cached by content; one
        computation per key across processes)."""
        if method not in METHOD_LABELS:
            raise AEVisError(f"unknown datapath method {str(method)[:40]!r}: use one of {', '.join(METHOD_LABELS)}")
        pool = self.pools.require(pool_key)
        worker = job_model or self.model
        result = analyze(worker.entry, lambda: worker.graph, pool, groups, config=ExtractConfig(method=method),
                         cache=self.store.cache, progress=report, max_images=self.config.max_analysis_images)
        if not self.store.has(result.key):
            raise CacheFullError(self.store.write_message())
        return result

    # -- checks ---------------------------------------------------------------------------------
    @staticmethod
    def check_layer(a: Analysis, layer: Any) -> str:
        """``layer`` if the analysis has it, else a one-line error."""
        if not isinstance(layer, str) or layer not in a.stats.layers:
            raise AEVisError(f"unknown layer {str(layer)[:80]!r} for this analysis")
        return layer

    def check_map(self, a: Analysis, layer: Any, channel: Any) -> tuple[str, int]:
        """(layer, channel) if the channel is one of the layer's feature maps, else a one-line error."""
        name = self.check_layer(a, layer)
        n = next(iter(a.datapaths.values())).layers[name].n
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < n:
            raise AEVisError(f"feature map {str(channel)[:20]} does not exist in {name} ({n} maps: 0 to {n - 1})")
        return name, channel

    # -- layer level ----------------------------------------------------------------------------
    @staticmethod
    def doi(a: Analysis) -> dict[str, float]:
        """Per-layer degree of interest: datapath difference between the groups."""
        return datapath_doi({name: {k: v.critical for k, v in dp.layers.items()}
                             for name, dp in a.datapaths.items()})

    def initial_layer(self, a: Analysis) -> str:
        """The diverging layer, else the layer whose datapaths differ most."""
        if a.divergence is not None and a.divergence.layer:
            return str(a.divergence.layer)
        doi = self.doi(a)
        return max(doi, key=lambda k: (doi[k], k)) if doi else next(iter(a.stats.layers))

    # -- neuron level ---------------------------------------------------------------------------
    def heat_maps(self, a: Analysis, pool_key: str | None, layer: str, channel: int) -> dict[str, np.ndarray]:
        """Activation maps (N, h, w) of one feature map for the first images of each group (cached)."""
        layer, channel = self.check_map(a, layer, channel)

        def compute() -> dict[str, np.ndarray]:
            pool = self.pools.require(pool_key)
            with self.model.locked():
                return {g: activation_maps(self.model.entry, self.model.graph, layer, channel,
                                           pool.tensor(ids[:PER_GROUP])) for g, ids in a.groups.items()}

        out: dict[str, np.ndarray] = self.store.once(content_key("heat/v2", a.key, layer, channel, PER_GROUP),
                                                     compute, strict=False)
        return out

    def top_patches(self, a: Analysis, pool_key: str | None, layer: str,
                    channel: int) -> tuple[list[np.ndarray], list[str]]:
        """Crops around the strongest activations of the map over all analysed images (cached)."""
        layer, channel = self.check_map(a, layer, channel)

        def compute() -> tuple[list[np.ndarray], list[str]]:
            pool = self.pools.require(pool_key)
            ids = [i for g in a.groups.values() for i in g]
            with self.model.locked():
                tops = top_patches(self.model.entry, self.model.graph, layer, channel, pool.tensor(ids),
                                   k=min(TOP_PATCHES, len(ids)))
            return [t.crop for t in tops], [item_label(pool, ids[t.image_index]) for t in tops]

        out: tuple[list[np.ndarray], list[str]] = self.store.once(
            content_key("patches/v2", a.key, layer, channel, TOP_PATCHES), compute, strict=False)
        return out

    def discrepancy_key(self, a: Analysis, layer: str, channel: int, stride: int) -> str:
        """Result key of the discrepancy maps of one feature map at one occluder stride."""
        return content_key("discrepancy/v2", a.key, layer, channel, stride)

    def discrepancy(self, a: Analysis, pool_key: str | None, layer: str, channel: int, stride: Any,
                    report: Report, job_model: ModelService | None = None) -> str:
        """Key of the discrepancy maps (8x8 occluder) of the most activating analysed images; computed
        once per (analysis, layer, map, stride) and stored as ``(images, titles)``."""
        layer, channel = self.check_map(a, layer, channel)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride not in STRIDES:
            raise AEVisError(f"the occluder stride must be an integer from {STRIDES.start} to {STRIDES.stop - 1}")
        key = self.discrepancy_key(a, layer, channel, stride)
        worker = job_model or self.model

        def compute() -> tuple[list[np.ndarray], list[str]]:
            pool = self.pools.require(pool_key)
            ids = [i for g in a.groups.values() for i in g]
            x = pool.tensor(ids)
            top = top_activating(worker.entry, worker.graph, layer, channel, x, k=min(DISCREPANCY_IMAGES, len(ids)))
            n = len(top)
            images, titles = [], []
            for j, idx in enumerate(top.tolist()):
                def prog(done: int, total: int, _j: int = j) -> None:
                    report(_j * total + done, n * total, f"image {_j + 1}/{n}: {done}/{total} occlusions")

                dmap = discrepancy_map(worker.entry, worker.graph, layer, channel, x[idx], patch=8, stride=stride,
                                       progress=prog)
                images.append(dim_unimportant(x[idx], dmap, keep_fraction=0.25))
                titles.append(item_label(pool, ids[idx]))
            return images, titles

        self.store.once(key, compute)
        return key

    def faithfulness_key(self, a: Analysis, layer: str) -> str:
        """Result key of the faithfulness table of a layer."""
        return content_key("faith/v2", a.key, layer)

    def faithfulness(self, a: Analysis, pool_key: str | None, layer: str, report: Report,
                     job_model: ModelService | None = None) -> str:
        """Key of the equal-k faithfulness table at ``layer`` on the first group's images, evaluating
        the extraction configuration of the datapath on screen (stored as a dict)."""
        from aevis_core.faithfulness import faithfulness_curve

        layer = self.check_layer(a, layer)
        key = self.faithfulness_key(a, layer)
        worker = job_model or self.model

        def compute() -> dict[str, Any]:
            pool = self.pools.require(pool_key)
            report(0, 1, "masking maps layer by layer")
            name, ids = next(iter(a.groups.items()))
            dp = a.datapaths[name]  # the datapath on screen, on the images it was extracted from
            table: dict[str, Any] = faithfulness_curve(worker.entry, worker.graph, pool.tensor(ids), layer,
                                                       datapath=dp)
            return table

        self.store.once(key, compute)
        return key

    def stored(self, key: str | None) -> Any:
        """A stored view result (None when absent)."""
        return self.store.get(key)

    # -- export ---------------------------------------------------------------------------------
    @staticmethod
    def export_doc(a: Analysis) -> dict[str, Any]:
        """The JSON export of an analysis."""
        return {"model": a.model_id, "groups": a.groups,
                "datapaths": {k: datapath_to_dict(v) for k, v in a.datapaths.items()},
                "statistics": a.stats.to_dict(),
                "divergence": a.divergence.to_dict() if a.divergence else None}
