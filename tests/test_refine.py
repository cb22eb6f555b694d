"""Refinement of the QP datapath on the true Eq. 4 objective (aevis_core.datapath.refine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aevis_core.datapath.extract import ExtractConfig, extract_datapath
from aevis_core.datapath.qp import default_lambda
from aevis_core.datapath.refine import Eq4Objective, refine_layer, true_objective
from aevis_core.errors import AEVisError
from aevis_core.graph import build_graph
from aevis_core.graph.mask import MaskedModel

N_MAPS = 64
LAYER = "layer3.2.relu2"  # 64 maps > 8 images: the QP's z is far from all-ones


@pytest.fixture(scope="module")
def setup(resnet20, cifar_demo):
    g = build_graph(resnet20.model, (3, 32, 32), "r20")
    x = resnet20.preprocess_many(cifar_demo.images[::12][:8])  # 8 images, 8 classes
    cfg = ExtractConfig(score="prob", normalize="none", lam_mode="paper")
    dp = extract_datapath(resnet20, g, x, cfg, layers=[LAYER])
    return resnet20, g, x, dp


@pytest.mark.parametrize("method", ["pgd", "lbfgsb"])
def test_refine_lowers_true_objective_in_box_deterministic(setup, method):
    entry, g, x, dp = setup
    z0 = dp.layers[LAYER].z
    r = refine_layer(entry, g, x, LAYER, z0, dp.targets, steps=8, method=method)
    assert r.z.shape == (N_MAPS,) and r.z.dtype == np.float64
    assert np.all(r.z >= 0.0) and np.all(r.z <= 1.0)
    assert r.lam == pytest.approx(default_lambda(N_MAPS))
    assert r.true_objective_after < 0.9 * r.true_objective_before
    assert r.true_objective_before == pytest.approx(true_objective(entry, g, x, LAYER, z0, dp.targets), rel=1e-6)
    assert r.true_objective_after == pytest.approx(true_objective(entry, g, x, LAYER, r.z, dp.targets), rel=1e-6)
    if method == "pgd":
        assert all(b <= a for a, b in zip(r.objective_history, r.objective_history[1:], strict=False))
    again = refine_layer(entry, g, x, LAYER, z0, dp.targets, steps=8, method=method)
    assert np.array_equal(again.z, r.z) and again.objective_history == r.objective_history


def test_objective_gradient_and_taylor_link(setup):
    entry, g, x, dp = setup
    mm = MaskedModel(entry.model, g, LAYER)
    targets = torch.as_tensor(dp.targets)
    obj = Eq4Objective(mm, mm.cache(x), targets)
    # F(1) = λ n exactly: the reference outputs come from the same suffix
    assert obj.value(np.ones(N_MAPS)) == pytest.approx(default_lambda(N_MAPS) * N_MAPS, rel=1e-12)
    # directional derivative vs central differences (float32 model: loose tolerance)
    rng = np.random.default_rng(0)
    z = rng.uniform(0.3, 0.7, N_MAPS)
    d = rng.standard_normal(N_MAPS)
    f, grad = obj.value_and_grad(z)
    h = 1e-3
    fd = (obj.value(z + h * d) - obj.value(z - h * d)) / (2 * h)
    assert f == pytest.approx(obj.value(z), rel=1e-9)
    assert float(grad @ d) == pytest.approx(fd, rel=2e-2, abs=1e-4)
    # Eq. 5 is the first-order expansion of Eq. 4 at z = 1: p(1 - h e_j) - p(1) ≈ -h q_kj
    q = dp.q[LAYER].astype(np.float64)
    cache = mm.cache(x)
    with torch.no_grad():
        p1 = torch.softmax(mm.logits(cache, torch.ones(N_MAPS)), 1).gather(1, targets.view(-1, 1)).squeeze(1)
        for j in np.argsort(-np.abs(q).sum(0))[:3]:
            m = torch.ones(N_MAPS)
            m[int(j)] = 1.0 - h
            pj = torch.softmax(mm.logits(cache, m), 1).gather(1, targets.view(-1, 1)).squeeze(1)
            assert np.allclose((pj - p1).double().numpy() / h, -q[:, j], rtol=0.05, atol=2e-3 * np.abs(q).max())


def test_refine_bad_input(setup):
    entry, g, x, dp = setup
    with pytest.raises(AEVisError):
        refine_layer(entry, g, x, LAYER, np.ones(5))
    with pytest.raises(AEVisError):
        refine_layer(entry, g, x, LAYER, np.ones(N_MAPS), method="adam")
    with pytest.raises(AEVisError):
        refine_layer(entry, g, x, LAYER, np.ones(N_MAPS), targets=np.zeros(3, dtype=int))
    # a start outside the box is clipped; z = 1 is already near-optimal (F = λ n), never made worse
    r = refine_layer(entry, g, x, LAYER, np.full(N_MAPS, 2.0), dp.targets, steps=2)
    assert r.true_objective_before == pytest.approx(default_lambda(N_MAPS) * N_MAPS, rel=1e-9)
    assert r.true_objective_after <= r.true_objective_before
    assert np.all((r.z >= 0) & (r.z <= 1))
