"""Noise control and the diverging point of adversarial datapaths (Liu et al., VAST 2018).

Liu et al., "Analyzing the Noise Robustness of Deep Neural Networks" (VAST 2018) locate where an
adversarial example's datapath departs from that of its normal source. A drop of the paired
activation similarity s_l(i) = cos(a_l(x_i), a_l(x̃_i)) (:func:`~.stats.activation_similarity`)
alone is not evidence of an attack: every perturbation lowers it. So the adversarial images x̃
are compared with a NOISE CONTROL x̂ = clip(x + δ, 0, 1), random δ of the same L-inf budget:

* :func:`compare_with_noise_control` -> :class:`NoiseComparison` with, per layer l, the (N,)
  similarities s_adv = cos(a_l(x), a_l(x̃)) and s_noise = cos(a_l(x), a_l(x̂)) and their summaries.
* :func:`find_diverging_point` -> :class:`Divergence`: the first layer (graph order) where
  s_adv falls CLEARLY below s_noise, with per-layer evidence.

"Clearly" (defaults in :class:`DivergenceConfig`). With paired drops d_i = s_noise(i) − s_adv(i),
d̄ their mean (= mean s_noise − mean s_adv), and the pooled spread
σ_p = sqrt((sd(s_adv)² + sd(s_noise)²) / 2) (ddof 1, across images), layer l is BELOW when

1. d̄ > max(δ_abs, k·σ_p)  -- the drop is large in absolute terms (δ_abs = 0.05 cosine) and
   relative to how much the similarity varies between images (k = 1: a "large" effect size);
2. a one-sided paired test of H1: d > 0 has p < α (Wilcoxon signed-rank, or a paired t-test;
   α = 0.01);

and the diverging point is the first layer l such that l and the next m layers (m = 2) are all
BELOW, so one noisy layer does not trigger it. Near the end of the list the run must still have
min(m + 1, L) layers (L the number of layers), so a dip at the last layer alone does not count.
With N images the Wilcoxon test cannot reach p < 0.01 for N < 7 (smallest one-sided p = 2^-N).
The criterion is a heuristic: the layers are strongly correlated, so no family-wise error rate
is claimed; persistence is what guards against a single chance dip.

Noise kinds: ``uniform`` δ ~ U(-ε, ε) (default; per-pixel RMS ε/√3), ``sign`` δ = ±ε (RMS ε, as a
saturated sign-gradient attack), ``shuffle`` the image's own adversarial perturbation with its
pixels randomly permuted (same L-inf, L2 and value histogram; only the structure is destroyed:
the energy-matched control). Iterative attacks such as MI-FGSM have an RMS between ε/√3 and ε (about
0.75 ε for MI-FGSM 8/255 on CIFAR ResNets), so the uniform control carries the least energy and
its diverging point comes earliest; ``sign`` carries more energy than the attack, ``shuffle``
the same. Pick the control to match the question asked.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats as sps

from aevis_core.datapath.stats import check_images, num, nums, paired_similarities, resolve_layers
from aevis_core.errors import AEVisError
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry

Tensor = torch.Tensor
NOISE_KINDS = ("uniform", "sign", "shuffle")
TESTS = ("wilcoxon", "ttest")


# ----------------------------------------------------------------------------------------------
# noise control
# ----------------------------------------------------------------------------------------------

def noise_control(x: Tensor, eps: float, seed: int = 0, kind: str = "uniform") -> Tensor:
    """``clip(x + δ, 0, 1)`` with seeded random noise δ of L-inf size ``eps``; (N, 3, H, W) float32 CPU.

    ``kind="uniform"``: δ ~ U(-eps, eps) i.i.d. per pixel (default). ``kind="sign"``:
    δ = ±eps with equal probability (the per-pixel energy of a saturated sign-gradient attack).
    Deterministic: the noise depends only on ``seed`` and the shape of ``x`` (a private CPU
    generator; the global RNG is untouched). ``|out − x| ≤ eps`` and ``out ∈ [0, 1]``.
    """
    if not math.isfinite(eps) or eps < 0:
        raise AEVisError(f"noise eps must be a finite non-negative number, got {eps}")
    if kind not in ("uniform", "sign"):
        raise AEVisError(f"unknown noise kind {kind!r}: use uniform or sign (shuffle needs shuffle_control)")
    gen = torch.Generator().manual_seed(int(seed))
    xc = x.detach().float().cpu()
    u = torch.rand(xc.shape, generator=gen, dtype=torch.float32)
    delta = (2 * u - 1) * eps if kind == "uniform" else torch.where(u < 0.5, -eps, eps)
    return (xc + delta).clamp_(0.0, 1.0)


def shuffle_control(x_normal: Tensor, x_adv: Tensor, seed: int = 0) -> Tensor:
    """``clip(x + π_i(x̃ − x), 0, 1)``: each image's perturbation with its C·H·W values permuted.

    ``x_normal``, ``x_adv``: paired (N, 3, H, W). π_i is a seeded random permutation per image, so
    the noise has exactly the perturbation's values (L-inf, L2, histogram) but no structure;
    values may shrink where the clip to [0, 1] bites. Deterministic in ``seed``.
    """
    check_images(x_normal, x_adv)
    gen = torch.Generator().manual_seed(int(seed))
    xn = x_normal.detach().float().cpu()
    delta = (x_adv.detach().float().cpu() - xn).reshape(xn.shape[0], -1)
    perm = torch.stack([torch.randperm(delta.shape[1], generator=gen) for _ in range(delta.shape[0])])
    return (xn + delta.gather(1, perm).reshape(xn.shape)).clamp_(0.0, 1.0)


@dataclass
class Summary:
    """Spread of a per-image quantity (N,): mean, std (ddof 1), 5th/50th/95th percentile, N."""

    mean: float
    std: float
    p05: float
    median: float
    p95: float
    n: int

    @classmethod
    def of(cls, v: np.ndarray) -> Summary:
        """Summary of a 1-D array (NaN fields when empty; std 0 for one value)."""
        a = np.asarray(v, dtype=np.float64).ravel()
        if a.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
        p05, med, p95 = np.percentile(a, [5, 50, 95])
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        return cls(float(a.mean()), std, float(p05), float(med), float(p95), int(a.size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, 6 significant digits."""
        return {"mean": num(self.mean), "std": num(self.std), "p05": num(self.p05),
                "median": num(self.median), "p95": num(self.p95), "n": self.n}


