"""Accumulating Eq. 5's statistics over batches and choosing critical maps (Liu et al., VAST 2018).

:class:`QPAccumulator` keeps ``(Q, c, Σ s², K)`` in float64 so memory is O(n²) whatever the number
of images; :func:`critical_set` turns a solution z into map indices; :func:`brute_force_subset`
is the exhaustive reference used by the tests; :func:`rank_maps` orders maps and
:func:`coverage_set` is the never-empty selection rule (a share of the layer's Σq).
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import ArrayLike

from aevis_core.datapath.qp import FloatArray, IntArray, QPResult, default_lambda, objective, solve_box_qp

# ---------------------------------------------------------------------------------------------
# accumulation
# ---------------------------------------------------------------------------------------------


def accumulate(q: ArrayLike) -> tuple[FloatArray, FloatArray, float, int]:
    """Sufficient statistics of Eq. 5 for a block of images.

    Args:
        q: ``(K, n)`` contributions ``q_kj`` (or ``(n,)`` for one image).

    Returns:
        ``(Q, c, sum_s2, K)``: ``Q = q^T q`` ``(n, n)``, ``c = q^T s`` ``(n,)`` with
        ``s = q.sum(1)``, ``sum_s2 = s . s`` and the number of images ``K`` (float64 sums).
    """
    qa = np.asarray(q, dtype=np.float64)
    if qa.ndim == 1:
        qa = qa[None, :]
    if qa.ndim != 2:
        raise ValueError(f"q must be (K, n), got shape {qa.shape}")
    s = qa.sum(axis=1)
    return qa.T @ qa, qa.T @ s, float(s @ s), int(qa.shape[0])


class QPAccumulator:
    """Accumulates ``(Q, c, sum_s2, K)`` over batches in float64, then solves Eq. 5.

    Memory is ``O(n^2)`` whatever the number of images::

        acc = QPAccumulator()
        for q_batch in batches:          # each (B, n): q_kj = sum_space a * dp/da
            acc.add(q_batch)
        result = acc.solve()             # QPResult, result.z has shape (n,)
    """

    def __init__(self, n: int | None = None) -> None:
        """``n``: number of feature maps (inferred from the first batch when ``None``)."""
        self.n: int | None = n
        self.Q: FloatArray | None = None if n is None else np.zeros((n, n))
        self.c: FloatArray | None = None if n is None else np.zeros(n)
        self.sum_s2: float = 0.0
        self.K: int = 0

    def add(self, q_batch: ArrayLike) -> QPAccumulator:
        """Add a ``(B, n)`` batch (or one ``(n,)`` image); returns ``self``."""
        Qb, cb, s2, k = accumulate(q_batch)
        if self.n is None or self.Q is None or self.c is None:
            self.n = cb.shape[0]
            self.Q = np.zeros((self.n, self.n))
            self.c = np.zeros(self.n)
        if cb.shape[0] != self.n:
            raise ValueError(f"batch has {cb.shape[0]} maps, accumulator has {self.n}")
        self.Q += Qb
        self.c += cb
        self.sum_s2 += s2
        self.K += k
        return self

    def merge(self, other: QPAccumulator) -> QPAccumulator:
        """Add another accumulator's statistics (e.g. from a parallel worker); returns ``self``."""
        if other.Q is None or other.c is None:
            return self
        if self.Q is None or self.c is None:
            self.n, self.Q, self.c = other.n, other.Q.copy(), other.c.copy()
        else:
            if other.n != self.n:
                raise ValueError("accumulators have different n")
            self.Q += other.Q
            self.c += other.c
        self.sum_s2 += other.sum_s2
        self.K += other.K
        return self

    def loss(self, z: ArrayLike, lam: float | None = None) -> float:
        """``sum_k (s_k - q_k . z)^2 + lam |z|^2`` (objective plus the constant ``sum_s2``)."""
        if self.Q is None or self.c is None or self.n is None:
            raise ValueError("empty accumulator")
        lam_v = default_lambda(self.n) if lam is None else lam
        return objective(self.Q, self.c, lam_v, z) + self.sum_s2

    def solve(
        self, lam: float | None = None, *, tol: float = 1e-10, max_iter: int = 500
    ) -> QPResult:
        """:func:`solve_box_qp` on the accumulated ``(Q, c)``; ``lam=None`` -> ``0.1 / n^2``."""
        if self.Q is None or self.c is None:
            raise ValueError("empty accumulator: add at least one batch")
        return solve_box_qp(self.Q, self.c, lam, tol=tol, max_iter=max_iter)


# ---------------------------------------------------------------------------------------------
# selection helpers
# ---------------------------------------------------------------------------------------------


