"""Calibration of the clean-only ("clean-tail") adversarial score on classes it was not fitted on.

The clean-tail score is meant as a clean-image CDF: ``P(score > t | clean) ≈ 1 − t`` for any
clean image, so that 0.5 flags half of the clean images and 0.95 one in twenty. Fitted on a few
classes and applied to others, a raw kernel density fails that: an image of an unseen class is
far from every reference, so it looks as atypical as an adversarial one (issue 11: 90-95 % of
clean held-out ImageNet images scored above 0.5).

Two regimes fix it, chosen per query by whether its predicted class has clean references:

* **seen** class: the class-conditional (shrunk) KDE, calibrated against the leave-one-out
  statistics of the clean fitting images whose predicted class keeps at least one other
  reference (what a new image of a seen class looks like);
* **novel** class (no reference): the class-agnostic KDE, calibrated against *leave-class-out*
  statistics: every fitting image scored with all references of its own class removed (what a
  clean image of a class nobody fitted on looks like).

In each regime the statistics are standardised on their own null sample and the combined tail
statistic is mapped through that sample's kernel-smoothed empirical CDF
``F(t) = 1/n Σ_i Φ((t − t_i)/h)`` (Gaussian kernel, Silverman's bandwidth h), not a normal
fit: the uncertainty term ``(z² − 1)/√2`` is skewed, so a normal CDF puts the clean median
below 0.5. ``bench/scores.py --calibration`` measures the held-out false-positive rates.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

_CHUNK = 2048


def silverman_bandwidth(sample: np.ndarray) -> float:
    """Silverman's rule ``0.9 · min(σ, IQR/1.34) · n^(−1/5)`` for a 1-D sample (> 0)."""
    x = np.asarray(sample, np.float64)
    if x.size < 2:
        return 1.0
    q75, q25 = np.percentile(x, [75, 25])
    spread = min(float(x.std()), float(q75 - q25) / 1.34) or float(x.std()) or 1.0
    return 0.9 * spread * x.size ** -0.2


def smoothed_cdf(null: np.ndarray, t: np.ndarray, bandwidth: float | None = None) -> np.ndarray:
    """Kernel-smoothed empirical CDF of ``null`` (n,) at ``t`` (N,): ``mean_i Φ((t − null_i)/h)``.

    Strictly increasing in ``t``, in (0, 1); h defaults to :func:`silverman_bandwidth`.
    """
    ref = np.asarray(null, np.float64).ravel()
    q = np.asarray(t, np.float64).ravel()
    h = silverman_bandwidth(ref) if bandwidth is None else bandwidth
    out = np.empty(q.size)
    for start in range(0, q.size, _CHUNK):
        block = q[start:start + _CHUNK, None]
        out[start:start + _CHUNK] = norm.cdf((block - ref[None, :]) / h).mean(1)
    return out


def leave_class_out(ref_labels: np.ndarray, query_labels: np.ndarray, self_excl: np.ndarray) -> np.ndarray:
    """Exclusion mask (N, R): a query may not see itself nor any reference of its own class."""
    return self_excl | (ref_labels[None, :] == query_labels[:, None])


def seen_class(ref_labels: np.ndarray, query_class: np.ndarray,
               exclude: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: the query's class has at least one (visible) reference."""
    same = ref_labels[None, :] == query_class[:, None]
    if exclude is not None:
        same &= ~exclude
    return np.asarray(same.any(1))
