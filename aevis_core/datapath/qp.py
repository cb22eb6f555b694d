"""Exact solver for the datapath box QP (Liu et al., VAST 2018, Eq. 5).

For one layer with ``n`` feature maps and ``K`` images, let ``q_k`` (shape ``(n,)``) hold the
per-map contributions ``q_kj = sum_space a_kj * dp_k/da_kj`` (activation times gradient of the
class score, summed over the spatial positions) and ``s_k = sum_j q_kj``.  The critical maps
are found by the bounded ridge least squares

.. math::

    \\min_{z \\in [0, 1]^n} \\sum_k (s_k - q_k^\\top z)^2 + \\lambda \\lVert z \\rVert^2
    \\;=\\; \\min_{z \\in [0, 1]^n} z^\\top (Q + \\lambda I) z - 2 c^\\top z + \\sum_k s_k^2,

with ``Q = sum_k q_k q_k^T`` (``(n, n)``, positive semi-definite) and ``c = sum_k s_k q_k``
(``(n,)``; note ``c = Q @ 1`` because ``s_k = q_k . 1``).  ``lambda = 0.1 / n**2`` by default
(:func:`default_lambda`).  Since ``Q + lambda I`` is positive definite for ``lambda > 0`` the
optimum is unique.

Only ``(Q, c)`` are needed, so data can be accumulated batch after batch in ``O(n^2)`` memory
(:class:`QPAccumulator`, :func:`accumulate`).

Solver (:func:`solve_box_qp`)
-----------------------------
An exact active-set solver on the scaled problem ``min 1/2 z^T H z - c^T z``:

1. the unconstrained minimiser ``H^{-1} c`` (one Cholesky; done if it lies in the box);
2. primal-dual active set (PDAS; Hintermueller, Ito & Kunisch 2002, a semismooth Newton
   method on ``z = clip(z - g, 0, 1)``): every step fixes a partition into
   ``{z_j = 0}``, ``{z_j = 1}`` and free variables, solves the free block exactly (Cholesky of
   ``H_FF`` + one step of iterative refinement) and re-partitions from the signs of the
   iterate and of the multipliers.  On accumulated data it typically finds the optimal
   partition in 3-10 face solves.  Since ``H`` is not an M-matrix PDAS may cycle or wander;
   repeated partitions are avoided by applying only the most violated changes, and after 4
   steps without improvement (or 30 in all) the best iterate is handed to
3. a monotone primal active-set method with projected search (:func:`_active_set`): exact
   face solves, all wrong-signed multipliers released at once (as long as the step points
   into the box) and a projected search that may add many bounds per step.  The objective
   decreases strictly, so it terminates, at the exact optimum.

The iteration stops only when the optimal active set is identified: the final point is the
exact minimiser of its face with every multiplier of the right sign up to rounding, so the
KKT residual is ~1e-16 (reported in :class:`QPResult`).  "Exact" means backward stable:
``z`` is the exact optimum of a problem whose data differ from ``(Q, c)`` at rounding level.
When ``lambda`` is tiny relative to ``Q`` (ill-conditioned ``H``) the *forward* error of ``z``
can still reach ``~ eps / lambda~`` in directions where ``Q`` is nearly singular (e.g. 1e-5
for ``n = 1280`` with one image) -- no algorithm working from ``(Q, c)`` can do better.

Each face solve costs one Cholesky of the free block (``n = 1280``: ~10-30 ms), so the
time is dominated by the number of face solves.  Problems whose ``c`` is *not* in the range
of ``Q`` (impossible for accumulated data, where ``c = Q @ 1``) behave like linear programs
when ``lambda`` is small and need many more face solves.

Why not ``scipy.optimize.lsq_linear(method='bvls')`` on ``A = L^T, b = L^{-1} c``: it is exact
but moves one variable per step and re-solves a dense least-squares problem each time
(hundreds of ``O(n^3)`` solves for ``n ~ 1000``); the tests use it as an independent
reference.  L-BFGS-B with default tolerances stops far above the optimum.

Scaling (documented choice)
---------------------------
The argmin is unchanged when ``Q``, ``c`` and ``lambda`` are multiplied by the same positive
factor, so the solver works on ``H~ = (Q + lambda I) / alpha``, ``c~ = c / alpha`` with
``alpha = max_j Q_jj + lambda`` (the largest diagonal entry of ``Q + lambda I``).  Then
``max diag(H~) = 1`` whatever the units of the gradients (``q ~ 1e-9`` or ``q ~ 1e4``), and
``lambda~ = lambda / alpha`` is the ridge *relative* to the strongest map.  ``lambda`` is
added to the diagonal *after* scaling, so it is represented with full relative precision.  If
``lambda~`` is below the level that rounding in ``Q`` itself can resolve (``n * eps``,
``eps = 2.2e-16``; e.g. ``n = 1280`` and ``max Q_jj > 2e5`` with the default lambda), it is
raised to that floor.  If a Cholesky factorisation still fails (``Q`` indefinite at rounding
level), ``10 n eps``, ``100 n eps``, ... are added, up to ``1e-9``; beyond that ``Q`` is
declared not positive semi-definite (``ValueError``).  These changes are invisible at the
precision of the data (the gradient moves by ``<= 2 (lambda_used - lambda) |z|``, ~1e-13
relative to its scale) but keep the problem numerically strictly convex.
:attr:`QPResult.lam` is the lambda that was actually used (in the caller's units) and
:attr:`QPResult.lam_requested` the one asked for.  ``lambda`` itself is absolute, exactly
as in Eq. 5: if ``Q`` is tiny compared to it (e.g. ``q ~ 1e-9``), ``z`` is correspondingly
shrunk towards 0 -- that is the model, not a numerical effect.  (Callers who want a
unit-free ridge can pass ``lam = rho * trace(Q) / n``.)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import LinAlgError, cho_factor, cho_solve

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

__all__ = [
    "QPResult",
    "default_lambda",
    "kkt_residual",
    "objective",
    "solve_box_qp",
]

_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)
_MAX_LAM_BUMP = 1e-9  # largest relative lambda~ the solver may add to repair rounding in Q


@dataclass
class QPResult:
    """Solution of ``min_{z in [0,1]^n} z^T (Q + lam I) z - 2 c^T z``.

    Attributes:
        z: ``(n,)`` float64 optimum, every entry in ``[0, 1]`` (bounds hit exactly).
        objective: ``z^T (Q + lam I) z - 2 c^T z`` at ``z`` (add ``sum_k s_k^2`` for the
            least-squares loss ``sum_k (s_k - q_k . z)^2 + lam |z|^2``).
        kkt_residual: :func:`kkt_residual` of ``z`` (relative, dimensionless; ~1e-16 when exact).
        iterations: face solves, i.e. Cholesky factorisations (0 for ``n <= 1``).
        method: how it was solved: ``"unconstrained"`` (``(Q + lam I)^{-1} c`` is in the box),
            ``"pdas"``, ``"pdas+active-set"``, ``"active-set"`` (warm start), ``"closed-form"``
            (``n = 1``) or ``"empty"`` (``n = 0``).
        lam: the lambda actually used, in the caller's units (``>= lam_requested``; larger only
            when the requested value is below the numerical floor, see the module docstring).
        lam_requested: the lambda asked for (``default_lambda(n)`` when ``None`` was passed).
        converged: ``kkt_residual <= tol`` was reached within ``max_iter`` iterations.
    """

    z: FloatArray
    objective: float
    kkt_residual: float
    iterations: int
    method: str
    lam: float
    lam_requested: float = math.nan
    converged: bool = True


def default_lambda(n: int) -> float:
    """The paper's ridge weight ``lambda = 0.1 / n**2`` for a layer with ``n`` maps (n >= 1)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 0.1 / float(n) ** 2