def critical_set(
    z: ArrayLike, threshold: float | None = 0.5, top_k: int | None = None
) -> IntArray:
    """Indices of the critical feature maps.

    Args:
        z: ``(n,)`` QP solution.
        threshold: with ``top_k=None``, select every ``j`` with ``z_j > threshold`` (strict:
            a map exactly at the threshold is not selected); ``None`` selects every map.
        top_k: if given, select the ``top_k`` largest ``z`` instead (threshold ignored);
            ``top_k > n`` selects all.

    Returns:
        ``(m,)`` int indices ordered by ``z`` descending, ties broken by the smaller index.
    """
    za = np.asarray(z, dtype=np.float64).reshape(-1)
    order = np.lexsort((np.arange(za.size), -za))  # primary: -z, secondary: index
    if top_k is not None:
        if top_k < 0:
            raise ValueError("top_k must be >= 0")
        return order[:top_k].astype(np.intp)
    if threshold is None:
        return order.astype(np.intp)
    return order[za[order] > threshold].astype(np.intp)


def brute_force_subset(q: ArrayLike, lam: float | None = None) -> FloatArray:
    """Best binary ``z`` for Eq. 5 by enumerating all ``2^n`` subsets (``n <= 16``; tests).

    Args:
        q: ``(K, n)`` contributions.
        lam: ridge weight; ``None`` -> :func:`default_lambda` ``(n)``.

    Returns:
        ``(n,)`` float64 0/1 vector minimising ``sum_k (s_k - q_k . z)^2 + lam |z|^2`` over
        ``z in {0, 1}^n``; ties go to the first subset in ``itertools.product([0, 1], ...)``
        order (lexicographic, fewer maps first at the leading positions).
    """
    Q, c, _, _ = accumulate(q)
    n = c.shape[0]
    if n > 16:
        raise ValueError("brute_force_subset enumerates 2^n subsets; n must be <= 16")
    lam_v = default_lambda(n) if lam is None else float(lam)
    Z = np.array(list(itertools.product((0.0, 1.0), repeat=n)), dtype=np.float64).reshape(-1, n)
    H = Q + lam_v * np.eye(n)
    vals = np.einsum("ij,jk,ik->i", Z, H, Z) - 2.0 * (Z @ c)
    return Z[int(np.argmin(vals))].copy()


def rank_maps(primary: ArrayLike, secondary: ArrayLike | None = None) -> IntArray:
    """(n,) map indices by ``primary`` descending, ties by ``secondary`` descending, then index."""
    p = np.asarray(primary, dtype=np.float64).reshape(-1)
    s = np.zeros_like(p) if secondary is None else np.asarray(secondary, dtype=np.float64).reshape(-1)
    return np.lexsort((np.arange(p.size), -s, -p)).astype(np.intp)


def coverage_set(order: ArrayLike, g: ArrayLike, share: float, base: ArrayLike | None = None) -> IntArray:
    """Critical set that explains at least ``share`` of the layer's total contribution.

    Rule (README "Datapath extraction", one-pair datapaths): with ``g_j = Σ_k q_kj`` the summed
    contribution of map j over the images (gradient × activation, after the extraction's
    normalisation) and ``G = Σ_j g_j`` the layer's total first-order contribution to the target
    score, a layer *carries the prediction* when ``G > 0``. There the critical set is ``base``
    (e.g. ``{z > 0.5}``) united with the shortest prefix P of ``order`` (the method's ranking,
    most important first) with ``Σ_{j∈P} g_j ≥ share · G``. Since the whole ranking sums to
    G ≥ share · G (0 < share ≤ 1), P exists and is never empty in such a layer; with ``order``
    by g descending, P is the smallest set of maps reaching the share (the largest g first).
    Layers with ``G ≤ 0`` keep ``base`` unchanged (possibly empty). ``k = |S|`` per layer is
    reported by the datapath (``len(critical)``).

    Args:
        order: (n,) map indices, most important first (a permutation of 0..n-1).
        g: (n,) per-map contributions Σ_k q_kj.
        share: τ in (0, 1].
        base: indices already selected (kept, in ranking order); ``None`` = empty.

    Returns:
        (m,) indices in ranking order.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    o = np.asarray(order, dtype=np.intp).reshape(-1)
    ga = np.asarray(g, dtype=np.float64).reshape(-1)
    keep = np.zeros(ga.size, dtype=bool)
    if base is not None:
        keep[np.asarray(base, dtype=np.intp).reshape(-1)] = True
    total = float(ga.sum())
    if total > 0.0:
        cum = np.cumsum(ga[o])
        # the first prefix reaching the share (slack for rounding in the cumulative sum)
        reach = int(np.argmax(cum >= share * total - 1e-12 * float(np.abs(ga).sum()))) + 1
        keep[o[:reach]] = True
    return o[keep[o]]
