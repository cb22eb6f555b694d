"""The low-rank PDAS path agrees with the dense exact solver and satisfies KKT."""

from __future__ import annotations

import numpy as np
import pytest

from aevis_core.datapath.lowrank import solve_low_rank
from aevis_core.datapath.qp import kkt_residual, solve_box_qp
from aevis_core.datapath.selection import accumulate


@pytest.mark.parametrize("k,n,seed", [(1, 5, 0), (3, 40, 1), (10, 200, 2), (22, 640, 3), (5, 64, 4)])
@pytest.mark.parametrize("rel", [1e-4, 0.1, 10.0])
def test_low_rank_matches_dense(k, n, seed, rel):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((k, n)) * rng.uniform(0.01, 3, n)
    q[: k // 2] = np.abs(q[: k // 2])  # some images with mostly positive contributions
    Q, c, _, _ = accumulate(q)
    lam = rel * np.trace(Q) / n
    fast = solve_low_rank(q, lam)
    dense = solve_box_qp(Q, c, lam)
    assert kkt_residual(Q, c, lam, fast.z) < 1e-9
    assert np.allclose(fast.z, dense.z, atol=1e-6)
    assert np.all((fast.z >= 0) & (fast.z <= 1))


def test_low_rank_used_and_exact_on_typical_data():
    rng = np.random.default_rng(7)
    q = np.abs(rng.standard_normal((22, 1280))) * rng.exponential(1.0, 1280)
    q /= q.sum(axis=1, keepdims=True)
    Q, c, _, _ = accumulate(q)
    lam = 0.1 * np.trace(Q) / 1280
    r = solve_low_rank(q, lam)
    assert r.method == "low-rank-pdas" and r.kkt_residual < 1e-9


def test_bad_input():
    with pytest.raises(ValueError):
        solve_low_rank(np.ones(3), 0.1)
    with pytest.raises(ValueError):
        solve_low_rank(np.ones((2, 3)), 0.0)


def test_low_rank_kkt_never_above_dense():
    from aevis_core.datapath.lowrank import low_rank_kkt

    rng = np.random.default_rng(3)
    q = rng.standard_normal((6, 50))
    Q, c, _, _ = accumulate(q)
    z = np.clip(rng.uniform(-0.1, 1.1, 50), 0, 1)
    dense = kkt_residual(Q, c, 0.01, z)
    fast = low_rank_kkt(q.T, c, 0.01, z)
    assert 0 < fast <= dense + 1e-15 and fast > 0.2 * dense