def objective(Q: ArrayLike, c: ArrayLike, lam: float, z: ArrayLike) -> float:
    """``z^T (Q + lam I) z - 2 c^T z`` (Eq. 5 without the constant ``sum_k s_k^2``).

    Args:
        Q: ``(n, n)`` symmetric PSD matrix ``sum_k q_k q_k^T``.
        c: ``(n,)`` vector ``sum_k s_k q_k``.
        lam: ridge weight (absolute).
        z: ``(n,)`` point (need not be feasible).
    """
    Qa, ca = _as_problem(Q, c)
    za = np.asarray(z, dtype=np.float64).reshape(-1)
    return float(za @ (Qa @ za) + lam * (za @ za) - 2.0 * (ca @ za))


def kkt_residual(Q: ArrayLike, c: ArrayLike, lam: float, z: ArrayLike) -> float:
    """Relative violation of the KKT conditions of the box QP at ``z`` (0 at the optimum).

    With the gradient ``g = 2 ((Q + lam I) z - c)`` the violation of coordinate ``j`` is

    * ``|g_j|`` if ``0 < z_j < 1`` (stationarity on free coordinates),
    * ``max(0, -g_j)`` if ``z_j == 0`` (increasing ``z_j`` must not decrease the objective),
    * ``max(0, g_j)`` if ``z_j == 1`` (decreasing ``z_j`` must not decrease it),
    * ``|g_j|`` if ``z_j`` is outside ``[0, 1]``.

    Normalisation: the largest violation is divided by ``2 (||Q||_inf + lam + ||c||_inf)``
    (``||.||_inf`` = max absolute row sum / entry), an upper bound of ``|g_j|`` anywhere in the
    box.  The result is dimensionless and invariant to rescaling ``(Q, c, lam)`` by a common
    factor (the units of the gradients drop out); rounding in evaluating ``g`` alone gives
    ~1e-16.  The bound violation ``max_j max(0, -z_j, z_j - 1)`` (dimensionless already) is
    added.  Returns just the bound violation when ``Q``, ``lam`` and ``c`` are all zero.

    Args:
        Q: ``(n, n)``; c: ``(n,)``; lam: ridge weight; z: ``(n,)`` point.
    """
    Qa, ca = _as_problem(Q, c)
    za = np.asarray(z, dtype=np.float64).reshape(-1)
    if za.shape != ca.shape:
        raise ValueError(f"z has shape {za.shape}, expected {ca.shape}")
    if za.size == 0:
        return 0.0
    g = 2.0 * (Qa @ za + lam * za - ca)
    viol = np.abs(g)
    viol = np.where(za == 0.0, np.maximum(0.0, -g), viol)
    viol = np.where(za == 1.0, np.maximum(0.0, g), viol)
    scale = 2.0 * (float(np.max(np.sum(np.abs(Qa), axis=1))) + abs(lam) + float(np.max(np.abs(ca))))
    bound = float(np.max(np.maximum(0.0, np.maximum(-za, za - 1.0))))
    if not scale > 0.0:
        return bound
    return float(np.max(viol)) / scale + bound


