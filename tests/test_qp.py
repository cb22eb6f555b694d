"""Tests of the datapath box QP (aevis_core.datapath.qp): exactness, KKT, subsets, accumulation."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy.optimize import Bounds, lsq_linear, minimize

from aevis_core.datapath import (
    QPAccumulator,
    QPResult,
    accumulate,
    brute_force_subset,
    critical_set,
    default_lambda,
    kkt_residual,
    objective,
    solve_box_qp,
)

# ------------------------------------------------------------------------------------------------
# problem generators and independent reference solvers
# ------------------------------------------------------------------------------------------------


def realistic_q(rng: np.random.Generator, K: int, n: int, scale: float = 1.0) -> np.ndarray:
    """grad x act-like contributions: per-map magnitudes spread over decades, mixed signs."""
    act = np.maximum(rng.standard_normal((K, n)) + rng.standard_normal(n), 0.0)
    grad = 0.3 * rng.standard_normal((K, n)) + 0.2 * rng.standard_normal(n)
    return scale * act * grad * rng.exponential(1.0, n)


def generic_problem(rng: np.random.Generator, n: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Q = A^T A (rank <= K) and an arbitrary c (not necessarily in range(Q))."""
    A = rng.standard_normal((K, n))
    return A.T @ A, rng.standard_normal(n) * np.sqrt(K)