@dataclass
class NoiseComparison:
    """Similarity to the normal images of (a) their adversarial twins and (b) noisy copies.

    ``sim_adv[l]``, ``sim_noise[l]``: (N,) cosine similarities per layer (``layers`` in graph
    order); ``eps``/``seed``/``noise`` describe the control. :meth:`adv`, :meth:`noise_summary`
    and :meth:`diff` summarise s_adv, s_noise and the paired drop s_noise − s_adv per layer.
    """

    layers: list[str]
    sim_adv: dict[str, np.ndarray]
    sim_noise: dict[str, np.ndarray]
    eps: float
    seed: int
    noise: str = "uniform"
    extra: dict[str, Any] = field(default_factory=dict)

    def adv(self, layer: str) -> Summary:
        """Summary of similarity(adversarial, normal) at ``layer``."""
        return Summary.of(self.sim_adv[layer])

    def noise_summary(self, layer: str) -> Summary:
        """Summary of similarity(noise, normal) at ``layer``."""
        return Summary.of(self.sim_noise[layer])

    def diff(self, layer: str) -> Summary:
        """Summary of the paired drop s_noise(i) − s_adv(i) at ``layer``."""
        return Summary.of(self.sim_noise[layer] - self.sim_adv[layer])

    def to_dict(self, per_image: bool = False) -> dict[str, Any]:
        """JSON-ready dict with per-layer summaries (and the raw (N,) arrays if ``per_image``)."""
        layers = {}
        for k in self.layers:
            d: dict[str, Any] = {"adv": self.adv(k).to_dict(), "noise": self.noise_summary(k).to_dict(),
                                 "diff": self.diff(k).to_dict()}
            if per_image:
                d["sim_adv"] = nums(self.sim_adv[k])
                d["sim_noise"] = nums(self.sim_noise[k])
            layers[k] = d
        return {"eps": num(self.eps), "seed": self.seed, "noise": self.noise, "layers": layers,
                **({"extra": dict(self.extra)} if self.extra else {})}


