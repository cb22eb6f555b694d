"""Never-empty critical sets (coverage rule), map ranking and λ = 0 at any number of images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from aevis_core.attacks.config import AttackConfig
from aevis_core.attacks.runner import run_attack
from aevis_core.datapath.extract import ExtractConfig, extract_datapath
from aevis_core.datapath.qp import kkt_residual
from aevis_core.datapath.selection import accumulate, coverage_set, rank_maps


def test_rank_maps_ties():
    assert rank_maps([1.0, 2.0, 2.0, 0.0], [0.0, 1.0, 5.0, 0.0]).tolist() == [2, 1, 0, 3]
    assert rank_maps([1.0, 1.0, 1.0]).tolist() == [0, 1, 2]


def test_coverage_set_exact_values():
    g = np.array([3.0, -1.0, 2.0, 0.5])  # G = 4.5
    order = rank_maps(g)                  # [0, 2, 3, 1]
    assert coverage_set(order, g, 0.5).tolist() == [0]         # 3 >= 2.25
    assert coverage_set(order, g, 0.8).tolist() == [0, 2]      # 3 < 3.6 <= 5
    assert coverage_set(order, g, 1.0).tolist() == [0, 2]      # 5 >= 4.5
    assert coverage_set(order, g, 0.5, base=[3]).tolist() == [0, 3]  # base kept, in ranking order
    # a ranking that starts with a negative map has to go further
    assert coverage_set([1, 3, 0, 2], g, 0.5).tolist() == [1, 3, 0]
    # a layer that does not carry the prediction (G <= 0) keeps the base, possibly empty
    neg = np.array([-1.0, 0.5])
    assert coverage_set(rank_maps(neg), neg, 0.5).tolist() == []
    assert coverage_set(rank_maps(neg), neg, 0.5, base=[0]).tolist() == [0]
    with pytest.raises(ValueError):
        coverage_set(order, g, 0.0)


def test_coverage_by_contribution_is_the_smallest_set_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(30):
        g = rng.normal(size=8) + 0.3
        if g.sum() <= 0:
            continue
        for share in (0.3, 0.6, 0.9):
            got = coverage_set(rank_maps(g), g, share)
            best = min(len(s) for r in range(1, 9) for s in itertools.combinations(range(8), r)
                       if g[list(s)].sum() >= share * g.sum())
            assert len(got) == best
            assert g[got].sum() >= share * g.sum() - 1e-12


def test_lam_zero_with_fewer_images_than_maps(toy, resnet20, resnet20_graph, cifar_demo):
    entry, g = toy
    x1 = torch.tensor([[[[1.0, -2.0], [0.25, 0.0]]]])  # one image, two maps per layer
    dp = extract_datapath(entry, g, x1, ExtractConfig(lam=0.0, normalize="none", coverage=None))
    for k, ld in dp.layers.items():
        Q, c, _, _ = accumulate(dp.q[k].astype(np.float64))
        assert kkt_residual(Q, c, 0.0, ld.z) < 1e-8, k
    x4 = resnet20.preprocess_many(cifar_demo.images[:4])
    dp = extract_datapath(resnet20, resnet20_graph, x4, ExtractConfig(lam=0.0))
    wide = [k for k, ld in dp.layers.items() if ld.n > 4]
    assert wide and all(np.isfinite(dp.layers[k].z).all() for k in wide)
    for k in wide[::8]:
        q = dp.q[k].astype(np.float64)
        Q, c, _, _ = accumulate(q)
        assert kkt_residual(Q, c, 0.0, dp.layers[k].z) < 1e-6, k


def test_one_pair_datapath_never_empty_where_the_layer_carries_the_prediction(resnet20, resnet20_graph, cifar_demo):
    x = resnet20.preprocess_many(cifar_demo.images[:1])
    y = resnet20.predict(x)[1]
    adv = run_attack(resnet20.model, x, y, AttackConfig(method="mifgsm", eps=8 / 255, steps=5))
    for img in (x, adv):
        dp = extract_datapath(resnet20, resnet20_graph, img, ExtractConfig())
        carrying = [k for k in dp.layers if float(dp.q[k].astype(np.float64).sum()) > 0]
        assert carrying
        for k in carrying:
            crit = dp.layers[k].critical
            assert crit, k
            g = dp.q[k].astype(np.float64).sum(0)
            assert g[crit].sum() >= 0.5 * g.sum() - 1e-9
        bare = extract_datapath(resnet20, resnet20_graph, img, ExtractConfig(coverage=None))
        for k in dp.layers:  # the rule only adds maps to the threshold set
            assert set(bare.layers[k].critical) <= set(dp.layers[k].critical)
