"""Capture by tensor hooks: q reduced as the backward reaches each layer, nothing held afterwards,
the hook fallback gives the same q, reductions on any axis."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from aevis_core.datapath.scores_pass import batch_scores
from aevis_core.graph import LayerCapture, build_graph
from aevis_core.graph.capture import Scratch, Taps, map_mean, map_q
from aevis_core.models.base import ModelSpec, wrap
from tests.toy_models import InplaceNet, Untraceable


@pytest.mark.parametrize("shape,axis", [((2, 3), 1), ((2, 4, 5, 3), 3), ((2, 3, 4, 5), 1), ((2, 5, 6), 2)])
def test_map_q_and_mean_reduce_every_other_axis(shape, axis):
    torch.manual_seed(0)
    a, g = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    dims = [d for d in range(1, len(shape)) if d != axis]
    want_q = (a * g).sum(dims) if dims else a * g
    want_m = a.mean(dims) if dims else a
    assert torch.allclose(map_q(a, g, axis), want_q) and map_q(a, g, axis).shape == (2, shape[axis])
    assert torch.allclose(map_mean(a, axis), want_m)
    scratch = Scratch()  # reused buffer: a bigger product first, then this one, same result
    map_q(torch.ones(3, *shape), torch.ones(3, *shape), axis, scratch)
    assert torch.allclose(map_q(a, g, axis, scratch), want_q)


def test_each_hook_releases_its_layer_during_the_backward(resnet20, resnet20_graph):
    """When layer l's hook runs, every layer after l (closer to the output) is already released."""
    g = resnet20_graph
    ids = g.feature_layers()
    cap = LayerCapture(resnet20.model, g, ids)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    held_when: list[int] = []
    orig = Taps._grad

    def spy(self, *args):
        held_when.append(len(self._held))
        return orig(self, *args)

    Taps._grad = spy
    try:
        logits, taps = cap.taps(x)
        held = len(taps._held)  # forward done: layers held until their gradient comes
        # a BN whose only consumer is a ReLU takes its q from the ReLU output (kept by autograd anyway)
        ch = g.children()
        via_relu = [k for k in ids if len(ch[k]) == 1 and g.nodes[ch[k][0]].target in ("ReLU", "relu")]
        assert len(via_relu) == 19  # every bn1 (10) and every residual add (9)
        assert held == len(ids) - len(via_relu)  # one tensor held per ReLU for both layers
        torch.autograd.grad(torch.softmax(logits, 1)[:, 0].sum(), [x])
    finally:
        Taps._grad = orig
    taps.finish()
    assert held_when == list(range(held, 0, -1))  # strictly one fewer at every hook
    assert torch.equal(taps.q["layer2.1.bn1"], taps.q["layer2.1.relu1"])
    assert taps._held == {} and set(taps.q) == set(ids)
    assert all(taps.q[k].shape == (2, g.nodes[k].channels) for k in ids)
    assert all(not m._forward_hooks for m in resnet20.model.modules())