def compare_with_noise_control(entry: ModelEntry, graph: LayerGraph, x_normal: Tensor, x_adv: Tensor,
                               eps: float | None = None, layers: Sequence[str] | None = None, *,
                               seed: int = 0, batch_size: int = 32, noise: str = "uniform") -> NoiseComparison:
    """Per-layer similarity(adv, normal) next to similarity(noise control, normal).

    ``x_normal``, ``x_adv``: paired (N, 3, H, W) in [0, 1]. ``eps``: the noise's L-inf budget,
    normally the attack's; None takes the largest ``|x_adv − x_normal|``. ``noise``: ``uniform``
    or ``sign`` (:func:`noise_control`) or ``shuffle`` (:func:`shuffle_control`, ignores eps).
    Both similarities come from the same batched ``no_grad`` forwards (each normal batch is run
    once); ``layers`` (default: all feature layers) are put in graph order.
    ``extra`` records the per-pixel RMS (×255) of the adversarial and the control perturbations.
    """
    check_images(x_normal, x_adv)
    if noise not in NOISE_KINDS:
        raise AEVisError(f"unknown noise kind {noise!r}: use one of {', '.join(NOISE_KINDS)}")
    xn = x_normal.detach().float().cpu()
    xa = x_adv.detach().float().cpu()
    if eps is None:
        eps = float((xa - xn).abs().max())
    pos = {k: i for i, k in enumerate(graph.order)}
    ids = sorted(resolve_layers(graph, layers), key=lambda k: pos.get(k, len(pos)))
    x_noise = shuffle_control(xn, xa, seed) if noise == "shuffle" else noise_control(xn, eps, seed, noise)
    sa, sn = paired_similarities(entry, graph, xn, [xa, x_noise], ids, batch_size)
    extra = {"rms_adv_255": num(255 * float((xa - xn).square().mean().sqrt()), 4),
             "rms_noise_255": num(255 * float((x_noise - xn).square().mean().sqrt()), 4)}
    return NoiseComparison(ids, sa, sn, float(eps), int(seed), noise, extra)


# ----------------------------------------------------------------------------------------------
# diverging point
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DivergenceConfig:
    """What "clearly below the noise control" means (see the module docstring).

    ``delta_abs``: minimum mean drop d̄ in cosine similarity. ``k_std``: minimum d̄ in units of
    the pooled across-image std σ_p. ``alpha``: one-sided paired test level. ``persist`` (m):
    the next m layers must also be below. ``test``: ``wilcoxon`` (signed-rank) or ``ttest``.
    """

    delta_abs: float = 0.05
    k_std: float = 1.0
    alpha: float = 0.01
    persist: int = 2
    test: str = "wilcoxon"

    def validate(self) -> DivergenceConfig:
        """Raise :class:`AEVisError` on a bad option; return self."""
        if self.test not in TESTS:
            raise AEVisError(f"unknown test {self.test!r}: use wilcoxon or ttest")
        if not (self.delta_abs >= 0 and self.k_std >= 0 and 0 < self.alpha < 1 and self.persist >= 0):
            raise AEVisError("need delta_abs >= 0, k_std >= 0, 0 < alpha < 1 and persist >= 0")
        return self


@dataclass
class LayerEvidence:
    """Per-layer test of "adversarial similarity clearly below the noise control".

    ``diff`` = d̄ = mean(s_noise − s_adv); ``threshold`` = max(δ_abs, k·σ_p); ``p_value`` of the
    one-sided paired test; ``below`` = n ≥ 2 and d̄ > threshold and p < α.
    """

    layer: str
    n: int
    mean_adv: float
    mean_noise: float
    diff: float
    pooled_std: float
    threshold: float
    p_value: float
    below: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (6 significant digits; p-values to 4)."""
        return {"layer": self.layer, "n": self.n, "mean_adv": num(self.mean_adv),
                "mean_noise": num(self.mean_noise), "diff": num(self.diff),
                "pooled_std": num(self.pooled_std), "threshold": num(self.threshold),
                "p_value": num(self.p_value, 4), "below": self.below}


@dataclass
class Divergence:
    """Result of :func:`find_diverging_point`.

    ``layer``/``index``: the diverging layer and its position in ``order`` (None if none).
    ``run``: the layers of the triggering run; ``first_below``: the first individually-below layer
    (may precede ``layer`` if its run was too short). ``evidence``: per layer, in order.
    """

    layer: str | None
    index: int | None
    order: list[str]
    evidence: dict[str, LayerEvidence]
    config: DivergenceConfig
    run: list[str] = field(default_factory=list)
    first_below: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the layer, the rule's parameters and the per-layer evidence."""
        return {"layer": self.layer, "index": self.index, "run": list(self.run),
                "first_below": self.first_below, "config": asdict(self.config),
                "evidence": [self.evidence[k].to_dict() for k in self.order]}


