"""Calibrated diverging point: rank p-values vs brute force, controls' energy, the rule on synthetic
similarities, and calibration (no attack) and detection (MI-FGSM) on ResNet-20."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from aevis_core.datapath.control_similarity import compare_with_noise_control
from aevis_core.datapath.controls import CONTROLS, control_draws, rms
from aevis_core.datapath.diverge import DivergenceConfig, diverging_point, find_diverging_point
from aevis_core.datapath.rank_test import (
    all_rank_p_values,
    detectable_shift,
    effect_size,
    fisher_log_p,
    gate_p_value,
    rank_p_values,
)
from aevis_core.datapath.similarity import activation_similarity
from aevis_core.errors import AEVisError

ALPHA = 0.05


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- rank test

def test_rank_p_values_match_brute_force():
    rng = np.random.default_rng(0)
    s_adv = rng.integers(0, 6, size=(4, 7)).astype(float)            # small integers: many ties
    s_ctrl = rng.integers(0, 6, size=(4, 7, 9)).astype(float)
    p = rank_p_values(s_adv, s_ctrl)
    for i in range(4):
        for j in range(7):
            count = sum(1 for r in range(9) if s_ctrl[i, j, r] <= s_adv[i, j])
            assert p[i, j] == (1 + count) / 10
    both = all_rank_p_values(np.concatenate([s_adv[..., None], s_ctrl], axis=-1))
    assert np.array_equal(both[..., 0], p)
    for r in range(10):                                               # every draw against the others
        s = np.concatenate([s_adv[..., None], s_ctrl], axis=-1)
        others = np.delete(s, r, axis=-1)
        assert np.array_equal(both[..., r], (1 + (others <= s[..., r:r + 1]).sum(-1)) / 10)
    with pytest.raises(AEVisError):
        rank_p_values(np.zeros(3), np.zeros((4, 5)))


def test_fisher_and_gate():
    p = np.array([[0.5, 0.1], [0.2, 0.3], [0.025, 1.0]])               # 3 images, 2 draws
    f = -2 * np.log(p).sum(0)
    assert np.allclose(np.exp(fisher_log_p(p)), sps.chi2.sf(f, 6))
    assert np.exp(fisher_log_p(p[:1])) == pytest.approx(p[0])         # n = 1: the p-value itself
    lp = np.log(np.array([[0.01, 0.5, 0.2, 0.01], [0.02, 0.9, 0.01, 0.02]]))   # (L=2, R+1=4)
    assert gate_p_value(lp) == pytest.approx(2 / 4)                    # draw 3 ties the adversarial
    assert gate_p_value(lp[:, :3]) == pytest.approx(1 / 3)


def test_effect_size_exact():
    c = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])                  # control means 2, 4; sd 1, 2
    a = np.array([1.0, 1.0])
    mean, lo, hi, z = effect_size(a, c)
    assert mean == pytest.approx(2.0) and z == pytest.approx((1 / 1 + 3 / 2) / 2)
    half = sps.t.ppf(0.975, 1) * math.sqrt(2.0) / math.sqrt(2)         # sd(D) = sd([1, 3])
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    mean, lo, hi, z = effect_size(a[:1], c[:1])                       # one image: Monte Carlo error only
    assert mean == 1.0 and hi - lo == pytest.approx(2 * 1.959964 * 1 / math.sqrt(3), rel=1e-5)


def test_detectable_shift_floor_monotone_and_power():
    assert detectable_shift(1, 9, ALPHA) == math.inf                  # smallest p = 1/10 > α
    assert detectable_shift(1, 19, ALPHA) < math.inf                  # 1/20 = α is attainable
    d = [detectable_shift(n, 39, ALPHA) for n in (1, 5, 10, 32)]
    assert all(a > b for a, b in zip(d, d[1:], strict=False))
    rng = np.random.default_rng(1)
    for n in (1, 5):                                                  # simulated power at δ is 0.8
        delta = detectable_shift(n, 39, ALPHA)
        ctrl = rng.normal(0, 1, (4000, n, 39))
        adv = rng.normal(-delta, 1, (4000, n))
        power = np.mean(fisher_log_p(rank_p_values(adv, ctrl), axis=1) <= math.log(ALPHA) + 1e-9)
        assert power == pytest.approx(0.8, abs=0.03), n


# ---------------------------------------------------------------------------------------------- rule

def synthetic(drops: list[float], n: int, draws: int = 39, sd: float = 0.01, seed: int = 0):
    """Layers l0.. with control draws 0.9 + N(0, sd) and the adversarial lowered by drops[l]."""
    rng = np.random.default_rng(seed)
    ids = [f"l{i}" for i in range(len(drops))]
    ctrl = {k: 0.9 + rng.normal(0, sd, (n, draws)) for k in ids}
    adv = {k: 0.9 + rng.normal(0, sd, n) - d for k, d in zip(ids, drops, strict=True)}
    return ids, adv, ctrl


@pytest.mark.parametrize("n", [1, 5])
def test_rule_fires_with_one_pair_at_the_persistent_drop(n):
    ids, adv, ctrl = synthetic([0.0] * 5 + [0.2] * 5, n)
    d = find_diverging_point(adv, ctrl, ids)
    assert d.layer == "l5" and d.index == 5 and d.run == ids[5:] and d.gate_p == pytest.approx(1 / 40)
    ev = d.evidence["l5"]
    assert ev.p_value == pytest.approx(sps.chi2.sf(2 * n * math.log(40), 2 * n)) and ev.exceed == n
    assert ev.effect == pytest.approx(0.2, abs=0.03) and ev.ci_low < ev.effect < ev.ci_high
    assert ev.detectable == pytest.approx(detectable_shift(n, 39, ALPHA) * 0.01, rel=0.25)
    assert not d.evidence["l4"].below
    out = json.loads(json.dumps(d.to_dict(per_image=True), allow_nan=False))
    assert out["layer"] == "l5" and len(out["evidence"][5]["p_images"]) == n


def test_rule_persistence_min_effect_and_gate():
    ids, adv, ctrl = synthetic([0, 0, 0, 0.3, 0, 0, 0.3, 0.3, 0, 0], 5)   # 1- and 2-layer dips
    d = find_diverging_point(adv, ctrl, ids)
    assert d.layer is None and d.first_below == "l3"
    assert find_diverging_point(adv, ctrl, ids, DivergenceConfig(persist=1)).layer == "l6"
    ids, adv, ctrl = synthetic([0.02] * 10, 5)                        # significant but small
    assert find_diverging_point(adv, ctrl, ids).layer is None
    assert find_diverging_point(adv, ctrl, ids, DivergenceConfig(min_effect=0.0)).layer == "l0"
    ids, adv, ctrl = synthetic([0.0] * 28 + [0.3] * 3, 1)             # a late run: the global test
    d = find_diverging_point(adv, ctrl, ids)                          # over 31 layers may not reject
    assert d.candidate == "l28" and (d.layer == "l28") == (d.gate_p <= ALPHA)
    assert find_diverging_point(adv, ctrl, ids, DivergenceConfig(gate=False)).layer == "l28"
    with pytest.raises(AEVisError):
        DivergenceConfig(alpha=1.5).validate()


# ---------------------------------------------------------------------------------------------- controls

@pytest.mark.parametrize("kind", ["shuffled", "signs"])
def test_energy_matched_controls_have_the_perturbation_energy(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 8, 8, generator=g)
    x[0, :4] = 0.0                                                    # saturated pixels: the box bites
    x[1, :4] = 1.0
    delta = (torch.randint(-8, 9, (3, 8, 8), generator=g) / 255.0)
    xa = (x + delta).clamp(0, 1)
    eps = float((xa - x).abs().max())
    c = control_draws(x, xa, image_index=4, draws=range(6), kind=kind)
    assert c.shape == (6, 3, 8, 8) and float(c.min()) >= 0 and float(c.max()) <= 1
    ref = rms(x[None], xa[None])[0]
    got = rms(x.expand(6, -1, -1, -1), c)
    assert np.allclose(got, ref, atol=1e-6, rtol=0)
    assert float((c - x).abs().max()) <= eps + 1e-6
    if kind == "shuffled":                                            # per channel: same |values|
        for j in range(6):
            for ch in range(3):
                a = torch.sort((c[j, ch] - x[ch]).abs().flatten()).values
                b = torch.sort((xa[ch] - x[ch]).abs().flatten()).values
                assert torch.allclose(a, b, atol=1e-6)
    again = control_draws(x, xa, image_index=4, draws=range(3, 5), kind=kind)
    assert torch.equal(again, c[3:5])                                 # seeded per (seed, image, draw)
    assert not torch.equal(c[0], c[1])


def test_uniform_and_sign_controls_and_errors():
    x = torch.full((3, 4, 4), 0.5)
    xa = x + 2 / 255
    u = control_draws(x, xa, 0, range(4), "uniform", eps=8 / 255)
    s = control_draws(x, xa, 0, range(4), "sign", eps=8 / 255)
    assert float((u - x).abs().max()) <= 8 / 255 + 1e-6
    assert torch.allclose((s - x).abs(), torch.full_like(s, 8 / 255), atol=1e-6)
    assert set(CONTROLS) == {"shuffled", "signs", "uniform", "sign"}
    with pytest.raises(AEVisError):
        control_draws(x, xa, 0, range(1), "gauss")
    with pytest.raises(AEVisError):
        control_draws(x, xa, 0, range(1), "uniform", eps=0.7)


# ---------------------------------------------------------------------------------------------- real model

@pytest.fixture(scope="module")
def r20_cats(resnet20, resnet20_graph, cifar_demo):
    """10 demo cats and their MI-FGSM 8/255 twins, both 8-bit as the pool stores them."""
    from aevis_core.attacks import AttackConfig, quantise, run_attack

    idx = [i for i in range(len(cifar_demo)) if cifar_demo.label_name(i) == "cat"][:10]
    x = resnet20.preprocess_many([cifar_demo.images[i] for i in idx])
    x = (x * 255).round() / 255
    adv = run_attack(resnet20.model, x, torch.tensor([cifar_demo.labels[i] for i in idx]),
                     AttackConfig(method="mifgsm", eps=8 / 255))
    return resnet20, resnet20_graph, x, quantise(adv, x, 8 / 255)[0].float() / 255


def test_comparison_batching_and_control_rms(r20_cats):
    entry, g, x, xa = r20_cats
    layers = ["conv1", "layer2.0.add", "linear"]
    a = compare_with_noise_control(entry, g, x[:3], xa[:3], layers=layers, draws=4, batch_size=5)
    b = compare_with_noise_control(entry, g, x[:3], xa[:3], layers=layers, draws=4, batch_size=2)
    for k in layers:
        assert a.sim_control[k].shape == (3, 4) and np.allclose(a.sim_control[k], b.sim_control[k], atol=1e-5)
    for i in range(3):                                                # draw r of image i, recomputed directly
        ctrl = control_draws(x[i], xa[i], i, range(4))
        direct = activation_similarity(entry, g, x[i:i + 1].expand(4, -1, -1, -1), ctrl, layers)
        for k in layers:
            assert np.allclose(a.sim_control[k][i], direct[k], atol=1e-5), (i, k)
    assert np.allclose(a.sim_adv["linear"], activation_similarity(entry, g, x[:3], xa[:3], ["linear"])["linear"],
                       atol=1e-5)
    assert np.allclose(a.rms_control, a.rms_adv, atol=1e-6)            # shuffled: the same energy
    u = compare_with_noise_control(entry, g, x[:3], xa[:3], 8 / 255, layers, control="uniform", draws=4)
    assert np.allclose(255 * u.rms_control, 8 / math.sqrt(3), rtol=0.05)
    d = diverging_point(u)
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["control"]["kind"] == "uniform"
    assert out["control"]["rms_adv_255"] == pytest.approx(255 * float(np.mean(u.rms_adv)), rel=1e-3)


@pytest.mark.slow
def test_no_attack_pairs_fire_at_most_alpha(r20_cats):
    """Pairs (normal, normal + a fresh shuffled draw), R = 39 shuffled controls of that pair: the
    rule fires in ≤ α of 200 repetitions for 1-pair and 5-pair sets; its statistical part alone
    (no effect threshold, the gate exact by exchangeability) rejects at a rate consistent with α."""
    entry, g, x, xa = r20_cats
    x, xa = x[:5], xa[:5]
    fresh = torch.cat([control_draws(x[i], xa[i], i, range(10_000, 10_001)) for i in range(5)])
    pool = compare_with_noise_control(entry, g, x, fresh, draws=119)  # 120 exchangeable draws per image
    sims = {k: np.concatenate([pool.sim_adv[k][:, None], pool.sim_control[k]], axis=1) for k in pool.layers}
    rng = np.random.default_rng(0)
    reps = 200
    for n in (1, 5):
        fired = {0.0: 0, 0.05: 0}
        gates = []
        for rep in range(reps):
            imgs = [rep % 5] if n == 1 else list(range(5))
            pick = np.stack([rng.permutation(120)[:40] for _ in imgs])          # (n, 40), first = "adversarial"
            adv = {k: sims[k][imgs, pick[:, 0]] for k in sims}
            ctrl = {k: np.take_along_axis(sims[k][imgs], pick[:, 1:], axis=1) for k in sims}
            for m in fired:
                d = find_diverging_point(adv, ctrl, pool.layers, DivergenceConfig(min_effect=m))
                fired[m] += d.layer is not None
            gates.append(d.gate_p)
        g = np.array(gates)
        assert fired[0.05] <= ALPHA * reps, (n, fired)                           # the default rule
        se = math.sqrt(ALPHA * (1 - ALPHA) / reps)
        assert fired[0.0] <= np.sum(g <= ALPHA + 1e-12) <= (ALPHA + 3 * se) * reps, (n, fired)
        assert 0.35 < np.mean(g <= 0.5) < 0.65                                   # gate p ~ uniform, not idle


@pytest.mark.slow
def test_mifgsm_pairs_fire_for_1_5_10_pair_sets(r20_cats):
    entry, g, x, xa = r20_cats
    cmp = compare_with_noise_control(entry, g, x, xa)
    assert np.allclose(cmp.rms_control, cmp.rms_adv, atol=1e-6)
    sets = [[i] for i in range(10)] + [list(range(5)), list(range(5, 10)), list(range(10))]
    for imgs in sets:
        d = find_diverging_point({k: v[imgs] for k, v in cmp.sim_adv.items()},
                                 {k: v[imgs] for k, v in cmp.sim_control.items()}, cmp.layers)
        assert d.layer is not None and d.gate_p <= ALPHA, imgs
        assert d.index is not None and d.index < cmp.layers.index("avgpool")
    full = diverging_point(cmp)
    assert full.evidence["linear"].below and full.evidence["linear"].ci_low > 0.05