def test_hook_fallback_gives_the_same_q_as_autograd():
    torch.manual_seed(0)
    e = wrap(ModelSpec(Untraceable(), (6, 6), ["a", "b"]), "untraceable")
    with pytest.warns(RuntimeWarning):
        g = build_graph(e.model, (3, 6, 6), "untraceable")
    assert not g.traced and [g.nodes[k].channel_axis for k in ("conv", "act", "act#2", "fc")] == [0, 0, 0, 0]
    x = torch.rand(3, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bs = batch_scores(LayerCapture(e.model, g, ["conv", "act#2"]), x, torch.tensor([0, 1, 0]), "logit")
    net = e.model.net
    xx = x.clone().requires_grad_(True)
    conv = net.conv(e.model.normalize(xx))
    y = torch.relu(conv)
    y2 = torch.relu(2 * y)
    logits = net.fc(y2.mean(dim=(2, 3)))
    p = logits.gather(1, torch.tensor([[0], [1], [0]])).sum()
    gc, gy = torch.autograd.grad(p, [conv, y2])
    assert np.allclose(bs.q["conv"].numpy(), (conv * gc).sum((2, 3)).double().detach().numpy(), atol=1e-6)
    assert np.allclose(bs.q["act#2"].numpy(), (y2 * gy).sum((2, 3)).double().detach().numpy(), atol=1e-6)
    assert not net.conv._forward_hooks


def test_inplace_consumer_does_not_corrupt_the_held_activation():
    torch.manual_seed(0)
    e = wrap(ModelSpec(InplaceNet(), (5, 5), ["a", "b"]), "inplace")
    g = build_graph(e.model, (3, 5, 5), "inplace")
    x = torch.randn(2, 3, 5, 5)
    bs = batch_scores(LayerCapture(e.model, g, ["conv"]), x, torch.tensor([0, 1]), "logit")
    net = e.model.net
    xx = x.clone().requires_grad_(True)
    conv = net.conv(e.model.normalize(xx))
    assert (conv < 0).any()  # the in-place ReLU would have overwritten these values
    logits = net.fc(torch.relu(conv).mean(dim=(2, 3)))
    (gc,) = torch.autograd.grad(logits.gather(1, torch.tensor([[0], [1]])).sum(), [conv])
    assert np.allclose(bs.q["conv"].numpy(), (conv * gc).sum((2, 3)).double().detach().numpy(), atol=1e-6)
    assert np.allclose(bs.mean_act["conv"].numpy(), conv.mean((2, 3)).double().detach().numpy(), atol=1e-6)


def test_q_of_a_layer_read_through_its_relu_equals_autograd(resnet20, resnet20_graph):
    """layer2.1.bn1 -> relu1 only: q(bn1) from the ReLU's tap equals Σ bn1 · ∂p/∂bn1 by autograd."""
    e, g = resnet20, resnet20_graph
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    targets = torch.tensor([1, 2, 3])
    bs = batch_scores(LayerCapture(e.model, g, ["layer2.1.bn1", "layer2.1.conv1"]), x, targets)
    store = {}
    hooks = [e.model.net.get_submodule(k).register_forward_hook(lambda m, i, o, k=k: store.setdefault(k, o))
             for k in ("layer2.1.bn1", "layer2.1.conv1")]
    xx = x.clone().requires_grad_(True)
    p = torch.softmax(e.model(xx), 1).gather(1, targets.view(-1, 1)).sum()
    for h in hooks:
        h.remove()
    grads = torch.autograd.grad(p, [store["layer2.1.bn1"], store["layer2.1.conv1"]])
    for k, gr in zip(("layer2.1.bn1", "layer2.1.conv1"), grads, strict=True):
        ref = (store[k] * gr).sum((2, 3)).double().detach().numpy()
        assert np.allclose(bs.q[k].numpy(), ref, rtol=1e-4, atol=1e-9) and np.abs(ref).max() > 0


def test_input_layer_q_is_pixels_times_input_gradient():
    from tests.toy_models import ToyResNet

    torch.manual_seed(0)
    e = wrap(ModelSpec(ToyResNet(), (2, 2), ["a", "b"]), "toy")
    g = build_graph(e.model, (1, 2, 2), "toy")
    x = torch.rand(3, 1, 2, 2)
    t = torch.tensor([0, 1, 0])
    bs = batch_scores(LayerCapture(e.model, g, ["input", "conv1"]), x, t, "logit")
    xx = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(e.model(xx).gather(1, t.view(-1, 1)).sum(), [xx])
    assert np.allclose(bs.q["input"].numpy(), (x * gx).sum((2, 3)).double().numpy(), atol=1e-7)
    assert np.allclose(bs.mean_act["input"].numpy(), x.mean((2, 3)).double().numpy())


class InplaceSix(torch.nn.Module):
    """conv -> BN -> ReLU6(inplace) -> conv -> SiLU -> pool -> fc: activations recomputed, not held."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
        self.act = torch.nn.ReLU6(inplace=True)
        self.conv2, self.act2 = torch.nn.Conv2d(6, 5, 3, padding=1), torch.nn.SiLU()
        self.fc = torch.nn.Linear(5, 3)
        with torch.no_grad():
            self.conv1.weight.mul_(8.0)  # some values above 6 and below 0
            self.bn.running_var.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act(self.bn(self.conv1(x)))))
        return self.fc(y.mean(dim=(2, 3)))


def test_recomputed_activations_give_autograd_q():
    torch.manual_seed(0)
    e = wrap(ModelSpec(InplaceSix(), (6, 6), ["a", "b", "c"]), "six")
    g = build_graph(e.model, (3, 6, 6), "six")
    ids = ["conv1", "bn", "act", "conv2", "act2"]
    x = torch.rand(4, 3, 6, 6)
    t = torch.tensor([0, 1, 2, 0])
    cap = LayerCapture(e.model, g, ids)
    logits, taps = cap.taps(x.clone().requires_grad_(True))
    assert set(taps._held) == {"conv1", "bn", "conv2"}  # act = ReLU6(bn), act2 = SiLU(conv2): recomputed
    bs = batch_scores(cap, x, t)
    net = e.model.net
    # autograd reference, eager and without in-place ops
    xx = x.clone().requires_grad_(True)
    bn = net.bn(net.conv1(e.model.normalize(xx)))
    act = torch.nn.functional.relu6(bn)
    c2 = net.conv2(act)
    a2 = torch.nn.functional.silu(c2)
    p = torch.softmax(net.fc(a2.mean(dim=(2, 3))), 1).gather(1, t.view(-1, 1)).sum()
    refs = dict(zip(["bn", "act", "conv2", "act2"], torch.autograd.grad(p, [bn, act, c2, a2]), strict=True))
    vals = {"bn": bn, "act": act, "conv2": c2, "act2": a2}
    assert ((bn > 6) | (bn < 0)).any()
    for k, gr in refs.items():
        ref = (vals[k] * gr).sum((2, 3)).double().detach().numpy()
        assert np.allclose(bs.q[k].numpy(), ref, rtol=1e-4, atol=1e-8) and np.abs(ref).max() > 0, k
    assert np.allclose(bs.mean_act["act"].numpy(), act.mean((2, 3)).double().detach().numpy(), atol=1e-6)
