"""The diverging point of adversarial datapaths, calibrated and valid from one pair (Liu et al., VAST 2018).

Liu et al., "Analyzing the Noise Robustness of Deep Neural Networks" (VAST 2018) locate where an
adversarial example's datapath departs from that of its normal source. A drop of the paired
similarity s_l(i) = cos(a_l(x_i), a_l(x̃_i)) alone is not evidence: every perturbation lowers
it. So each normal image x_i is also perturbed by R random CONTROL draws of the same energy
(:mod:`~.controls`, default ``shuffled``: the adversarial perturbation's own values permuted per
channel), giving an empirical null of R similarities per image and layer
(:func:`~.control_similarity.compare_with_noise_control`).

The rule (defaults in :class:`DivergenceConfig`; statistics in :mod:`~.rank_test`):

1. per image, the adversarial similarity's rank among its R control similarities is a p-value
   p_i(l) = (1 + #{r: s_r ≤ s_adv}) / (R + 1);
2. per layer, Fisher's combination over the n images gives P(l); layer l is BELOW when
   P(l) ≤ α and the mean drop D̄ = mean_i (mean_r s_r − s_adv) is at least ``min_effect``
   (0.05 cosine: the test alone flags drops of 0.005 at the first convolution, where a
   structured perturbation already differs from its shuffled values; 0 gives the purely
   statistical point);
3. the diverging point is the first layer l (graph order) such that l and the next m layers are
   all BELOW (persistence; near the end the run needs min(m + 1, L) layers);
4. it is reported only if the global Monte Carlo test over all layers rejects at α (the gate, an
   exact test under exchangeability): with no attack the rule fires with probability ≤ α, however
   correlated the layers are.

R = 39 by default: with α = 0.05, (R + 1)·α = 2 is an integer (Hope 1968), so the Monte Carlo
tests are exact, a single pair can reach p = 1/40 < α at a layer and the gate can reject with one
control draw tied or above; R = 99 is the choice for α = 0.01. Each draw costs one forward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from aevis_core.datapath.control_similarity import NoiseComparison
from aevis_core.datapath.rank_test import all_rank_p_values, detectable_shift, effect_size, fisher_log_p, gate_p_value
from aevis_core.datapath.similarity import num, nums
from aevis_core.errors import AEVisError

# ----------------------------------------------------------------------------------------------
# the rule
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DivergenceConfig:
    """The diverging-point rule (module docstring). ``alpha``: level of the per-layer test and of
    the gate; ``persist`` (m): the next m layers must also be BELOW; ``min_effect``: smallest mean
    drop (cosine) for BELOW; ``gate``: require the global test; ``power``: for the detectable effect.
    """

    alpha: float = 0.05
    persist: int = 2
    min_effect: float = 0.05
    gate: bool = True
    power: float = 0.8

    def validate(self) -> DivergenceConfig:
        """Raise :class:`AEVisError` on a bad option; return self."""
        if not (0 < self.alpha < 1 and self.persist >= 0 and self.min_effect >= 0 and 0 < self.power < 1):
            raise AEVisError("need 0 < alpha < 1, persist >= 0, min_effect >= 0 and 0 < power < 1")
        return self


@dataclass
class LayerEvidence:
    """Per-layer evidence that the adversarial similarity is below the control's.

    ``p_value``: Fisher's combined P over the ``n`` images; ``p_images`` (n,) the per-image rank
    p-values; ``exceed``: images with p_i ≤ α. ``effect`` = D̄ (mean drop, cosine) with its 95 %
    interval [``ci_low``, ``ci_high``]; ``effect_z``: mean drop in control sd; ``detectable``:
    the smallest drop (cosine) the test detects with the configured power at this n and R
    (``detectable_z`` × the layer's control sd; ∞ when P can never reach α).
    """

    layer: str
    n: int
    draws: int
    mean_adv: float
    mean_control: float
    p_value: float
    p_images: np.ndarray
    exceed: int
    effect: float
    ci_low: float
    ci_high: float
    effect_z: float
    detectable: float
    below: bool

    def to_dict(self, per_image: bool = False) -> dict[str, Any]:
        """JSON-ready dict (6 significant digits; p-values to 4; ∞/NaN as None)."""
        d = {"layer": self.layer, "n": self.n, "draws": self.draws, "mean_adv": num(self.mean_adv),
             "mean_control": num(self.mean_control), "p_value": num(self.p_value, 4), "exceed": self.exceed,
             "effect": num(self.effect), "ci": [num(self.ci_low), num(self.ci_high)],
             "effect_z": num(self.effect_z), "detectable": num(self.detectable), "below": self.below}
        if per_image:
            d["p_images"] = nums(self.p_images, 4)
        return d


@dataclass
class Divergence:
    """Result of :func:`find_diverging_point`.

    ``layer``/``index``: the diverging layer and its position in ``order`` (None if none).
    ``run``: the layers of the triggering run; ``first_below``: the first BELOW layer;
    ``candidate``: the first persistent run's layer even when the gate did not reject.
    ``gate_p``: Monte Carlo p of the global test; ``detectable_z``: smallest detectable shift in
    control sd. ``control``, ``rms_adv_255``, ``rms_control_255``: the control and the mean
    per-image rms ×255 of both perturbations (NaN when unknown).
    """

    layer: str | None
    index: int | None
    order: list[str]
    evidence: dict[str, LayerEvidence]
    config: DivergenceConfig
    run: list[str] = field(default_factory=list)
    first_below: str | None = None
    candidate: str | None = None
    gate_p: float = math.nan
    n: int = 0
    draws: int = 0
    detectable_z: float = math.nan
    control: str = ""
    rms_adv_255: float = math.nan
    rms_control_255: float = math.nan

    def most_different(self, k: int = 5) -> list[LayerEvidence]:
        """The ``k`` layers with the largest mean drop D̄ (graph order breaks ties)."""
        ev = [self.evidence[x] for x in self.order if math.isfinite(self.evidence[x].effect)]
        return sorted(ev, key=lambda e: -e.effect)[:k]

    def to_dict(self, per_image: bool = False) -> dict[str, Any]:
        """JSON-ready dict: the layer, the rule, the control with its rms and per-layer evidence."""
        return {"layer": self.layer, "index": self.index, "run": list(self.run), "first_below": self.first_below,
                "candidate": self.candidate, "gate_p": num(self.gate_p, 4), "n": self.n, "draws": self.draws,
                "detectable_z": num(self.detectable_z, 4), "config": asdict(self.config),
                "control": {"kind": self.control, "rms_adv_255": num(self.rms_adv_255, 4),
                            "rms_control_255": num(self.rms_control_255, 4)},
                "evidence": [self.evidence[k].to_dict(per_image) for k in self.order]}


def find_diverging_point(sim_adv: Mapping[str, np.ndarray], sim_control: Mapping[str, np.ndarray],
                         order: Sequence[str] | None = None,
                         config: DivergenceConfig | None = None) -> Divergence:
    """The diverging point from paired similarities: ``sim_adv`` layer -> (n,), ``sim_control``
    layer -> (n, R) control draws. ``order``: layers to scan in graph order (default: the keys of
    ``sim_adv``). Images with a non-finite similarity at a layer are left out there.
    """
    cfg = (config or DivergenceConfig()).validate()
    ids = list(order) if order is not None else list(sim_adv)
    missing = [k for k in ids if k not in sim_adv or k not in sim_control]
    if missing:
        raise AEVisError(f"no similarities for layer(s) {', '.join(missing[:5])}")
    adv = [np.asarray(sim_adv[k], dtype=np.float64).ravel() for k in ids]
    ctrl = [np.asarray(sim_control[k], dtype=np.float64) for k in ids]
    for k, a, c in zip(ids, adv, ctrl, strict=True):
        if c.ndim != 2 or c.shape[0] != a.size or c.shape != ctrl[0].shape:
            raise AEVisError(f"layer {k!r}: need (n,) adversarial and (n, R) control similarities, "
                             "the same n and R at every layer")
    if not ids:
        raise AEVisError("no layers to scan")
    n_img, draws = ctrl[0].shape
    ev: dict[str, LayerEvidence] = {}
    if all(np.isfinite(a).all() and np.isfinite(c).all() for a, c in zip(adv, ctrl, strict=True)):
        evs, log_p = _block(ids, np.stack(adv), np.stack(ctrl), cfg)        # every layer at once
        ev = dict(zip(ids, evs, strict=True))
        log_p_all = list(log_p)
    else:                                                                 # images dropped per layer
        log_p_all = []
        for k, a, c in zip(ids, adv, ctrl, strict=True):
            ok = np.isfinite(a) & np.isfinite(c).all(1)
            if not ok.any():
                nan = math.nan
                ev[k] = LayerEvidence(k, 0, draws, nan, nan, nan, np.zeros(0), 0, nan, nan, nan, nan, nan, False)
                continue
            (ev[k],), lp = _block([k], a[ok][None], c[ok][None], cfg)
            log_p_all.append(lp[0])
    gate_p = gate_p_value(np.stack(log_p_all)) if log_p_all else math.nan
    below = [ev[k].below for k in ids]
    first = next((k for k, b in zip(ids, below, strict=True) if b), None)
    need = min(cfg.persist + 1, len(ids))
    start = next((i for i in range(len(ids) - need + 1) if need > 0 and all(below[i:i + need])), None)
    mde = detectable_shift(n_img, draws, cfg.alpha, cfg.power) if n_img and draws else math.nan
    res = Divergence(None, None, ids, ev, cfg, [], first, None, gate_p, n_img, draws, mde)
    if start is not None:
        res.candidate = ids[start]
        if not cfg.gate or gate_p <= cfg.alpha + 1e-12:
            j = start
            while j < len(ids) and below[j]:
                j += 1
            res.layer, res.index, res.run = ids[start], start, ids[start:j]
    return res


def _block(ids: list[str], a: np.ndarray, c: np.ndarray,
           cfg: DivergenceConfig) -> tuple[list[LayerEvidence], np.ndarray]:
    """Evidence of L layers from ``a`` (L, n), ``c`` (L, n, R), and the combined log P of every
    draw (L, R + 1), column 0 the adversarial."""
    n, r = c.shape[1:]
    p_all = all_rank_p_values(np.concatenate([a[..., None], c], axis=-1))   # (L, n, R+1)
    log_p = fisher_log_p(p_all, axis=1)
    eff, lo, hi, z = effect_size(a, c)
    sd = np.sqrt(c.var(-1, ddof=1).mean(-1)) if r > 1 else np.full(len(ids), math.nan)
    mde = detectable_shift(n, r, cfg.alpha, cfg.power) * sd
    below = (log_p[:, 0] <= math.log(cfg.alpha) + 1e-9) & (eff >= cfg.min_effect)   # 1e-9: P = α exactly
    exceed = (p_all[:, :, 0] <= cfg.alpha + 1e-12).sum(1)
    mean_a, mean_c = a.mean(1), c.mean((1, 2))
    evs = [LayerEvidence(k, n, r, float(mean_a[j]), float(mean_c[j]), float(np.exp(log_p[j, 0])), p_all[j, :, 0],
                         int(exceed[j]), float(eff[j]), float(lo[j]), float(hi[j]), float(z[j]), float(mde[j]),
                         bool(below[j])) for j, k in enumerate(ids)]
    return evs, log_p


def diverging_point(comparison: NoiseComparison, config: DivergenceConfig | None = None) -> Divergence:
    """:func:`find_diverging_point` on a :class:`NoiseComparison`, with its control and rms."""
    d = find_diverging_point(comparison.sim_adv, comparison.sim_control, comparison.layers, config)
    d.control = comparison.control
    d.rms_adv_255 = 255 * float(np.mean(comparison.rms_adv))
    d.rms_control_255 = 255 * float(np.mean(comparison.rms_control))
    return d


