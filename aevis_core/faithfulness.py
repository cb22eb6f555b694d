"""Faithfulness of datapaths: does keeping only the selected feature maps keep the prediction?

For one layer with ``n`` feature maps and a set ``S`` of kept maps, every other map is removed
(set to 0, or to its mean over the images and positions with ``fill="mean"``) with
:class:`~aevis_core.graph.mask.MaskedModel`, and for images ``k = 1..N`` with targets ``t_k``
(default: the unmasked model's predictions)

.. math::

    \\text{preserved}(S) = \\frac1N \\sum_k [\\arg\\max_c P_{kc}(S) = t_k], \\qquad
    \\text{drop}(S) = \\frac1N \\sum_k \\bigl(P_{k t_k} - P_{k t_k}(S)\\bigr),

with ``P`` the softmax probabilities of the unmasked model and ``P(S)`` those of the masked
one. ``S`` = all maps gives exactly (1.0, 0.0) for the default targets (``a · 1 + 0 · f = a``).

:func:`faithfulness_curve` evaluates **the datapath the user sees** — an
:class:`~aevis_core.datapath.extract.ExtractConfig` (extracted here) or a ready
:class:`~aevis_core.datapath.extract.Datapath` of any method — and compares it with other
rankings at **equal k**: each method ranks the maps once and ``S`` = its top-k for every ``k`` of
a sweep, so a method is not rewarded for simply selecting more maps. The result names the
method and its parameters (``"datapath"``: ``{"method", "label", "config"}``). Rankings (all from
the datapath's one extraction pass, with the same scores as ``extract._select``):

* ``datapath``: the evaluated datapath's own z descending, ties by ``Σ_k q_kj`` then index
  (its critical set is a prefix of this ranking; its size is the "natural" k);
* ``qp``: the same for a ``method="qp"`` datapath (kept for the paper's comparison);
* ``act_topk``: by the mean activation ``mean_k mean_space a_kj`` descending;
* ``gradxact_topk``: by ``Σ_k q_kj`` (gradient × activation, normalised per image with
  ``normalize="l1"``) descending;
* ``random``: a seeded random permutation;
* ``qp_refine`` (opt-in, QP datapaths): by the mask refined on the true Eq. 4 objective
  (:func:`~aevis_core.datapath.refine.refine_layer`, warm-started from the QP ``z``), ties
  broken by the QP order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from aevis_core.datapath.extract import Datapath, ExtractConfig, extract_datapath
from aevis_core.datapath.qp import default_lambda
from aevis_core.datapath.selection import rank_maps
from aevis_core.errors import AEVisError
from aevis_core.graph.mask import MaskedModel, layer_mean
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry

Tensor = torch.Tensor
FILLS = ("zero", "mean")
CURVE_METHODS = ("datapath", "qp", "act_topk", "gradxact_topk", "random", "qp_refine")
COMPARE: tuple[str, ...] = ("datapath", "act_topk", "gradxact_topk", "random")
DEFAULT_KS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)

__all__ = [
    "COMPARE", "CURVE_METHODS", "DEFAULT_KS", "FILLS", "FaithfulnessEvaluator", "FaithResult", "describe",
    "faithfulness", "faithfulness_curve", "rank_maps", "resolve_ks",
]


@dataclass
class FaithResult:
    """Faithfulness of one kept set: ``preserved`` top-1 fraction, ``drop`` mean target-p drop.

    ``per_image_drop``: (N,) ``P_k,t_k - P_k,t_k(S)``; ``per_image_kept``: (N,) bool, top-1 = target.
    """

    preserved: float
    drop: float
    per_image_drop: np.ndarray
    per_image_kept: np.ndarray


class FaithfulnessEvaluator:
    """Caches the prefix of one layer for images ``x`` (N, 3, H, W) and evaluates many kept sets.

    ``targets``: (N,) classes (``None`` -> the unmasked model's predictions). The reference
    probabilities are computed through the same (unmasked, ``m = 1``) suffix, so keeping every
    map reproduces them bit for bit.
    """

    def __init__(self, entry: ModelEntry, graph: LayerGraph, x: Tensor, layer: str,
                 targets: ArrayLike | Tensor | None = None, batch_size: int = 64) -> None:
        if x.dim() != 4 or x.shape[0] == 0:
            raise AEVisError(f"need a non-empty (N, 3, H, W) image batch, got {tuple(x.shape)}")
        self.layer = layer
        self.masked = MaskedModel(entry.model, graph, layer)
        self.n = self.masked.n
        self.batches = self.masked.cache(x, batch_size)
        self.n_images = int(x.shape[0])
        self.probs0 = self._probs(torch.ones(self.n), None)
        if targets is None:
            self.targets = self.probs0.argmax(dim=1)
        else:
            self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
            if self.targets.shape[0] != self.n_images:
                raise AEVisError(f"need one target per image ({self.n_images}), got {self.targets.shape[0]}")
            if bool(((self.targets < 0) | (self.targets >= self.probs0.shape[1])).any()):
                raise AEVisError("target class out of range")
        self.p0 = self.probs0.gather(1, self.targets.view(-1, 1)).squeeze(1).double()
        self._mean: Tensor | None = None
        self._memo: dict[tuple[bytes, str], FaithResult] = {}
        self.n_evals = 0

    def _probs(self, mask: Tensor, fill: Tensor | None) -> Tensor:
        with torch.no_grad():
            logits = self.masked.logits(self.batches, mask, fill)
        return torch.softmax(logits.float(), dim=1).cpu()

    @property
    def mean_fill(self) -> Tensor:
        """(n,) per-map mean of the layer's output over the images and positions."""
        if self._mean is None:
            self._mean = layer_mean(self.batches).float()
        return self._mean

    def keep_mask(self, keep: ArrayLike) -> Tensor:
        """(n,) 0/1 float mask from kept map indices (validated: integers in [0, n))."""
        idx = np.asarray(keep).reshape(-1)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            if not np.all(np.equal(np.mod(idx, 1), 0)):
                raise AEVisError("keep must hold integer map indices")
            idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise AEVisError(f"keep indices must lie in 0..{self.n - 1}")
        m = torch.zeros(self.n)
        if idx.size:
            m[torch.as_tensor(idx.astype(np.int64))] = 1.0
        return m

    def evaluate_mask(self, mask: Tensor, fill: str = "zero") -> FaithResult:
        """Faithfulness of an arbitrary (n,) mask (e.g. a relaxed z) with ``fill`` in zero | mean."""
        if fill not in FILLS:
            raise AEVisError(f"unknown fill {fill!r}: use zero or mean")
        f = self.mean_fill if fill == "mean" else None
        probs = self._probs(mask.float(), f)
        self.n_evals += 1
        pt = probs.gather(1, self.targets.view(-1, 1)).squeeze(1).double()
        kept = (probs.argmax(dim=1) == self.targets).numpy()
        drop = (self.p0 - pt).numpy()
        return FaithResult(float(kept.mean()), float(drop.mean()), drop, kept)

    def evaluate(self, keep: ArrayLike, fill: str = "zero") -> FaithResult:
        """Faithfulness of keeping only the maps ``keep`` (memoised per kept set and fill)."""
        m = self.keep_mask(keep)
        key = (np.packbits(m.numpy().astype(bool)).tobytes(), fill)
        if key not in self._memo:
            self._memo[key] = self.evaluate_mask(m, fill)
        return self._memo[key]


def faithfulness(entry: ModelEntry, graph: LayerGraph, x: Tensor, layer: str, keep: list[int] | np.ndarray,
                 fill: str = "zero", targets: ArrayLike | Tensor | None = None,
                 batch_size: int = 64) -> tuple[float, float]:
    """``(preserved_top1_fraction, mean_drop_of_p)`` when only maps ``keep`` of ``layer`` are kept.

    ``x``: (N, 3, H, W) in [0, 1]; ``keep``: indices into the layer's n maps; the others are
    zeroed (``fill="zero"``) or set to their mean over the images and positions (``"mean"``).
    ``targets`` (N,) default to the unmasked predictions; ``drop`` is the mean decrease of the
    target's softmax probability (negative when masking raises it).
    """
    ev = FaithfulnessEvaluator(entry, graph, x, layer, targets, batch_size)
    r = ev.evaluate(keep, fill)
    return r.preserved, r.drop


def resolve_ks(ks: Sequence[float | int], n: int) -> list[tuple[str, int]]:
    """``(label, k)`` per sweep entry: floats in (0, 1] are fractions of n (k = max(1, round(f n))),
    ints are counts (clamped to n). Duplicated k keep their first label."""
    out: list[tuple[str, int]] = []
    seen: set[int] = set()
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise AEVisError(f"bad k {v!r}")
        if isinstance(v, float | np.floating):
            if not 0.0 < float(v) <= 1.0:
                raise AEVisError(f"fractional k must lie in (0, 1], got {v}")
            k, label = max(1, int(round(float(v) * n))), f"{100 * float(v):g}%"
        else:
            if int(v) < 0:
                raise AEVisError("k must be >= 0")
            k, label = min(int(v), n), str(int(v))
        if k not in seen:
            seen.add(k)
            out.append((label, k))
    return out


def _rankings(dp: Datapath, layer: str, methods: Sequence[str], seed: int,
              refined_z: np.ndarray | None) -> dict[str, np.ndarray]:
    q_sum = dp.q[layer].astype(np.float64).sum(0)
    act = dp.mean_act[layer].astype(np.float64).mean(0)
    z = dp.layers[layer].z
    n = z.shape[0]
    out: dict[str, np.ndarray] = {}
    for m in methods:
        if m in ("qp", "datapath"):
            out[m] = rank_maps(z, q_sum)
        elif m == "act_topk":
            out[m] = rank_maps(act, q_sum)
        elif m == "gradxact_topk":
            out[m] = rank_maps(q_sum, act)
        elif m == "random":
            out[m] = np.random.default_rng(seed).permutation(n).astype(np.intp)
        elif m == "qp_refine":
            if refined_z is None:
                raise AEVisError("qp_refine needs a refined z")
            qp_rank = np.empty(n)
            qp_rank[rank_maps(z, q_sum)] = np.arange(n)
            out[m] = rank_maps(refined_z, -qp_rank)
        else:
            raise AEVisError(f"unknown method {m!r}: use one of {', '.join(CURVE_METHODS)}")
    return out


def describe(cfg: ExtractConfig) -> str:
    """Human-readable method and parameters of an extraction config (titles, tables, JSON)."""
    sel = f", coverage {cfg.coverage:g}" if cfg.coverage is not None and cfg.top_k is None else ""
    sel += f", top-{cfg.top_k}" if cfg.top_k is not None else ""
    if cfg.method == "qp":
        lam = f"λ={cfg.lam:g}" if cfg.lam is not None else (
            "λ=0.1/n² (paper)" if cfg.lam_mode == "paper" else f"λ={cfg.rho:g}·tr(Q)/n")
        thr = f", z>{cfg.threshold:g}" if cfg.top_k is None else ""
        return f"QP ({cfg.score}, {cfg.normalize}, {lam}{thr}{sel})"
    if cfg.method == "gates":
        return f"learned gates (L1 {cfg.sparsity:g}, {cfg.budget_s:g} s budget)"
    name = {"gradxact_topk": "grad×act", "act_topk": "activation", "random": "random"}[cfg.method]
    detail = f"{cfg.score}, {cfg.normalize}, " if cfg.method == "gradxact_topk" else ""
    k = f"top-{cfg.top_k}" if cfg.top_k is not None else "top 10 %"
    return f"{name} ({detail}{k}{sel})"


def faithfulness_curve(entry: ModelEntry, graph: LayerGraph, x: Tensor, layer: str,
                       config: ExtractConfig | None = None, methods: Sequence[str] | None = None,
                       ks: Sequence[float | int] = DEFAULT_KS, fill: str | Sequence[str] = "zero",
                       targets: ArrayLike | Tensor | None = None, seed: int = 0,
                       datapath: Datapath | None = None, evaluator: FaithfulnessEvaluator | None = None,
                       refine_steps: int = 20, refine_method: str = "pgd",
                       batch_size: int = 64) -> dict[str, Any]:
    """Equal-k faithfulness of the datapath the user sees vs other rankings at one layer (JSON-able).

    Args:
        entry, graph, x, layer: model, its traced graph, (N, 3, H, W) images, layer id (n maps).
        config: the extraction options of the evaluated datapath (default
            :class:`ExtractConfig` ``()``, the dashboard's default); ignored when ``datapath``
            is given (its own config is used).
        methods: subset of :data:`CURVE_METHODS` (see module doc); default :data:`COMPARE`
            (``qp`` and ``qp_refine`` need a QP datapath).
        ks: sweep of k (floats = fractions of n, ints = counts); the datapath's natural k
            (its critical set's size at this layer, and the refined one, if any) is added.
        fill: ``"zero"``, ``"mean"`` or both (a sequence).
        targets: (N,) classes; default the datapath's targets when given, else the predictions
            (extraction then uses the evaluator's targets as labels, so both agree).
        datapath: a precomputed Datapath containing ``layer`` (same x); evaluator: a
            precomputed :class:`FaithfulnessEvaluator` for (x, layer, targets).
        refine_steps, refine_method: options of ``qp_refine``.

    Returns:
        ``{"model", "layer", "n", "n_images", "datapath": {"method", "label", "config"},
        "score", "normalize", "lam", "fills", "natural_k", "true_objective", "baseline_p",
        "rows": [{"method", "fill", "k", "k_label", "k_frac", "preserved", "drop"}, ...]}`` with
        rows in (fill, k, method) order.
    """
    fills = [fill] if isinstance(fill, str) else list(fill)
    for f in fills:
        if f not in FILLS:
            raise AEVisError(f"unknown fill {f!r}: use zero or mean")
    methods = tuple(COMPARE if methods is None else methods)
    for m in methods:
        if m not in CURVE_METHODS:
            raise AEVisError(f"unknown method {m!r}: use one of {', '.join(CURVE_METHODS)}")
    if targets is None and datapath is not None and evaluator is None:
        targets = datapath.targets
    ev = evaluator or FaithfulnessEvaluator(entry, graph, x, layer, targets, batch_size)
    if ev.layer != layer:
        raise AEVisError("evaluator was built for another layer")
    tgt = ev.targets
    if datapath is None:
        # the evaluator's targets (its own unmasked predictions by default) are passed as labels,
        # so extraction and evaluation agree even on near-ties of the top-2 logits
        cfg = replace(config or ExtractConfig(), target="true")
        datapath = extract_datapath(entry, graph, x, cfg, layers=[layer], labels=[int(t) for t in tgt.tolist()])
        datapath = replace(datapath, config=replace(datapath.config, target=(config or ExtractConfig()).target))
    if layer not in datapath.layers:
        raise AEVisError(f"datapath has no layer {layer!r}")
    if datapath.config.method != "qp" and ({"qp", "qp_refine"} & set(methods)):
        raise AEVisError("the qp and qp_refine rankings need a method='qp' datapath")
    if not np.array_equal(np.asarray(datapath.targets), tgt.numpy()):
        raise AEVisError("datapath and evaluator use different targets")
    n = ev.n
    ld = datapath.layers[layer]
    lam_v = ld.lam if math.isfinite(ld.lam) else default_lambda(n)
    natural: dict[str, int] = {}
    if "datapath" in methods:
        natural["datapath"] = len(ld.critical)
    if "qp" in methods:
        natural["qp"] = len(ld.critical)
    true_obj: dict[str, float] = {}
    refined = None
    if "qp_refine" in methods:
        from aevis_core.datapath.refine import refine_layer

        r = refine_layer(entry, graph, x, layer, ld.z, tgt, lam=lam_v, steps=refine_steps,
                         method=refine_method, score=datapath.config.score, batch_size=batch_size)
        refined = r.z
        natural["qp_refine"] = int((r.z > 0.5).sum())
        true_obj = {"qp": r.true_objective_before, "qp_refine": r.true_objective_after}
    ranks = _rankings(datapath, layer, methods, seed, refined)
    sweep = resolve_ks(ks, n)
    ks_seen = {k for _, k in sweep}
    for name, k in natural.items():
        if k > 0 and k not in ks_seen:
            sweep.append((f"natural({name})", k))
            ks_seen.add(k)
    sweep.sort(key=lambda t: t[1])
    rows: list[dict[str, Any]] = []
    for f in fills:
        for label, k in sweep:
            for m in methods:
                res = ev.evaluate(ranks[m][:k], f)
                rows.append({"method": m, "fill": f, "k": k, "k_label": label, "k_frac": k / n,
                             "preserved": res.preserved, "drop": res.drop})
    dcfg = datapath.config
    return {
        "model": entry.name, "layer": layer, "n": n, "n_images": ev.n_images,
        "datapath": {"method": dcfg.method, "label": describe(dcfg), "config": asdict(dcfg)},
        "score": dcfg.score, "normalize": dcfg.normalize, "lam": float(lam_v),
        "fills": fills, "natural_k": natural, "true_objective": true_obj,
        "baseline_p": float(ev.p0.mean()), "qp_objective": float(ld.objective),
        "rows": rows,
    }
