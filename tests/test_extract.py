"""Datapath extraction: one-pass q equals per-layer autograd, batch invariance, model unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aevis_core.datapath.extract import ExtractConfig, extract_datapath
from aevis_core.datapath.qp import kkt_residual
from aevis_core.errors import AEVisError
from aevis_core.graph import build_graph
from aevis_core.models.base import ModelSpec, wrap
from tests.toy_models import ToyResNet


@pytest.fixture(scope="module")
def r20(resnet20, resnet20_graph, cifar_demo):
    g = resnet20_graph
    x = resnet20.preprocess_many(cifar_demo.images[:16])
    return resnet20, g, x


def per_layer_q(entry, layer_module, x, targets):
    """Reference: a separate forward/backward with a hook on one module (Captum-style)."""
    store = {}
    h = layer_module.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    xx = x.clone().requires_grad_(True)
    p = torch.softmax(entry.model(xx), 1).gather(1, targets.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(p, [store["a"]])
    h.remove()
    return (store["a"] * g).sum(dim=(2, 3)).double().detach()


def test_one_pass_q_equals_per_layer_autograd(r20):
    entry, g, x = r20
    layers = ["layer1.0.conv1", "layer2.1.relu1", "layer3.2.bn2"]
    dp = extract_datapath(entry, g, x, ExtractConfig(score="prob", normalize="none"), layers=layers)
    targets = torch.as_tensor(dp.targets)
    net = entry.model.net
    for lid in layers:
        ref = per_layer_q(entry, net.get_submodule(lid), x, targets)
        assert np.allclose(dp.q[lid], ref.numpy(), rtol=1e-4, atol=1e-8)


def test_batch_size_invariance_and_kkt(r20):
    entry, g, x = r20
    a = extract_datapath(entry, g, x, ExtractConfig(batch_size=1))
    b = extract_datapath(entry, g, x, ExtractConfig(batch_size=8))
    for k in a.layers:  # float32 convolutions differ slightly with the batch size
        assert np.allclose(a.q[k], b.q[k], rtol=1e-2, atol=1e-2 * np.abs(a.q[k]).max())
        assert np.allclose(a.layers[k].z, b.layers[k].z, atol=2e-2)
        assert set(a.layers[k].critical) == set(b.layers[k].critical)
    lid = "layer2.0.conv1"
    q = a.q[lid].astype(np.float64)
    Q, c = q.T @ q, q.T @ q.sum(1)
    assert kkt_residual(Q, c, a.layers[lid].lam, a.layers[lid].z) < 1e-6


def test_model_unchanged_after_extraction(r20):
    entry, g, x = r20
    before = {k: v.clone() for k, v in entry.model.state_dict().items()}
    with torch.no_grad():
        ref = entry.model(x)
    extract_datapath(entry, g, x[:4])
    assert all(not m._forward_hooks and not m._backward_hooks for m in entry.model.modules())
    assert all(torch.equal(before[k], v) for k, v in entry.model.state_dict().items())
    assert not any(p.requires_grad for p in entry.model.parameters())
    with torch.no_grad():
        assert torch.equal(entry.model(x), ref)


def test_toy_exact_q():
    e = wrap(ModelSpec(ToyResNet(), (2, 2), ["a", "b"]), "toy")
    g = build_graph(e.model, (1, 2, 2), "toy")
    x = torch.tensor([[[[1.0, -2.0], [0.25, 0.0]]]])
    dp = extract_datapath(e, g, x, ExtractConfig(score="logit", normalize="none", target=0), layers=["relu1", "add"])
    # logit0 = mean relu(3 a0): d/da0 = 3/4 where a0 > 0 -> q0 = Σ a0 * 3/4 = 1.25 * 0.75
    assert np.allclose(dp.q["relu1"][0], [0.9375, 0.0])
    assert np.allclose(dp.q["add"][0], [0.9375, 0.0])
    assert dp.layers["relu1"].critical == [0]


@pytest.mark.parametrize("method", ["act_topk", "gradxact_topk", "random"])
def test_comparison_methods_pick_top_k(r20, method):
    entry, g, x = r20
    dp = extract_datapath(entry, g, x[:4], ExtractConfig(method=method, top_k=3), layers=["layer3.0.conv1"])
    crit = dp.layers["layer3.0.conv1"].critical
    assert len(crit) == 3 and len(set(crit)) == 3
    if method == "act_topk":
        assert set(crit) == set(np.argsort(-dp.mean_act["layer3.0.conv1"].mean(0))[:3])


def test_bad_options(r20):
    entry, g, x = r20
    with pytest.raises(AEVisError, match="unknown datapath method"):
        extract_datapath(entry, g, x, ExtractConfig(method="magic"))
    with pytest.raises(AEVisError, match="unknown layer"):
        extract_datapath(entry, g, x, layers=["nope"])
    with pytest.raises(AEVisError, match="out of range"):
        extract_datapath(entry, g, x, ExtractConfig(target=10))


def test_lambda_modes(r20):
    entry, g, x = r20
    lid = "layer3.2.relu2"
    paper = extract_datapath(entry, g, x, ExtractConfig(lam_mode="paper"), layers=[lid])
    rel = extract_datapath(entry, g, x, ExtractConfig(rho=0.1), layers=[lid])
    q = rel.q[lid].astype(np.float64)
    assert rel.layers[lid].lam == pytest.approx(0.1 * np.trace(q.T @ q) / 64, rel=1e-6)
    assert paper.layers[lid].lam == pytest.approx(0.1 / 64**2)
    # the paper's tiny λ keeps (almost) every map when N is not far below n; the relative λ is selective
    assert len(rel.layers[lid].critical) < len(paper.layers[lid].critical)
    with pytest.raises(AEVisError, match="lambda mode"):
        extract_datapath(entry, g, x, ExtractConfig(lam_mode="huge"), layers=[lid])



def test_mlp_neurons_are_feature_maps():
    from aevis_core.models.base import PixelModel
    from tests.toy_models import MLP

    torch.manual_seed(0)
    e = wrap(ModelSpec(MLP(), (1, 4), ["a", "b"]), "mlp")
    g = build_graph(e.model, (4,), "mlp")
    x = torch.randn(6, 4)
    dp = extract_datapath(e, g, x, ExtractConfig(normalize="none", score="logit", target=1), layers=["fc1", "act"])
    assert isinstance(e.model, PixelModel) and dp.layers["fc1"].n == 3 and dp.q["act"].shape == (6, 3)
    # logit1 = W2[1] · relu(h): q_act[k, j] = relu(h)_kj * W2[1, j]
    net = e.model.net
    with torch.no_grad():
        h = torch.relu(net.fc1(x))
    assert np.allclose(dp.q["act"], (h * net.fc2.weight[1]).numpy(), atol=1e-6)