def enumerate_active_sets(
    Q: np.ndarray, c: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact solution by enumerating all 3^n partitions {0, free, 1} (small n only).

    Returns (z_kkt, z_min): the unique partition whose face minimiser is feasible with
    right-signed multipliers, and the best primal-feasible face minimiser over all partitions
    (the global optimum is the minimiser of its own face, so both must coincide).
    """
    n = c.shape[0]
    H = Q + lam * np.eye(n)
    scale = np.abs(H).sum(1).max() + np.abs(c).max()
    kkt_points = []
    best_val, best_z = np.inf, None
    for states in itertools.product((0, 1, 2), repeat=n):
        st = np.array(states)
        z = (st == 2).astype(float)
        F = np.flatnonzero(st == 1)
        if F.size:
            rhs = c[F] - H[np.ix_(F, np.flatnonzero(st == 2))].sum(axis=1)
            z[F] = np.linalg.solve(H[np.ix_(F, F)], rhs)
            if np.any(z[F] < -1e-12) or np.any(z[F] > 1 + 1e-12):
                continue
            z = np.clip(z, 0.0, 1.0)
        val = z @ H @ z - 2 * c @ z
        if val < best_val:
            best_val, best_z = val, z
        g = H @ z - c
        if np.all(g[st == 0] >= -1e-10 * scale) and np.all(g[st == 2] <= 1e-10 * scale):
            kkt_points.append(z)
    assert len(kkt_points) >= 1
    for other in kkt_points[1:]:  # degenerate partitions describe the same point
        np.testing.assert_allclose(other, kkt_points[0], atol=1e-8)
    assert best_z is not None
    return kkt_points[0], best_z


def bvls_reference(Q: np.ndarray, c: np.ndarray, lam: float) -> np.ndarray:
    """Independent exact solver: bounded least squares ||A z - b||^2 with A^T A = Q + lam I."""
    w, V = np.linalg.eigh(Q + lam * np.eye(c.shape[0]))
    A = np.sqrt(w)[:, None] * V.T
    b = (V.T @ c) / np.sqrt(w)
    res = lsq_linear(A, b, bounds=(0.0, 1.0), method="bvls", tol=1e-14, lsmr_tol=None)
    return np.asarray(res.x)


def rank_ok(z: np.ndarray, key: np.ndarray) -> bool:
    """z is a non-decreasing function of key: key_i > key_j implies z_i >= z_j."""
    order = np.argsort(key, kind="stable")
    return bool(np.all(np.diff(z[order]) >= -1e-12))


# ------------------------------------------------------------------------------------------------
# exactness against independent solvers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_matches_active_set_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))
    if seed % 3 == 0:  # accumulated data: c = Q @ 1
        q = realistic_q(rng, int(rng.integers(1, 6)), n)
        Q, c, _, _ = accumulate(q)
        lam = float(rng.choice([default_lambda(n), 0.05 * np.trace(Q) / n + 1e-3]))
    else:  # generic: arbitrary c, often many bounds active
        Q, c = generic_problem(rng, n, int(rng.integers(1, 2 * n + 2)))
        lam = float(rng.uniform(0.05, 2.0))
    r = solve_box_qp(Q, c, lam)
    z_kkt, z_min = enumerate_active_sets(Q, c, lam)
    np.testing.assert_allclose(z_kkt, z_min, atol=1e-8)
    np.testing.assert_allclose(r.z, z_kkt, atol=1e-8)
    assert r.objective <= objective(Q, c, lam, z_kkt) + 1e-12 * (1 + abs(r.objective))


def test_matches_enumeration_n9() -> None:
    rng = np.random.default_rng(99)
    Q, c = generic_problem(rng, 9, 5)
    lam = 0.3
    z_kkt, _ = enumerate_active_sets(Q, c, lam)
    np.testing.assert_allclose(solve_box_qp(Q, c, lam).z, z_kkt, atol=1e-8)


@pytest.mark.parametrize("kind", ["accumulated", "generic"])
def test_matches_bvls_and_trust_constr_n50(kind: str) -> None:
    rng = np.random.default_rng(7 if kind == "accumulated" else 8)
    n = 50
    if kind == "accumulated":
        Q, c, _, _ = accumulate(realistic_q(rng, 30, n))
        lam = 0.1 * np.trace(Q) / n
    else:
        Q, c = generic_problem(rng, n, 40)
        lam = 0.5
    r = solve_box_qp(Q, c, lam)
    assert r.converged and r.kkt_residual <= 1e-12
    assert 0 < np.sum((r.z > 0) & (r.z < 1)) < n  # a genuinely constrained instance

    # exact active-set reference (scipy BVLS on the Cholesky-free eigen square root)
    z_ref = bvls_reference(Q, c, lam)
    np.testing.assert_allclose(r.z, z_ref, atol=1e-8)

    # interior-point reference with tight tolerances
    H = Q + lam * np.eye(n)
    tc = minimize(
        lambda z: z @ H @ z - 2 * c @ z,
        np.full(n, 0.5),
        jac=lambda z: 2 * (H @ z - c),
        hess=lambda z: 2 * H,
        method="trust-constr",
        bounds=Bounds(np.zeros(n), np.ones(n)),
        options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000},
    )
    f_tc = objective(Q, c, lam, np.clip(tc.x, 0, 1))
    assert abs(r.objective - f_tc) <= 1e-7 * abs(f_tc)
    assert r.objective <= f_tc + 1e-12 * abs(f_tc)


@pytest.mark.parametrize("K", [5, 30, 200])
def test_matches_bvls_default_lambda(K: int) -> None:
    """The paper's lambda = 0.1/n^2 (tiny against Q: ill-conditioned) on accumulated data."""
    rng = np.random.default_rng(K)
    n = 80
    Q, c, _, _ = accumulate(realistic_q(rng, K, n))
    lam = default_lambda(n)
    r = solve_box_qp(Q, c)
    z_ref = bvls_reference(Q, c, lam)
    assert r.kkt_residual <= 1e-13
    assert r.objective <= objective(Q, c, lam, z_ref) + 1e-13 * abs(r.objective)
    # BVLS on the eigen square root (condition number ~ sqrt(1/lambda~) ~ 1e4) is itself not
    # always accurate here; where it is (small KKT residual) the solutions agree
    if kkt_residual(Q, c, lam, z_ref) <= 1e-11:
        np.testing.assert_allclose(r.z, z_ref, atol=1e-6)
    else:
        assert kkt_residual(Q, c, lam, z_ref) > 1e3 * r.kkt_residual


def test_lbfgsb_default_is_not_as_good() -> None:
    """Sanity of the reference claim: L-BFGS-B with default tolerances stops above the optimum."""
    rng = np.random.default_rng(3)
    n = 64
    Q, c, _, _ = accumulate(realistic_q(rng, 20, n))
    lam = default_lambda(n)
    r = solve_box_qp(Q, c, lam)
    H = Q + lam * np.eye(n)
    lb = minimize(lambda z: (z @ H @ z - 2 * c @ z, 2 * (H @ z - c)), np.full(n, 0.5),
                  jac=True, method="L-BFGS-B", bounds=[(0, 1)] * n)
    assert objective(Q, c, lam, lb.x) >= r.objective - 1e-12 * abs(r.objective)
    assert kkt_residual(Q, c, lam, lb.x) > 1e3 * max(r.kkt_residual, 1e-16)


# ------------------------------------------------------------------------------------------------
# KKT residual on random, degenerate and badly scaled problems
# ------------------------------------------------------------------------------------------------


def _check_kkt(Q: np.ndarray, c: np.ndarray, lam: float | None = None) -> QPResult:
    r = solve_box_qp(Q, c, lam)
    lam_v = default_lambda(c.shape[0]) if lam is None else lam
    assert r.z.shape == c.shape and r.z.dtype == np.float64
    assert np.all((r.z >= 0.0) & (r.z <= 1.0))
    assert r.converged
    assert r.kkt_residual <= 1e-8
    # also w.r.t. the requested lambda (the solver may raise a numerically lost lambda)
    assert kkt_residual(Q, c, lam_v, r.z) <= 1e-8
    assert r.lam >= r.lam_requested == pytest.approx(lam_v)
    return r


@pytest.mark.parametrize("n", [1, 5, 64, 512])
@pytest.mark.parametrize("kind", ["accumulated", "generic"])
def test_kkt_random(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    if kind == "accumulated":
        Q, c, _, _ = accumulate(realistic_q(rng, max(2, n // 3), n))
        r = _check_kkt(Q, c)
    else:
        Q, c = generic_problem(rng, n, n // 2 + 1)
        r = _check_kkt(Q, c, 0.1 * n)
    assert r.kkt_residual <= 1e-13  # exact up to rounding, not just below the tolerance


@pytest.mark.parametrize("n", [1, 64, 512])
def test_kkt_rank_one(n: int) -> None:
    rng = np.random.default_rng(10 + n)
    Q, c, _, _ = accumulate(realistic_q(rng, 1, n))  # a single image: Q = q q^T
    _check_kkt(Q, c)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_zero_q(n: int) -> None:
    r = _check_kkt(np.zeros((n, n)), np.zeros(n))
    np.testing.assert_array_equal(r.z, np.zeros(n))  # only the ridge is left: z = 0
    assert r.objective == 0.0


def test_zero_q_and_zero_lambda() -> None:
    r = solve_box_qp(np.zeros((4, 4)), np.zeros(4), 0.0)
    np.testing.assert_array_equal(r.z, np.zeros(4))
    assert r.kkt_residual == 0.0


def test_ridge_only_is_clipped_c_over_lambda() -> None:
    c = np.array([-1.0, 0.0, 0.25, 0.5, 3.0])
    r = solve_box_qp(np.zeros((5, 5)), c, 1.0)
    np.testing.assert_allclose(r.z, np.clip(c, 0, 1), atol=1e-15)


@pytest.mark.parametrize("scale", [1e-9, 1e-6, 1e4, 1e6])
@pytest.mark.parametrize("K", [1, 40])
def test_badly_scaled(scale: float, K: int) -> None:
    rng = np.random.default_rng(int(np.log10(scale)) + 20 + K)
    n = 64
    q = realistic_q(rng, K, n, scale=scale)
    Q, c, _, _ = accumulate(q)
    r = _check_kkt(Q, c)
    if scale <= 1e-6:
        # Q ~ scale^2 is negligible against the absolute lambda = 0.1/n^2: z is shrunk towards
        # 0 (on free coordinates lam z_j = c_j - (Q z)_j <= |c_j| + ||Q||_inf)
        bound = (np.abs(c).max() + np.abs(Q).sum(1).max()) / r.lam
        assert bound < 1e-3 and np.max(r.z) <= bound
    else:
        # lambda is negligible: the fit is almost exact (z ~ 1 reproduces every s_k)
        loss = objective(Q, c, r.lam, r.z) + float(np.sum(q.sum(1) ** 2))
        assert loss <= 1e-6 * float(np.sum(q.sum(1) ** 2))


def test_huge_scale_differences_between_maps() -> None:
    """Per-map magnitudes from 1e-6 to 1e3 (Q entries ~1e-12 .. 1e6) in one layer."""
    rng = np.random.default_rng(5)
    n = 128
    q = realistic_q(rng, 30, n) * np.logspace(-6, 3, n)[rng.permutation(n)]
    Q, c, _, _ = accumulate(q)
    r = _check_kkt(Q, c)
    assert r.kkt_residual <= 1e-13
    # scale invariance: multiplying (Q, c, lambda) by a common factor leaves z unchanged
    r2 = solve_box_qp(Q * 1e8, c * 1e8, r.lam_requested * 1e8)
    np.testing.assert_allclose(r2.z, r.z, atol=1e-6)


def test_lambda_floor_is_reported() -> None:
    """A lambda far below rounding level of Q is raised to the floor, and reported."""
    rng = np.random.default_rng(11)
    n = 40
    Q, c, _, _ = accumulate(realistic_q(rng, 10, n, scale=1e4))
    r = solve_box_qp(Q, c, 1e-30)
    assert r.lam_requested == 1e-30
    assert r.lam > r.lam_requested
    assert r.lam <= 1e3 * n * np.finfo(float).eps * np.max(np.diag(Q))
    assert kkt_residual(Q, c, 1e-30, r.z) <= 1e-12


def test_tolerance_does_not_change_the_answer() -> None:
    """The solver always identifies the optimal active set; tol only decides `converged`."""
    rng = np.random.default_rng(12)
    n = 200
    Q, c, _, _ = accumulate(realistic_q(rng, 50, n))
    r1 = solve_box_qp(Q, c, tol=1e-6)
    r2 = solve_box_qp(Q, c, tol=1e-15)
    np.testing.assert_array_equal(r1.z, r2.z)


def test_warm_start_gives_same_optimum() -> None:
    rng = np.random.default_rng(13)
    n = 60
    Q, c, _, _ = accumulate(realistic_q(rng, 25, n))
    r = solve_box_qp(Q, c)
    for z0 in (np.zeros(n), np.ones(n), rng.uniform(-1, 2, n)):
        rw = solve_box_qp(Q, c, z0=z0)
        assert rw.method == "active-set" and rw.kkt_residual <= 1e-13
        np.testing.assert_allclose(rw.z, r.z, atol=1e-7)


def test_input_validation() -> None:
    with pytest.raises(ValueError):
        solve_box_qp(np.eye(3), np.zeros(2))
    with pytest.raises(ValueError):
        solve_box_qp(np.eye(2), np.zeros(2), -1.0)
    with pytest.raises(ValueError):
        solve_box_qp(np.array([[np.nan, 0], [0, 1]]), np.zeros(2))
    with pytest.raises(ValueError, match="positive"):
        solve_box_qp(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([3.0, -3.0]))  # indefinite
    with pytest.raises(ValueError):
        default_lambda(0)
    r = solve_box_qp(np.zeros((0, 0)), np.zeros(0))
    assert r.z.shape == (0,)


def test_no_warning_on_hard_generic_problem() -> None:
    """c outside range(Q) with a tiny lambda (LP-like): slower, but still exact and silent."""
    rng = np.random.default_rng(14)
    Q, c = generic_problem(rng, 150, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = solve_box_qp(Q, c)
    assert r.kkt_residual <= 1e-13


# ------------------------------------------------------------------------------------------------
# objective / residual definitions
# ------------------------------------------------------------------------------------------------


def test_objective_is_least_squares_up_to_constant() -> None:
    rng = np.random.default_rng(15)
    q = realistic_q(rng, 9, 6)
    Q, c, sum_s2, K = accumulate(q)
    assert K == 9
    s = q.sum(1)
    np.testing.assert_allclose(c, Q @ np.ones(6), rtol=1e-12, atol=1e-12)  # c = Q 1
    lam = 0.07
    for z in (rng.uniform(0, 1, 6), np.zeros(6), np.ones(6)):
        ls = float(np.sum((s - q @ z) ** 2) + lam * z @ z)
        assert objective(Q, c, lam, z) + sum_s2 == pytest.approx(ls, rel=1e-12, abs=1e-12)


def test_kkt_residual_definition() -> None:
    Q = np.diag([1.0, 1.0, 1.0])
    c = np.array([-1.0, 0.5, 2.0])
    lam = 0.0
    assert kkt_residual(Q, c, lam, [0.0, 0.5, 1.0]) == 0.0  # the optimum
    # z_0 = 0 with g_0 = 2 > 0: fine; z_2 = 1 with g_2 = -2 < 0: fine; z_1 free with g_1 = 0.2
    scale = 2 * (1.0 + 0.0 + 2.0)
    assert kkt_residual(Q, c, lam, [0.0, 0.6, 1.0]) == pytest.approx(0.2 / scale)
    # wrong-side multiplier at a bound
    assert kkt_residual(Q, c, lam, [0.0, 0.5, 0.0]) == pytest.approx(4.0 / scale)
    # infeasible point: bound violation added
    assert kkt_residual(Q, c, lam, [0.0, 0.5, 1.5]) == pytest.approx(1.0 / scale + 0.5)
    # invariant to a common rescaling
    assert kkt_residual(7 * Q, 7 * c, lam, [0.0, 0.6, 1.0]) == pytest.approx(0.2 / scale)


def test_default_lambda() -> None:
    assert default_lambda(1) == pytest.approx(0.1)
    assert default_lambda(1280) == pytest.approx(0.1 / 1280**2)


# ------------------------------------------------------------------------------------------------
# binary subsets
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_rounding_recovers_brute_force_subset(seed: int) -> None:
    """Toy layers where a fixed set of maps carries the score: the QP optimum is ~binary."""
    rng = np.random.default_rng(100 + seed)
    n, K = int(rng.integers(5, 11)), 25
    important = rng.random(n) < 0.5
    important[rng.integers(n)] = True
    base = rng.uniform(1.0, 3.0, n)
    # important maps: consistent positive contributions; the others: zero-mean noise whose sum
    # over maps is tiny, so including them only costs ridge
    q = np.where(important, base * (1 + 0.02 * rng.standard_normal((K, n))), 0.0)
    q += np.where(important, 0.0, 0.01 * rng.standard_normal((K, n)))
    lam = 0.5
    Q, c, _, _ = accumulate(q)
    r = solve_box_qp(Q, c, lam)
    best = brute_force_subset(q, lam)
    np.testing.assert_array_equal(np.round(r.z), best)
    np.testing.assert_array_equal(best.astype(bool), important)
    assert r.objective <= objective(Q, c, lam, best) + 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_qp_is_a_lower_bound_on_best_subset(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(1, 12))
    q = realistic_q(rng, int(rng.integers(1, 30)), n)
    lam = float(rng.choice([default_lambda(n), 0.1, 1.0]))
    Q, c, _, _ = accumulate(q)
    r = solve_box_qp(Q, c, lam)
    best = brute_force_subset(q, lam)
    assert set(np.unique(best)) <= {0.0, 1.0}
    f_best = objective(Q, c, lam, best)
    assert r.objective <= f_best + 1e-10 * (1 + abs(f_best))
    # and the subset really is the best binary vector
    for z in itertools.islice(itertools.product((0.0, 1.0), repeat=n), 300):
        assert f_best <= objective(Q, c, lam, np.array(z)) + 1e-10 * (1 + abs(f_best))


def test_brute_force_limits() -> None:
    with pytest.raises(ValueError):
        brute_force_subset(np.ones((2, 17)))


# ------------------------------------------------------------------------------------------------
# one image: z ranks the maps by signed grad x act
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_image_ranks_by_signed_contribution(sign: float) -> None:
    """K = 1: z_j = clip(q_j r / lam, 0, 1) with r = s - q.z of the sign of s.

    With s > 0 the maps with the largest q_j get the largest z (the ones that push the class
    score up, taken greedily until they sum to s); with s < 0 (the image scores *against* the
    class) the QP picks the maps with the most negative q_j, i.e. the ones pushing it down.
    """
    rng = np.random.default_rng(42)
    n = 40
    q = rng.standard_normal(n) * rng.exponential(1.0, n)
    q = q + sign * (abs(q.sum()) + 1.0) / n * 3  # make s = sum(q) have the requested sign
    s = q.sum()
    assert np.sign(s) == sign
    for lam in (default_lambda(n), 0.5, 20.0):
        r = solve_box_qp(*accumulate(q)[:2], lam)
        assert rank_ok(r.z, sign * q)
        assert np.all(r.z[sign * q <= 0] == 0.0)  # maps on the other side are never picked
        resid = s - q @ r.z
        assert np.sign(resid) == sign
        np.testing.assert_allclose(r.z, np.clip(q * resid / lam, 0, 1), atol=1e-6)
        if lam == 20.0:  # unsaturated: the ranking of z is the ranking of sign * q
            assert np.max(r.z) < 1.0
            np.testing.assert_array_equal(critical_set(r.z, top_k=5), np.argsort(-sign * q)[:5])
    # with the paper's tiny lambda the selected maps (greedily, by signed q) roughly sum to s
    r = solve_box_qp(*accumulate(q)[:2])
    assert q @ r.z == pytest.approx(s, rel=1e-3)
    picked = critical_set(r.z, threshold=0.5)
    assert np.min(sign * q[picked]) >= np.max(sign * q[r.z <= 0.5]) - 1e-12


# ------------------------------------------------------------------------------------------------
# accumulation
# ------------------------------------------------------------------------------------------------


def test_accumulator_batch_invariance() -> None:
    rng = np.random.default_rng(17)
    n, K = 32, 57
    q = realistic_q(rng, K, n)
    Q, c, sum_s2, k = accumulate(q)

    one = QPAccumulator()
    for row in q:  # one image at a time, as (n,)
        one.add(row)
    batches = QPAccumulator(n)
    for start in range(0, K, 10):
        batches.add(q[start : start + 10])
    halves = QPAccumulator().add(q[:20]).merge(QPAccumulator().add(q[20:]))

    for acc in (one, batches, halves):
        assert acc.K == k == K
        assert acc.Q is not None and acc.c is not None
        np.testing.assert_allclose(acc.Q, Q, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(acc.c, c, rtol=1e-12, atol=1e-12)
        assert acc.sum_s2 == pytest.approx(sum_s2, rel=1e-12)
        np.testing.assert_allclose(acc.solve().z, solve_box_qp(Q, c).z, atol=1e-8)
    z = one.solve().z
    lam = default_lambda(n)
    assert one.loss(z) == pytest.approx(float(np.sum((q.sum(1) - q @ z) ** 2) + lam * z @ z))


def test_accumulator_float64_and_errors() -> None:
    q32 = np.random.default_rng(18).standard_normal((5, 8)).astype(np.float32)
    acc = QPAccumulator().add(q32)
    assert acc.Q is not None and acc.Q.dtype == np.float64
    with pytest.raises(ValueError):
        acc.add(np.ones((2, 9)))
    with pytest.raises(ValueError):
        QPAccumulator().solve()


# ------------------------------------------------------------------------------------------------
# critical sets
# ------------------------------------------------------------------------------------------------


def test_critical_set() -> None:
    z = np.array([0.2, 0.9, 0.5, 0.9, 1.0, 0.0, 0.51])
    np.testing.assert_array_equal(critical_set(z), [4, 1, 3, 6])  # strict: 0.5 not included
    np.testing.assert_array_equal(critical_set(z, threshold=0.0), [4, 1, 3, 6, 2, 0])
    np.testing.assert_array_equal(critical_set(z, top_k=3), [4, 1, 3])  # tie 1/3 by index
    np.testing.assert_array_equal(critical_set(z, top_k=0), np.zeros(0, dtype=int))
    assert len(critical_set(z, top_k=100)) == 7
    np.testing.assert_array_equal(critical_set(z, threshold=None), [4, 1, 3, 6, 2, 0, 5])
    assert critical_set(z).dtype == np.intp