def _p_value(d: np.ndarray, test: str) -> float:
    """One-sided p for H1: d > 0 (paired differences d, (N,)); NaN for fewer than 2 pairs."""
    if d.size < 2:
        return math.nan
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():  # nearly identical d: scipy warns about precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "ttest":
            if np.all(d == d[0]):  # no spread: the sign decides (scipy would divide by zero)
                return 0.0 if d[0] > 0 else 1.0
            return float(sps.ttest_1samp(d, 0.0, alternative="greater").pvalue)
        return float(sps.wilcoxon(d, alternative="greater").pvalue)


def layer_evidence(layer: str, sim_adv: np.ndarray, sim_noise: np.ndarray,
                   config: DivergenceConfig | None = None) -> LayerEvidence:
    """Evidence at one layer from paired (N,) similarities (pairs with a NaN are dropped)."""
    cfg = (config or DivergenceConfig()).validate()
    a = np.asarray(sim_adv, dtype=np.float64).ravel()
    b = np.asarray(sim_noise, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise AEVisError(f"layer {layer!r}: {a.size} adversarial vs {b.size} noise similarities")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n == 0:
        return LayerEvidence(layer, 0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, False)
    d = b - a
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if n > 1 else math.nan
    thr = max(cfg.delta_abs, cfg.k_std * pooled) if n > 1 else math.nan
    p = _p_value(d, cfg.test)
    below = bool(n >= 2 and float(d.mean()) > thr and p < cfg.alpha)
    return LayerEvidence(layer, n, float(a.mean()), float(b.mean()), float(d.mean()), pooled, thr, p, below)


def find_diverging_point(sim_adv: Mapping[str, np.ndarray], sim_noise: Mapping[str, np.ndarray],
                         order: Sequence[str] | None = None,
                         config: DivergenceConfig | None = None) -> Divergence:
    """First layer where similarity(adv, normal) is clearly below similarity(noise, normal).

    ``sim_adv``/``sim_noise``: layer -> paired (N,) similarities (e.g. from
    :class:`NoiseComparison`); ``order``: the layers to scan, in graph order (default: the keys of
    ``sim_adv`` in their order). Returns the first l with BELOW at l, l+1, ..., l+m (a run of
    min(m + 1, L) layers), or ``layer=None``; see the module docstring for BELOW.
    """
    cfg = (config or DivergenceConfig()).validate()
    ids = list(order) if order is not None else list(sim_adv)
    missing = [k for k in ids if k not in sim_adv or k not in sim_noise]
    if missing:
        raise AEVisError(f"no similarities for layer(s) {', '.join(missing[:5])}")
    ev = {k: layer_evidence(k, sim_adv[k], sim_noise[k], cfg) for k in ids}
    below = [ev[k].below for k in ids]
    need = min(cfg.persist + 1, len(ids))
    if need == 0:
        return Divergence(None, None, ids, ev, cfg)
    first = next((k for k, b in zip(ids, below, strict=True) if b), None)
    for i in range(len(ids) - need + 1):
        if all(below[i:i + need]):
            j = i
            while j < len(ids) and below[j]:
                j += 1
            return Divergence(ids[i], i, ids, ev, cfg, ids[i:j], first)
    return Divergence(None, None, ids, ev, cfg, [], first)


def diverging_point(comparison: NoiseComparison, config: DivergenceConfig | None = None) -> Divergence:
    """:func:`find_diverging_point` on a :class:`NoiseComparison` (its layers, in graph order)."""
    return find_diverging_point(comparison.sim_adv, comparison.sim_noise, comparison.layers, config)