def _as_problem(Q: ArrayLike, c: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validate and convert ``(Q, c)`` to float64 ``(n, n)`` / ``(n,)`` arrays."""
    Qa = np.asarray(Q, dtype=np.float64)
    ca = np.asarray(c, dtype=np.float64).reshape(-1)
    if Qa.ndim == 0 and ca.size == 1:
        Qa = Qa.reshape(1, 1)
    if Qa.ndim != 2 or Qa.shape[0] != Qa.shape[1] or Qa.shape[0] != ca.shape[0]:
        raise ValueError(f"Q must be (n, n) and c (n,), got {Qa.shape} and {ca.shape}")
    return Qa, ca


def solve_box_qp(
    Q: ArrayLike,
    c: ArrayLike,
    lam: float | None = None,
    *,
    tol: float = 1e-10,
    max_iter: int = 500,
    z0: ArrayLike | None = None,
) -> QPResult:
    """Exactly solve ``min_{z in [0,1]^n} z^T (Q + lam I) z - 2 c^T z`` (Eq. 5).

    Args:
        Q: ``(n, n)`` symmetric positive semi-definite ``sum_k q_k q_k^T`` (symmetrised as
            ``(Q + Q^T) / 2``; must be finite).
        c: ``(n,)`` ``sum_k s_k q_k``.
        lam: ridge weight (absolute, ``>= 0``); ``None`` -> :func:`default_lambda` ``(n)``.
            Values below the numerical floor (``n * eps`` relative to ``max_j Q_jj + lam``)
            are raised to it, see the module docstring; the value used is ``result.lam``.
        tol: the result is flagged ``converged`` (and no warning is issued) when its
            :func:`kkt_residual` is ``<= tol``.  The solver itself does not stop at ``tol``:
            it iterates until the optimal active set is found (multipliers right to rounding
            level) because on ill-conditioned problems (tiny relative ``lam``) a KKT residual
            of 1e-10 still allows ``z`` to be off by O(1).
        max_iter: cap on active-set iterations (the PDAS phase is capped at 30 more); if hit,
            a ``RuntimeWarning`` is issued and the current feasible point is returned.
        z0: optional ``(n,)`` warm start (clipped to the box); skips the PDAS phase.

    Returns:
        :class:`QPResult` with the unique optimum ``z`` (shape ``(n,)``).

    Raises:
        ValueError: bad shapes, non-finite input, negative ``lam``, or ``Q`` not positive
            semi-definite (beyond rounding level).
    """
    Qa, ca = _as_problem(Q, c)
    n = ca.shape[0]
    if lam is None:
        lam_req = default_lambda(n) if n > 0 else 0.0
    else:
        lam_req = float(lam)
    if not math.isfinite(lam_req) or lam_req < 0.0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    if not (np.all(np.isfinite(Qa)) and np.all(np.isfinite(ca))):
        raise ValueError("Q and c must be finite")
    if n == 0:
        return QPResult(np.zeros(0), 0.0, 0.0, 0, "empty", lam_req, lam_req, True)
    Qs = Qa + Qa.T
    Qs *= 0.5

    # ---- scaling: H~ = (Q + lam I) / alpha, so that max diag(H~) == 1 ------------------------
    dmax = float(np.max(np.diag(Qs)))
    if float(np.min(np.diag(Qs))) < 0.0:
        raise ValueError("Q has a negative diagonal entry; it must be positive semi-definite")
    alpha = dmax + lam_req
    if not alpha > 0.0:  # Q has a zero diagonal (so Q == 0 if PSD) and lam == 0
        alpha = max(float(np.max(np.abs(ca))), _TINY)
    cs = ca / alpha
    lam_s = max(lam_req / alpha, n * _EPS)

    def lam_used() -> float:  # the caller's lambda unless it had to be raised
        return lam_req if lam_s == lam_req / alpha else lam_s * alpha

    if n == 1:
        z = np.array([min(1.0, max(0.0, float(cs[0]) / (float(Qs[0, 0]) / alpha + lam_s)))])
        return _finish(Qs, ca, lam_req, lam_used(), z, 0, "closed-form", tol)

    z_start = None if z0 is None else np.clip(np.asarray(z0, dtype=np.float64).reshape(-1), 0, 1)
    if z_start is not None and z_start.shape != (n,):
        raise ValueError(f"z0 must have shape ({n},)")
    lam_s0, bump = lam_s, n * _EPS
    while True:  # add to lam~ (x10 each time) while H~ or a block of it is not numerically PD
        H = Qs / alpha
        H[np.diag_indices(n)] += lam_s
        try:
            z, iters, method, ok = _solve_scaled(H, cs, z_start, tol=tol, max_iter=max_iter)
            break
        except LinAlgError:
            bump *= 10.0
            lam_s = lam_s0 + bump
            if bump > _MAX_LAM_BUMP:
                raise ValueError(
                    "Q + lam I is not numerically positive definite: Q must be positive "
                    "semi-definite (e.g. sum_k q_k q_k^T)"
                ) from None
    result = _finish(Qs, ca, lam_req, lam_used(), z, iters, method, tol)
    if not (ok and result.converged):
        warnings.warn(
            f"solve_box_qp: stopped after {iters} iterations with KKT residual "
            f"{result.kkt_residual:.2e} > tol={tol:.1e}",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


def _finish(
    Q: FloatArray, c: FloatArray, lam_req: float, lam_used: float, z: FloatArray,
    iters: int, method: str, tol: float,
) -> QPResult:
    """Package ``z`` with its objective and KKT residual (w.r.t. the lambda actually used)."""
    res = kkt_residual(Q, c, lam_used, z)
    return QPResult(
        z=z,
        objective=objective(Q, c, lam_used, z),
        kkt_residual=res,
        iterations=iters,
        method=method,
        lam=lam_used,
        lam_requested=lam_req,
        converged=res <= tol,
    )


def _solve_scaled(
    H: FloatArray, c: FloatArray, z0: FloatArray | None, *, tol: float, max_iter: int
) -> tuple[FloatArray, int, str, bool]:
    """Solve ``min 1/2 z^T H z - c^T z`` on ``[0, 1]^n`` (``H`` scaled, positive definite).

    1. Unconstrained minimiser (Cholesky of ``H``; also the positive-definiteness check).
    2. Primal-dual active set (PDAS, Hintermueller-Ito-Kunisch 2002; a semismooth Newton
       method on ``z = clip(z - g)``): usually finds the optimal partition in 2-15 face
       solves, but may cycle or wander for non-M-matrices -- repeated partitions are avoided,
       and after 4 steps without improvement (30 in all) the best clipped iterate is kept.
    3. The monotone active-set method :func:`_active_set` from that point: guaranteed
       termination at the exact optimum.

    Returns ``(z, iterations, method, converged)``; raises ``LinAlgError`` if ``H`` or one of
    its principal blocks is not numerically positive definite.
    """
    scale = float(np.max(np.sum(np.abs(H), axis=1))) + float(np.max(np.abs(c)))
    if not scale > 0.0:
        scale = 1.0
    thr = min(tol, 4.0 * _EPS) * scale  # release multipliers wrong beyond rounding level
    if z0 is not None:
        z, it, ok = _active_set(H, c, z0, thr=thr, max_iter=max_iter)
        return z, it, "active-set", ok

    fac = cho_factor(H, lower=False, check_finite=False)
    x = cho_solve(fac, c, check_finite=False)
    x += cho_solve(fac, c - H @ x, check_finite=False)
    del fac
    if np.all((x >= 0.0) & (x <= 1.0)):
        return x, 1, "unconstrained", True

    # ---- PDAS from the unconstrained minimiser (g == 0 there) --------------------------------
    lo = x < 0.0
    up = x > 1.0
    best_z = np.clip(x, 0.0, 1.0)
    best_f = _f(H, c, best_z)
    seen = {_key(lo, up)}
    limit = c.shape[0]  # max. number of partition changes per step (halved when cycling)
    stale = 0
    it = 1
    for _ in range(min(30, max_iter)):
        it += 1
        x = _face_minimiser(H, c, lo, up)
        g = H @ x - c
        free = ~(lo | up)
        new_lo = (free & (x < 0.0)) | (lo & (g > 0.0))
        new_up = (free & (x > 1.0)) | (up & (g < 0.0))
        changed = np.flatnonzero((new_lo != lo) | (new_up != up))
        if changed.size == 0:  # x is feasible and its multipliers have the right signs
            z = np.clip(x, 0.0, 1.0)
            if _kkt_ok(z, H @ z - c, thr):
                return z, it, "pdas", True
            break
        zc = np.clip(x, 0.0, 1.0)
        fc = _f(H, c, zc)
        if fc < best_f:
            best_z, best_f, stale = zc, fc, 0
        else:
            stale += 1
            if stale >= 4:  # PDAS is wandering: hand over to the monotone method
                break
        # plain PDAS may cycle (H is not an M-matrix): on a repeated partition, apply only the
        # `limit` most violated changes, halving `limit` until the partition is new
        mag = np.where(free, np.maximum(-x, x - 1.0), np.abs(g))[changed]
        order = changed[np.argsort(-mag, kind="stable")]
        while True:
            pick = order[:limit]
            cand_lo, cand_up = lo.copy(), up.copy()
            cand_lo[pick] = new_lo[pick]
            cand_up[pick] = new_up[pick]
            key = _key(cand_lo, cand_up)
            if key not in seen or limit == 1:
                break
            limit = max(1, min(limit, order.size) // 2)
        if key in seen:
            break
        seen.add(key)
        lo, up = cand_lo, cand_up
    z, it2, ok = _active_set(H, c, best_z, thr=thr, max_iter=max_iter)
    return z, it + it2, "pdas+active-set", ok


def _key(lo: NDArray[np.bool_], up: NDArray[np.bool_]) -> bytes:
    """Hashable fingerprint of a partition."""
    return np.packbits(lo).tobytes() + np.packbits(up).tobytes()


def _f(H: FloatArray, c: FloatArray, z: FloatArray) -> float:
    """``1/2 z^T H z - c^T z``."""
    return 0.5 * float(z @ (H @ z)) - float(c @ z)


def _face_minimiser(
    H: FloatArray, c: FloatArray, lo: NDArray[np.bool_], up: NDArray[np.bool_]
) -> FloatArray:
    """Minimiser of ``1/2 z^T H z - c^T z`` with ``z[lo] = 0``, ``z[up] = 1``, the rest free.

    One Cholesky factorisation of ``H[F, F]`` plus one step of iterative refinement.
    Raises ``LinAlgError`` if ``H[F, F]`` is not numerically positive definite.
    """
    x = np.zeros(c.shape[0])
    x[up] = 1.0
    F = np.flatnonzero(~(lo | up))
    if F.size:
        rhs = (c - H @ x)[F] if up.any() else c[F]
        HFF = np.take(np.take(H, F, axis=0), F, axis=1)
        fac = cho_factor(HFF, lower=False, check_finite=False, overwrite_a=True)
        x[F] = cho_solve(fac, rhs, check_finite=False)
        x[F] += cho_solve(fac, (c - H @ x)[F], check_finite=False)  # iterative refinement
    return x


def _active_set(
    H: FloatArray, c: FloatArray, z: FloatArray, *, thr: float, max_iter: int
) -> tuple[FloatArray, int, bool]:
    """Monotone primal active-set method with projected search for ``min 1/2 z^T H z - c^T z``.

    ``H`` positive definite, ``z`` feasible.  Each iteration solves exactly on the current face
    (working set ``lo``/``up`` fixed at 0/1).  If the face minimiser is feasible the method moves
    there and releases every bound whose multiplier has the wrong sign (keeping only releases
    whose step points into the box, so the step is a descent direction); otherwise it searches
    along the projected path ``P(z + a d)`` (``a`` in ``{1, 1/2, ...}`` and the first
    breakpoint, which always decreases ``f``) and adds the bounds that were hit.  ``f`` decreases
    strictly at every step and no face minimiser is visited twice, so the method terminates; it
    stops at a face minimiser whose multipliers are right to within ``thr`` (absolute, in the
    units of the halved gradient ``g = H z - c``).  Decreases are computed from the step
    (``g.D + 1/2 D.H D``), not as differences of large objective values, so they stay reliable
    on ill-conditioned problems.  Returns ``(z, face solves, converged)``.
    """
    lo = z <= 0.0
    up = z >= 1.0
    z = np.where(lo, 0.0, np.where(up, 1.0, z))
    g = H @ z - c
    pending: FloatArray | None = None  # a face minimiser already computed for (lo, up)
    m_rel = c.shape[0]
    it = 0
    while it < max_iter:
        it += 1
        x = pending if pending is not None else _face_minimiser(H, c, lo, up)
        pending = None
        if np.all((x >= 0.0) & (x <= 1.0)):
            # -- move to the face minimiser, check the multipliers ------------------------------
            z = x
            lo = z == 0.0
            up = z == 1.0
            g = H @ z - c
            viol = np.where(lo, -g, 0.0) + np.where(up, g, 0.0)
            cand = np.flatnonzero(viol > thr)
            if cand.size == 0:
                return z, it, True
            # release the m most violated bounds (m adapts: twice the last release if its face
            # minimiser was feasible, a quarter of it if other bounds blocked the step)
            if cand.size > m_rel:
                cand = cand[np.argsort(-viol[cand], kind="stable")[:m_rel]]
            rel_lo = np.zeros_like(lo)
            rel_lo[cand] = True
            rel_up = rel_lo & up
            rel_lo &= lo
            while True:  # release; keep only the releases whose step points into the box
                it += 1
                x = _face_minimiser(H, c, lo & ~rel_lo, up & ~rel_up)
                out_lo = rel_lo & (x < z)
                out_up = rel_up & (x > z)
                if not (out_lo.any() or out_up.any()):
                    break
                rel_lo &= ~out_lo
                rel_up &= ~out_up
                if not (rel_lo.any() or rel_up.any()):  # only possible through rounding
                    return z, it, _kkt_ok(z, g, thr)
            lo &= ~rel_lo
            up &= ~rel_up
            n_rel = int(rel_lo.sum() + rel_up.sum())
            if np.all((x >= 0.0) & (x <= 1.0)):
                m_rel = 2 * n_rel
                pending = x
                continue
            m_rel = max(1, n_rel // 4)
        # -- projected search along P(z + a d), d = x - z ----------------------------------------
        d = x - z
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(d > 0.0, (1.0 - z) / d, np.where(d < 0.0, -z / d, np.inf))
        a1 = float(np.min(t))
        alphas = [1.0]
        while alphas[-1] * 0.5 > a1 and len(alphas) < 12:
            alphas.append(alphas[-1] * 0.5)
        if a1 < 1.0:
            alphas.append(a1)
        A = np.asarray(alphas)
        Z = np.clip(z[None, :] + A[:, None] * d[None, :], 0.0, 1.0)
        hit = t[None, :] <= A[:, None]  # coordinates that reached their bound: set them exactly
        Z = np.where(hit & (d > 0.0)[None, :], 1.0, np.where(hit & (d < 0.0)[None, :], 0.0, Z))
        D = Z - z[None, :]
        HD = D @ H
        df = D @ g + 0.5 * np.einsum("ij,ij->i", HD, D)
        k = int(np.argmin(df))
        if not df[k] < 0.0:  # no decrease representable in floating point: stop
            return z, it, _kkt_ok(z, g, thr)
        z = Z[k]
        g = H @ z - c
        lo = z == 0.0
        up = z == 1.0
    return z, it, _kkt_ok(z, g, thr)


def _kkt_ok(z: FloatArray, g: FloatArray, thr: float) -> bool:
    """Whether the (halved) gradient ``g`` satisfies the box KKT conditions to ``thr``."""
    viol = np.abs(g)
    viol = np.where(z == 0.0, np.maximum(0.0, -g), viol)
    viol = np.where(z == 1.0, np.maximum(0.0, g), viol)
    return bool(np.max(viol) <= thr)
