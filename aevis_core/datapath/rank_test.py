"""Monte Carlo rank test of "below the noise control", valid from one image (pure numpy/scipy).

For image i and layer l let s_0 = s_adv(i, l) be the adversarial similarity and s_1..s_R the
similarities of R control draws (:mod:`aevis_core.datapath.controls`). Under H0 (the adversarial
perturbation acts on the network like a control draw) the R + 1 values are exchangeable, so

* per-image p-value (Barnard 1963; Davison & Hinkley 1997, Eq. 4.11, the "+1" correction):
  ``p_i = (1 + #{r ≥ 1: s_r ≤ s_0}) / (R + 1)``, with P(p_i ≤ k/(R+1)) ≤ k/(R+1) exactly;
* combined over n images by Fisher's method: ``F = −2 Σ_i log p_i``, ``P = χ²_{2n}.sf(F)``.
  Valid for independent super-uniform p-values (discreteness only makes it conservative: each
  −2 log p_i is stochastically below χ²₂); with n = 1 it is p_1 itself, so one pair is the same
  rule. Each image adds at most 2 log(R + 1), so one image cannot carry the verdict alone;
* global (gate) test over all layers: G = Σ_l −log P(l), and the same G computed for every
  control draw in the place of the adversarial one (ranks among all R + 1 draws). Its Monte
  Carlo p-value ``(1 + #{r ≥ 1: G_r ≥ G_0}) / (R + 1)`` is exact under H0 whatever the
  correlation between layers (the R + 1 jointly re-indexed draws are exchangeable).

Effect size per layer: D_i = mean_r s_r − s_0 (cosine drop below the control mean), its mean over
images with a 95 % interval (t over images for n ≥ 2; for n = 1 only the Monte Carlo error of the
control mean, sd_r/√R), and z_i = D_i / sd_r (drop in control standard deviations).
Smallest detectable effect: the common shift δ (in control sd, normal null) that the per-layer
test detects with 80 % power at level α with this n and R (exact rank distribution, n-fold
convolution of Fisher's terms); ∞ when even the smallest attainable P exceeds α.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats as sps

from aevis_core.errors import AEVisError


def rank_p_values(s_adv: np.ndarray, s_ctrl: np.ndarray) -> np.ndarray:
    """Per-image Monte Carlo p-values ``(1 + #{r: s_ctrl[..., r] ≤ s_adv}) / (R + 1)``.

    ``s_adv`` (...,) and ``s_ctrl`` (..., R) -> (...,) float64 in [1/(R+1), 1]. Ties count
    against the adversarial (conservative).
    """
    a = np.asarray(s_adv, dtype=np.float64)
    c = np.asarray(s_ctrl, dtype=np.float64)
    if c.shape[:-1] != a.shape or c.shape[-1] < 1:
        raise AEVisError(f"control similarities {c.shape} do not match adversarial ones {a.shape}")
    return (1.0 + (c <= a[..., None]).sum(-1)) / (c.shape[-1] + 1.0)


def all_rank_p_values(s: np.ndarray) -> np.ndarray:
    """:func:`rank_p_values` of every draw against the others: (..., R+1) -> (..., R+1).

    ``out[..., r] = (1 + #{r' ≠ r: s[..., r'] ≤ s[..., r]}) / (R + 1)`` = max-rank / (R + 1).
    """
    a = np.asarray(s, dtype=np.float64)
    return sps.rankdata(a, method="max", axis=-1) / a.shape[-1]


def fisher_log_p(p: np.ndarray, axis: int = 0) -> np.ndarray:
    """log of Fisher's combined p-value over ``axis``: ``log χ²_{2n}.sf(−2 Σ log p)``."""
    q = np.asarray(p, dtype=np.float64)
    n = q.shape[axis]
    return np.asarray(sps.chi2.logsf(-2.0 * np.log(q).sum(axis), 2 * n), dtype=np.float64)


def gate_p_value(log_p_all: np.ndarray) -> float:
    """Monte Carlo p of the global test from per-layer combined log P of every draw.

    ``log_p_all``: (L, R+1), column 0 the adversarial. G_r = Σ_l −log P_r(l);
    returns ``#{r: G_r ≥ G_0} / (R + 1)`` (r = 0 counts itself).
    """
    g = -np.asarray(log_p_all, dtype=np.float64).sum(0)
    return float(np.sum(g >= g[0] - 1e-9 * max(1.0, abs(g[0]))) / g.size)


def effect_size(s_adv: np.ndarray, s_ctrl: np.ndarray,
                level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean drop D̄, CI low, CI high, mean z), each (...,), for ``s_adv`` (..., n), ``s_ctrl`` (..., n, R).

    D_i = mean_r s_ctrl[i] − s_adv[i]; z_i = D_i / sd_r(s_ctrl[i]) (ddof 1; NaN for R < 2,
    ±∞ when the controls do not vary). See the module docstring for the interval.
    """
    a = np.asarray(s_adv, dtype=np.float64)
    c = np.asarray(s_ctrl, dtype=np.float64)
    n, r = c.shape[-2:]
    mu = c.mean(-1)
    sd = c.std(-1, ddof=1) if r > 1 else np.full(mu.shape, math.nan)
    d = mu - a
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, d / np.where(sd > 0, sd, 1.0), np.sign(d) * math.inf)
        z = np.where(np.isnan(sd), math.nan, z)
    mean = d.mean(-1)
    if n >= 2:
        half = _t_quantile(0.5 + level / 2, n - 1) * d.std(-1, ddof=1) / math.sqrt(n)
    else:
        half = _t_quantile(0.5 + level / 2, 0) * sd[..., 0] / math.sqrt(r)
    return mean, mean - half, mean + half, z.mean(-1)


@functools.lru_cache(maxsize=1024)
def _t_quantile(q: float, df: int) -> float:
    """Student-t quantile (df = 0: the normal quantile), cached: the rule asks it once per layer."""
    return float(sps.norm.ppf(q) if df == 0 else sps.t.ppf(q, df))


def _rank_pmf(delta: float, draws: int) -> np.ndarray:
    """P(#{r: s_r ≤ s_0} = j), j = 0..R, for s_0 ~ N(−δ, 1) and R i.i.d. N(0, 1) draws."""
    t = np.linspace(-delta - 9.0, -delta + 9.0, 901)
    w = sps.norm.pdf(t + delta)
    j = np.arange(draws + 1)[:, None]
    pmf = np.trapezoid(sps.binom.pmf(j, draws, sps.norm.cdf(t)[None, :]) * w[None, :], t, axis=1)
    return np.asarray(pmf / pmf.sum(), dtype=np.float64)


def _fisher_power(delta: float, n: int, draws: int, alpha: float, step: float = 0.005) -> float:
    """P(Fisher's combined rank p ≤ α) for n images with shift δ.

    Exact for n = 1; for n ≥ 2 the terms −2 log p_i are floored to multiples of ``step`` before
    the n-fold convolution (FFT), which can only underestimate the power (conservative).
    """
    pmf = _rank_pmf(delta, draws)
    v = -2.0 * np.log((np.arange(draws + 1) + 1.0) / (draws + 1.0))
    crit = float(sps.chi2.isf(alpha, 2 * n))
    if n == 1:
        return float(pmf[v >= crit * (1 - 1e-12)].sum())
    bins = np.floor(v / step + 1e-9).astype(np.int64)
    single = np.zeros(int(bins.max()) + 1)
    np.add.at(single, bins, pmf)
    size = n * (single.size - 1) + 1
    nfft = 1 << int(math.ceil(math.log2(max(2, size))))
    total = np.fft.irfft(np.fft.rfft(single, nfft) ** n, nfft)[:size]
    k = int(math.ceil(crit / step - 1e-9))
    return float(np.clip(total[k:], 0.0, None).sum()) if k < size else 0.0


@functools.lru_cache(maxsize=256)
def detectable_shift(n: int, draws: int, alpha: float, power: float = 0.8) -> float:
    """Smallest common shift δ (control sd units) detected with ``power`` at level ``alpha``.

    The per-layer test: Fisher over n images of rank p-values among ``draws`` control draws,
    normal null. Returns ∞ when the smallest attainable combined p exceeds ``alpha``.
    """
    if n < 1 or draws < 1:
        raise AEVisError("need at least one image and one control draw")
    if float(sps.chi2.sf(2.0 * n * math.log(draws + 1.0), 2 * n)) > alpha * (1 + 1e-9):
        return math.inf
    lo, hi = 0.0, 1.0
    while _fisher_power(hi, n, draws, alpha) < power:
        lo, hi = hi, 2 * hi
        if hi > 64:
            return math.inf
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _fisher_power(mid, n, draws, alpha) < power else (lo, mid)
        if hi - lo < 5e-3:
            break
    return hi
