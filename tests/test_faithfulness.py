"""Masked forward passes (aevis_core.graph.mask) and datapath faithfulness (aevis_core.faithfulness)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from aevis_core.datapath.extract import ExtractConfig, extract_datapath
from aevis_core.errors import AEVisError
from aevis_core.faithfulness import (
    FaithfulnessEvaluator,
    describe,
    faithfulness,
    faithfulness_curve,
    rank_maps,
    resolve_ks,
)
from aevis_core.graph import build_graph
from aevis_core.graph.mask import MaskedModel, apply_mask
from aevis_core.models.base import ModelSpec, wrap
from tests.toy_models import Untraceable

# ToyResNet on these two 1x2x2 images: relu1 = (relu(x), relu(0.5 - x)), add = conv2(relu1) + relu1
X_TOY = torch.tensor([[[[1.0, -2.0], [0.25, 0.0]]], [[[0.5, 0.0], [-1.0, 2.0]]]])


@pytest.fixture(scope="module")
def r20(resnet20, resnet20_graph, cifar_demo):
    g = resnet20_graph
    x = resnet20.preprocess_many(cifar_demo.images[::6][:16])  # 16 images, all 10 classes
    return resnet20, g, x


def toy_logits(a: torch.Tensor) -> torch.Tensor:
    """Hand-written rest of ToyResNet after relu1: add = [[2,0],[1,1]] a + a, relu, mean, identity fc."""
    b = torch.stack([3 * a[:, 0], a[:, 0] + 2 * a[:, 1]], dim=1)
    return torch.relu(b).mean(dim=(2, 3))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor], x: torch.Tensor,
                     ref: torch.Tensor) -> None:
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    assert type(model).__name__ == "PixelModel" and "forward" not in vars(model)
    with torch.no_grad():
        assert torch.equal(model(x), ref)


# ---------------------------------------------------------------------------------------------
# MaskedModel
# ---------------------------------------------------------------------------------------------


def test_toy_masks_exact(toy):
    e, g = toy
    before = snapshot(e.model)
    with torch.no_grad():
        ref = e.model(X_TOY)
        mm = MaskedModel(e.model, g, "relu1")
        assert mm.n == 2
        assert torch.equal(mm(X_TOY, torch.ones(2)), ref)
        a = torch.relu(torch.cat([X_TOY, 0.5 - X_TOY], dim=1))
        assert torch.allclose(toy_logits(a), ref)  # the hand-written model is right
        # all maps removed: add = 0 -> logits = fc bias = 0
        assert torch.equal(mm(X_TOY, torch.zeros(2)), torch.zeros(2, 2))
        # map 1 removed: add = (3 a0, a0); image 0: a0 = (1, 0, .25, 0) -> mean 1.25/4
        out = mm(X_TOY, torch.tensor([1.0, 0.0]))
        assert torch.allclose(out[0], torch.tensor([3 * 0.3125, 0.3125]))
        assert torch.allclose(out, toy_logits(a * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)))
        # relaxed mask and a constant fill: a~ = m a + (1 - m) f
        m, f = torch.tensor([0.5, 0.25]), torch.tensor([0.5, -1.0])
        out = mm(X_TOY, m, f)
        a_t = a * m.view(1, 2, 1, 1) + (1 - m).view(1, 2, 1, 1) * f.view(1, 2, 1, 1)
        assert torch.allclose(out, toy_logits(a_t))
        # all removed with fill (0.5, -1): add = (1.5, 0.5 - 2) -> relu -> (1.5, 0) for every image
        assert torch.allclose(mm(X_TOY, torch.zeros(2), f), torch.tensor([[1.5, 0.0], [1.5, 0.0]]))
        # per-image (B, n) masks
        out = mm(X_TOY, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], torch.zeros(2))
    assert_unchanged(e.model, before, X_TOY, ref)


def test_mask_gradient_and_shapes(toy):
    e, g = toy
    mm = MaskedModel(e.model, g, "add")
    m = torch.ones(2, requires_grad=True)
    out = mm(X_TOY, m)
    (gm,) = torch.autograd.grad(out[:, 0].sum(), [m])
    # d logit0 / d m_0 at m = 1 is sum_k mean relu'(b) * b over space (b_0 >= 0 only where kept)
    b0 = 3 * torch.relu(X_TOY[:, 0])
    assert torch.allclose(gm, torch.tensor([float(b0.mean(dim=(1, 2)).sum()), 0.0]))
    with pytest.raises(AEVisError):
        mm(X_TOY, torch.ones(3))
    with pytest.raises(AEVisError):
        mm(X_TOY, torch.ones(2), torch.ones(5, 2))
    with pytest.raises(AEVisError):
        MaskedModel(e.model, g, "nope")
    assert torch.equal(apply_mask(torch.ones(1, 2, 1, 1), torch.tensor([2.0, 0.0])).flatten(), torch.tensor([2.0, 0.0]))


def test_untraced_graph_refused():
    e = wrap(ModelSpec(Untraceable(), (8, 8), ["a", "b"]), "u")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        g = build_graph(e.model, (3, 8, 8), "u")
    assert not g.traced
    with pytest.raises(AEVisError, match="traced"):
        MaskedModel(e.model, g, g.feature_layers()[0])


def test_resnet_ones_equal_original_and_model_unchanged(r20):
    entry, g, x = r20
    before = snapshot(entry.model)
    with torch.no_grad():
        ref = entry.model(x)
    for lid in ("input", "layer2.1.relu1", "layer3.2.relu2", "linear"):  # layer2.1.relu1: a skip crosses it
        mm = MaskedModel(entry.model, g, lid)
        with torch.no_grad():
            assert torch.equal(mm(x, torch.ones(mm.n)), ref), lid
            assert torch.equal(mm(x, torch.ones(mm.n), torch.full((mm.n,), 7.0)), ref), lid
            cached = mm.logits(mm.cache(x, batch_size=16), torch.ones(mm.n))
            assert torch.equal(cached, ref), lid
    # cached suffix passes with the mask requiring grad, then the model is untouched
    mm = MaskedModel(entry.model, g, "layer2.2.relu2")
    cache = mm.cache(x[:4])
    z = torch.full((mm.n,), 0.5, requires_grad=True)
    mm.logits(cache, z, grad=True).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert_unchanged(entry.model, before, x, ref)


# ---------------------------------------------------------------------------------------------
# faithfulness
# ---------------------------------------------------------------------------------------------


def test_faithfulness_keep_all_and_none(toy, r20):
    entry, g, x = r20
    assert faithfulness(entry, g, x, "layer3.2.relu2", list(range(64))) == (1.0, 0.0)
    assert faithfulness(entry, g, x, "layer3.2.relu2", np.arange(64), fill="mean") == (1.0, 0.0)
    ev = FaithfulnessEvaluator(entry, g, x, "layer3.2.relu2")
    none = ev.evaluate([])
    # no map left: logits = fc bias for every image, the same prediction everywhere
    bias = entry.model.net.linear.bias
    probs_b = torch.softmax(bias, 0)
    p0 = ev.p0.numpy()
    assert np.allclose(none.per_image_drop, p0 - probs_b[ev.targets].double().numpy(), atol=1e-6)
    assert none.preserved == pytest.approx(float((ev.targets == bias.argmax()).float().mean()))
    with pytest.raises(AEVisError):
        ev.evaluate([64])
    with pytest.raises(AEVisError):
        ev.evaluate([0], fill="median")
    # toy: keep nothing with fill="mean" -> every map is its mean over images and positions
    e, tg = toy
    a = torch.relu(torch.cat([X_TOY, 0.5 - X_TOY], dim=1))
    mean = a.mean(dim=(0, 2, 3))
    evt = FaithfulnessEvaluator(e, tg, X_TOY, "relu1")
    assert torch.allclose(evt.mean_fill, mean)
    r = evt.evaluate([], fill="mean")
    probs = torch.softmax(toy_logits(mean.view(1, 2, 1, 1).expand(2, 2, 2, 2)), 1)
    p_t = probs.gather(1, evt.targets.view(-1, 1)).squeeze(1).double()
    assert np.allclose(r.per_image_drop, (evt.p0 - p_t).numpy(), atol=1e-6)
    # keep map 0 (zero-fill) -> hand-computed
    r = evt.evaluate([0])
    probs = torch.softmax(toy_logits(a * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)), 1)
    assert r.preserved == pytest.approx(float((probs.argmax(1) == evt.targets).float().mean()))


def test_resolve_ks_and_ranking():
    assert resolve_ks((0.05, 0.1, 0.5, 3, 100), 20) == [("5%", 1), ("10%", 2), ("50%", 10), ("3", 3), ("100", 20)]
    with pytest.raises(AEVisError):
        resolve_ks((1.5,), 10)
    assert rank_maps([1.0, 0.0, 1.0, 0.0], [0.0, 5.0, 2.0, 1.0]).tolist() == [2, 0, 1, 3]


def test_qp_at_equal_k_beats_random(resnet20, cifar_demo):
    """QP (prob, l1) top-k keeps at least as many top-1 predictions as random k-subsets (ties allowed).

    16 images covering all ten classes; "random" is the mean over 8 seeded permutations (the
    expected value of random selection), and the curve's own seeded random ranking is reported too.
    """
    g = build_graph(resnet20.model, (3, 32, 32), "r20")
    x = resnet20.preprocess_many(cifar_demo.images[3::6][:16])
    layer = "layer3.2.relu2"
    ev = FaithfulnessEvaluator(resnet20, g, x, layer)
    ks = (0.05, 0.1, 0.25, 0.5)
    cfg = ExtractConfig(score="prob", normalize="l1", lam_mode="paper")
    tab = faithfulness_curve(resnet20, g, x, layer, cfg, methods=("qp", "act_topk", "gradxact_topk", "random"),
                             ks=ks, evaluator=ev)
    assert tab["n"] == 64 and tab["n_images"] == 16 and 0 <= tab["natural_k"]["qp"] <= 64
    assert json.loads(json.dumps(tab)) == tab
    rows = {(r["method"], r["k"]): r for r in tab["rows"]}
    assert {r["method"] for r in tab["rows"]} == {"qp", "act_topk", "gradxact_topk", "random"}
    for _, k in resolve_ks(ks, 64):
        rnd = [ev.evaluate(np.random.default_rng(seed).permutation(64)[:k]) for seed in range(8)]
        qp = rows[("qp", k)]
        assert qp["preserved"] >= np.mean([r.preserved for r in rnd]), (k, qp)
        assert qp["drop"] <= np.mean([r.drop for r in rnd]), (k, qp)


def test_curve_evaluates_the_datapath_the_user_sees(resnet20, cifar_demo):
    """The curve's "datapath" rows are the shown datapath's critical set and ranking, named in the result."""
    g = build_graph(resnet20.model, (3, 32, 32), "r20")
    x = resnet20.preprocess_many(cifar_demo.images[1::10][:8])
    layer = "layer2.2.relu2"
    ev = FaithfulnessEvaluator(resnet20, g, x, layer)
    for cfg in (ExtractConfig(), ExtractConfig(lam_mode="paper"), ExtractConfig(method="gradxact_topk", score="logit")):
        shown = extract_datapath(resnet20, g, x, cfg, layers=[layer])
        tab = faithfulness_curve(resnet20, g, x, layer, cfg, evaluator=ev, fill=("zero", "mean"))
        assert tab["datapath"]["label"] == describe(cfg) and tab["datapath"]["config"]["method"] == cfg.method
        crit = shown.layers[layer].critical
        assert tab["natural_k"]["datapath"] == len(crit)
        for f in ("zero", "mean"):
            row = next(r for r in tab["rows"] if r["method"] == "datapath" and r["k"] == len(crit) and r["fill"] == f)
            ref = ev.evaluate(crit, f)
            assert (row["preserved"], row["drop"]) == (ref.preserved, ref.drop)
        # the same table from the ready datapath (no second extraction)
        tab2 = faithfulness_curve(resnet20, g, x, layer, datapath=shown, evaluator=ev, fill=("zero", "mean"))
        assert tab2["rows"] == tab["rows"]
    assert describe(ExtractConfig()) == "QP (logit, none, λ=1·tr(Q)/n, z>0.5, coverage 0.5)"
    assert describe(ExtractConfig(score="prob", normalize="l1", lam_mode="paper", coverage=None)) == \
        "QP (prob, l1, λ=0.1/n² (paper), z>0.5)"
    gx = extract_datapath(resnet20, g, x, ExtractConfig(method="gradxact_topk"), layers=[layer])
    with pytest.raises(AEVisError):
        faithfulness_curve(resnet20, g, x, layer, datapath=gx, evaluator=ev, methods=("qp",))
