"""Per-image statistics behind the adversarial score (pure NumPy, float64).

* Kernel density (KD) of penultimate features per predicted class, fitted on clean images
  (Feinman et al., "Detecting Adversarial Samples from Artifacts", arXiv:1703.00410, 2017, Sec. 4.1;
  the "density of the final hidden layer" idea of Pang et al., "Towards Robust Detection of
  Adversarial Examples", NeurIPS 2018, arXiv:1706.00633). With only a handful of clean images per
  class, the class KDE is shrunk towards the class-agnostic KDE of all clean images
  (``class_prior`` pseudo-images), which is also the fallback for classes with no clean image.
* Predictive uncertainty. Feinman et al. use the variance of MC-dropout predictions; our models
  have no dropout worth sampling (ResNets have none), so the default is the softmax entropy,
  with the top-2 logit margin and MC dropout on the penultimate features through the linear head
  ("head dropout", Feinman's Bayesian-uncertainty formula on the last layer only) as options.
* Local intrinsic dimensionality (Ma et al., "Characterizing Adversarial Subspaces Using Local
  Intrinsic Dimensionality", ICLR 2018), maximum-likelihood estimate from the k nearest clean
  reference features.

Arrays: ``ref`` (R, D) clean reference features, ``x`` (N, D) query features, labels (R,)/(N,)
ints, ``exclude`` (N, R) bool: reference points a query must not see (itself, its source image).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

#: Bandwidth grid for leave-one-out likelihood selection, in units of the median
#: nearest-neighbour distance between clean reference features.
BANDWIDTH_GRID = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)
_TINY = 1e-300


def sq_dists(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, R) between queries ``x`` (N, D) and ``ref`` (R, D)."""
    d2 = (x * x).sum(1)[:, None] + (ref * ref).sum(1)[None, :] - 2.0 * (x @ ref.T)
    return np.maximum(d2, 0.0)


def median_nn_distance(ref: np.ndarray) -> float:
    """Median over reference points of the distance to their nearest other reference point.

    Falls back to the mean pairwise distance (then 1.0) when duplicates make it zero.
    """
    d = np.sqrt(sq_dists(ref, ref))
    np.fill_diagonal(d, np.inf)
    nn_d = d.min(1)
    m = float(np.median(nn_d[np.isfinite(nn_d)])) if np.isfinite(nn_d).any() else 0.0
    if m <= 0.0:
        off = d[np.isfinite(d)]
        m = float(off.mean()) if off.size and off.mean() > 0 else 1.0
    return m


def kde_log_density(ref: np.ndarray, ref_labels: np.ndarray, x: np.ndarray, labels: np.ndarray,
                    bandwidth: float, exclude: np.ndarray | None = None,
                    class_prior: float = 1.0) -> np.ndarray:
    """log p(x | class) under a Gaussian KDE (isotropic, ``bandwidth`` h) per class, shape (N,).

    ``p(x | c) = (sum_{r in c} k_h(x - r) + λ · mean_r k_h(x - r)) / (n_c + λ)`` with
    ``λ = class_prior``: the class KDE shrunk towards the class-agnostic KDE (λ = 0: pure
    class KDE, class-agnostic only for classes with no reference). ``labels`` are the queries'
    predicted classes. ``k_h`` is the normalised D-dimensional Gaussian kernel.
    """
    d = ref.shape[1]
    logk = -sq_dists(ref, x) / (2.0 * bandwidth**2) - 0.5 * d * np.log(2.0 * np.pi * bandwidth**2)
    valid = np.ones(logk.shape, dtype=bool) if exclude is None else ~exclude
    n_all = np.maximum(valid.sum(1), 1)
    log_all = logsumexp(np.where(valid, logk, -np.inf), axis=1) - np.log(n_all)
    same = valid & (ref_labels[None, :] == labels[:, None])
    n_c = same.sum(1)
    log_c = logsumexp(np.where(same, logk, -np.inf), axis=1)  # -inf when the class is empty
    if class_prior > 0:
        return np.logaddexp(log_c, np.log(class_prior) + log_all) - np.log(n_c + class_prior)
    return np.where(n_c > 0, log_c - np.log(np.maximum(n_c, 1)), log_all)


