"""Datapath extraction (Liu et al., VAST 2018, Sec. 4.1): critical feature maps per layer.

``extract_datapath(entry, graph, x)`` runs the images in batches; per batch ONE forward and ONE
backward pass give q (B, C) for every chosen layer (:mod:`.scores_pass`), which is folded into a
per-layer :class:`~aevis_core.datapath.qp.QPAccumulator` (memory O(C²) per layer, independent of
the number of images). Then Eq. 5 is solved exactly per layer and maps with ``z > threshold``
(or the ``top_k`` largest z) are critical. Comparison methods use the same pass:
``act_topk`` (largest mean activation, the approach the paper criticises), ``gradxact_topk``
(largest Σ_k q_kj) and ``random``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aevis_core.datapath.connections import connect
from aevis_core.datapath.lowrank import solve_low_rank
from aevis_core.datapath.qp import default_lambda
from aevis_core.datapath.scores_pass import SCORES, batch_scores
from aevis_core.datapath.selection import QPAccumulator, coverage_set, critical_set, rank_maps
from aevis_core.errors import AEVisError
from aevis_core.graph.capture import LayerCapture
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry

METHODS = ("qp", "act_topk", "gradxact_topk", "random", "gates")
NORMALIZE = ("none", "l1")
LAM_MODES = ("relative", "paper")
Progress = Callable[[int, int], None]


@dataclass
class ExtractConfig:
    """Options of :func:`extract_datapath`.

    Defaults (QP, ``logit``, ``none``, ρ = 1) chosen on held-out classes (``bench/faithfulness.py``:
    parameters tuned on half of the demo classes, the best method on the other half's class sets).
    ``score``: differentiate the target's probability (``prob``, the paper) or ``logit``.
    ``normalize``: ``l1`` divides each image's q by Σ_j |q_kj| so every image weighs the same
    (confident images have tiny probability gradients); ``none`` keeps q as is.
    ``lam``: an absolute ridge weight λ; when None, ``lam_mode`` decides: ``relative``
    (default) λ = ρ·tr(Q)/n, a ridge relative to the data, or ``paper`` λ = 0.1/n². With the
    paper's λ and c = Q·1, z = 1 is almost optimal and z > 0.5 keeps (nearly) every map when
    N ≥ n, or about half when N < n (rank of Q) — see README "Faithfulness"; the relative λ with
    ρ = 0.1 gives informative critical sets. ``threshold``/``top_k``: critical set rule
    (non-QP methods default to the top ⌈10 %⌉ of the maps). ``target``: ``pred`` | ``true`` |
    a class index. ``coverage``: τ of :func:`~aevis_core.datapath.selection.coverage_set` —
    in a layer whose total contribution Σq is positive, the set is extended along the method's
    ranking until it explains ≥ τ of Σq (never empty there); None = the bare threshold/top-k
    rule (ignored with an explicit ``top_k``). ``method="gates"``: learned whole-network gates
    (:mod:`~aevis_core.datapath.gates`) with L1 weight ``sparsity`` and time budget ``budget_s``.
    """

    method: str = "qp"
    score: str = "logit"
    normalize: str = "none"
    lam: float | None = None
    lam_mode: str = "relative"
    rho: float = 1.0
    threshold: float = 0.5
    top_k: int | None = None
    target: str | int = "pred"
    batch_size: int = 32
    seed: int = 0
    coverage: float | None = 0.5
    sparsity: float = 5.0
    budget_s: float = 25.0

    def validate(self) -> ExtractConfig:
        """Raise :class:`AEVisError` for an unknown option; return self."""
        if self.method not in METHODS:
            raise AEVisError(f"unknown datapath method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.score not in SCORES:
            raise AEVisError(f"unknown score {self.score!r}: use prob or logit")
        if self.normalize not in NORMALIZE:
            raise AEVisError(f"unknown normalisation {self.normalize!r}: use none or l1")
        if self.lam_mode not in LAM_MODES:
            raise AEVisError(f"unknown lambda mode {self.lam_mode!r}: use relative or paper")
        if self.batch_size < 1 or (self.top_k is not None and self.top_k < 1):
            raise AEVisError("batch_size and top_k must be positive")
        if self.coverage is not None and not 0.0 < self.coverage <= 1.0:
            raise AEVisError(f"coverage must lie in (0, 1], got {self.coverage}")
        if self.lam is not None and self.lam < 0:
            raise AEVisError("lam must be >= 0")
        return self


@dataclass
class LayerDatapath:
    """One layer's result: z (n,), critical map indices (by z descending), QP diagnostics."""

    layer: str
    n: int
    z: np.ndarray
    critical: list[int]
    objective: float = math.nan
    kkt_residual: float = math.nan
    lam: float = math.nan


@dataclass
class Datapath:
    """Critical maps of every chosen layer for one image set, plus per-image summaries.

    ``q[layer]`` and ``mean_act[layer]`` are (N, n) float32 (per image and feature map);
    ``connections`` are (parent layer, parent map, child layer, child map, weight) tuples.
    """

    model_id: str
    config: ExtractConfig
    layers: dict[str, LayerDatapath]
    targets: np.ndarray
    probs: np.ndarray
    q: dict[str, np.ndarray] = field(default_factory=dict)
    mean_act: dict[str, np.ndarray] = field(default_factory=dict)
    connections: list[tuple[str, int, str, int, float]] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        """Number of images N."""
        return int(self.targets.shape[0])

    def critical(self, layer: str) -> set[int]:
        """Critical map indices of ``layer`` as a set."""
        return set(self.layers[layer].critical)


def resolve_targets(entry: ModelEntry, x: torch.Tensor, target: str | int,
                    labels: Sequence[int | None] | None) -> torch.Tensor:
    """(N,) target classes: predicted, true (labels) or one given class index."""
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        t = int(target)
        if not 0 <= t < entry.num_classes:
            raise AEVisError(f"target class {t} is out of range 0..{entry.num_classes - 1}")
        return torch.full((x.shape[0],), t, dtype=torch.long)
    if target == "true":
        if labels is None or any(v is None for v in labels):
            raise AEVisError("target 'true' needs a label for every image")
        return torch.tensor([int(v) for v in labels if v is not None], dtype=torch.long)
    if target != "pred":
        raise AEVisError(f"unknown target {target!r}: use pred, true or a class index")
    return entry.predict(x)[1]


def _normalise(q: torch.Tensor, how: str) -> torch.Tensor:
    if how == "l1":
        return q / q.abs().sum(dim=1, keepdim=True).clamp_min(1e-30)
    return q


def layer_lambda(q: np.ndarray, n: int, cfg: ExtractConfig) -> float:
    """λ of one layer: absolute ``cfg.lam``, else ρ·tr(Q)/n (``relative``; tr(Q) = Σ q²) or 0.1/n²."""
    if cfg.lam is not None:
        return float(cfg.lam)
    if cfg.lam_mode == "paper":
        return default_lambda(n)
    tr = float(np.einsum("ij,ij->", q, q))
    return cfg.rho * tr / n if tr > 0 else default_lambda(n)


def _select(method: str, n: int, acc: QPAccumulator, q: np.ndarray, act_sum: np.ndarray,
            cfg: ExtractConfig, rng: np.random.Generator, layer: str) -> LayerDatapath:
    q_sum = q.sum(0)
    if method == "qp":
        lam = layer_lambda(q, n, cfg)
        # fewer images than maps: rank(Q) <= K, the Woodbury PDAS path is exact and much faster
        # (λ = 0 with fewer images than maps: the dense solver on Q = qᵀq, which floors λ at rounding level)
        if acc.K == 0:
            res = solve_low_rank(q, lam) if lam > 0 else QPAccumulator().add(q).solve(lam)
        else:
            res = acc.solve(lam)
        crit = critical_set(res.z, cfg.threshold, cfg.top_k)
        if cfg.coverage is not None and cfg.top_k is None:
            crit = coverage_set(rank_maps(res.z, q_sum), q_sum, cfg.coverage, crit)
        return LayerDatapath(layer, n, res.z, crit.tolist(), res.objective, res.kkt_residual, res.lam)
    k = cfg.top_k or max(1, math.ceil(0.1 * n))
    if method == "act_topk":
        score = act_sum
    elif method == "gradxact_topk":
        score = q_sum
    else:
        score = rng.random(n)
    lo, hi = float(score.min()), float(score.max())
    z = (score - lo) / (hi - lo) if hi > lo else np.zeros(n)
    crit = critical_set(score, top_k=k)
    if cfg.coverage is not None and cfg.top_k is None:
        crit = coverage_set(rank_maps(score, q_sum), q_sum, cfg.coverage, crit)
    return LayerDatapath(layer, n, z, crit.tolist())


def extract_datapath(entry: ModelEntry, graph: LayerGraph, x: torch.Tensor,
                     config: ExtractConfig | None = None, layers: Sequence[str] | None = None,
                     labels: Sequence[int | None] | None = None,
                     progress: Progress | None = None) -> Datapath:
    """Extract the datapath of images ``x`` (N, 3, H, W) in [0, 1] through ``graph``'s layers.

    ``layers`` defaults to every layer but the input. Memory is bounded by one batch (plus the
    per-layer n×n accumulators and the (N, n) per-image summaries). ``progress(done, N)`` after
    each batch.
    """
    cfg = (config or ExtractConfig()).validate()
    if cfg.method == "gates":  # learned whole-network gates (trains on top of one extraction pass)
        from aevis_core.datapath.gates import learn_datapath

        return learn_datapath(entry, graph, x, cfg, layers, labels,
                              None if progress is None else (lambda d, t, _s: progress(d, t)))
    if x.dim() < 2 or x.shape[0] == 0:
        raise AEVisError(f"need a non-empty (N, 3, H, W) image batch (or (N, F) for MLPs), got {tuple(x.shape)}")
    layer_ids = list(layers) if layers is not None else graph.feature_layers()
    device = next(entry.model.parameters()).device
    # predicted classes come from the extraction's own forward pass (no extra forward)
    fixed = None if cfg.target == "pred" else resolve_targets(entry, x, cfg.target, labels)
    capture = LayerCapture(entry.model, graph, layer_ids)
    accs = {k: QPAccumulator() for k in layer_ids}
    q_parts: dict[str, list[torch.Tensor]] = {k: [] for k in layer_ids}
    a_parts: dict[str, list[torch.Tensor]] = {k: [] for k in layer_ids}
    probs = []
    target_parts: list[torch.Tensor] = []
    n_img = x.shape[0]
    for start in range(0, n_img, cfg.batch_size):
        end = min(start + cfg.batch_size, n_img)
        tb = fixed[start:end].to(device) if fixed is not None else None
        bs = batch_scores(capture, x[start:end].to(device), tb, cfg.score)
        target_parts.append(bs.targets)
        for k in layer_ids:
            qn = _normalise(bs.q[k], cfg.normalize)
            if cfg.method == "qp" and not n_img < qn.shape[1]:  # low-rank layers solve from q itself
                accs[k].add(qn.numpy())
            q_parts[k].append(qn)
            a_parts[k].append(bs.mean_act[k].float())
        probs.append(bs.probs)
        if progress is not None:
            progress(end, n_img)
    rng = np.random.default_rng(cfg.seed)
    result: dict[str, LayerDatapath] = {}
    q64 = {k: torch.cat(v).numpy() for k, v in q_parts.items()}
    a_all = {k: torch.cat(v).numpy() for k, v in a_parts.items()}
    for k in layer_ids:
        n = q64[k].shape[1]
        result[k] = _select(cfg.method, n, accs[k], q64[k], a_all[k].mean(0), cfg, rng, k)
    q_all = {k: v.astype(np.float32) for k, v in q64.items()}
    targets = torch.cat(target_parts)
    dp = Datapath(entry.model_id, cfg, result, targets.numpy(), torch.cat(probs).numpy(), q_all, a_all)
    dp.connections = connect(entry, graph, dp)
    return dp


def datapath_to_dict(dp: Datapath) -> dict[str, Any]:
    """JSON-ready summary: per-layer z and critical sets, connections, config."""
    from dataclasses import asdict

    return {
        "model": dp.model_id,
        "config": asdict(dp.config),
        "n_images": dp.n_images,
        "targets": dp.targets.tolist(),
        "layers": {
            k: {"n": v.n, "z": [round(float(t), 6) for t in v.z], "critical": v.critical,
                "objective": v.objective, "kkt_residual": v.kkt_residual, "lam": v.lam}
            for k, v in dp.layers.items()
        },
        "connections": [list(c) for c in dp.connections],
    }