def select_bandwidth(ref: np.ndarray, ref_labels: np.ndarray, class_prior: float = 1.0,
                     grid: tuple[float, ...] = BANDWIDTH_GRID) -> float:
    """KDE bandwidth maximising the leave-one-out log-likelihood of the clean references.

    Candidates are ``grid`` × :func:`median_nn_distance` (scale-free); cross-validated on the
    class-conditional (shrunk) density actually used for scoring.
    """
    scale = median_nn_distance(ref)
    if ref.shape[0] < 3:
        return scale
    eye = np.eye(ref.shape[0], dtype=bool)
    best, best_ll = scale, -np.inf
    for g in grid:
        h = g * scale
        ll = float(kde_log_density(ref, ref_labels, ref, ref_labels, h, eye, class_prior).sum())
        if ll > best_ll:
            best, best_ll = h, ll
    return best


def lid_mle(ref: np.ndarray, x: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Maximum-likelihood LID (Ma et al. 2018, Eq. 3) of each query w.r.t. ``ref``, shape (N,).

    ``LID(x) = -(1/k Σ_i log(r_i / r_k))^-1`` over the k nearest reference distances r_i.
    """
    dist = np.sqrt(sq_dists(ref, x))
    if exclude is not None:
        dist = np.where(exclude, np.inf, dist)
    k = max(2, min(k, int(np.isfinite(dist).sum(1).min())))
    r = np.maximum(np.sort(dist, axis=1)[:, :k], 1e-12)
    mean_log = np.log(r / r[:, -1:]).mean(1)
    return -1.0 / np.minimum(mean_log, -1e-12)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis (float64)."""
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax_entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy of softmax(logits) in nats, shape (N,)."""
    lp = log_softmax(logits)
    return -(np.exp(lp) * lp).sum(-1)


def dropout_masks(dim: int, samples: int, rate: float, seed: int) -> np.ndarray:
    """(T, D) inverted-dropout masks (0 or 1/(1-rate)), fixed by ``seed``: shared by all images,
    so an image's uncertainty never depends on what else is in the batch."""
    rng = np.random.default_rng(seed)
    return (rng.random((samples, dim)) >= rate).astype(np.float64) / (1.0 - rate)


def head_dropout_variance(features: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                          masks: np.ndarray) -> np.ndarray:
    """Feinman et al.'s Bayesian uncertainty with dropout on the penultimate features only.

    ``U(x) = 1/T Σ_t ŷ_tᵀŷ_t − (1/T Σ_t ŷ_t)ᵀ(1/T Σ_t ŷ_t)``, ``ŷ_t = softmax(W (m_t ⊙ f) + b)``;
    features (N, D), weight (K, D), bias (K,), masks (T, D). Returns (N,).
    """
    sq_sum = np.zeros(features.shape[0])
    p_sum = np.zeros((features.shape[0], weight.shape[0]))
    f32, w32 = features.astype(np.float32), weight.T.astype(np.float32)  # float32 matmul: 2x faster
    for m in masks.astype(np.float32):
        p = np.exp(log_softmax(((f32 * m) @ w32).astype(np.float64) + bias))  # (N, K)
        sq_sum += (p * p).sum(-1)
        p_sum += p
    t = masks.shape[0]
    return np.maximum(sq_sum / t - ((p_sum / t) ** 2).sum(-1), 0.0)


def uncertainty(logits: np.ndarray, kind: str, features: np.ndarray | None = None,
                head: tuple[np.ndarray, np.ndarray] | None = None,
                masks: np.ndarray | None = None) -> np.ndarray:
    """Log predictive uncertainty (larger = less certain), shape (N,).

    ``"entropy"``: log softmax entropy; ``"margin"``: −log(top-1 minus top-2 logit);
    ``"head-dropout"``: log :func:`head_dropout_variance` (needs ``features``, ``head``, ``masks``).
    Logs tame the orders of magnitude between clean and over-confident adversarial images.
    """
    if kind == "entropy":
        return np.log(softmax_entropy(logits) + _TINY)
    if kind == "margin":
        if logits.shape[1] < 2:
            return np.zeros(logits.shape[0])
        top = np.sort(logits, axis=1)[:, -2:]
        return -np.log(top[:, 1] - top[:, 0] + 1e-6)
    if kind == "head-dropout":
        if features is None or head is None or masks is None:
            raise ValueError("head-dropout uncertainty needs features, head and masks")
        return np.log(head_dropout_variance(features, head[0], head[1], masks) + _TINY)
    raise ValueError(f"unknown uncertainty {kind!r}")
