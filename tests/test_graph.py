"""Layer graph: residual merges, node identity, exact captured values, fallback, MLP chain."""

from __future__ import annotations

import warnings

import pytest
import torch

from aevis_core.graph import LayerGraph, build_graph, build_hierarchy, capture
from aevis_core.models.base import ModelSpec, wrap
from tests.toy_models import MLP, InplaceNet, ToyResNet, Untraceable


def toy_entry():
    return wrap(ModelSpec(ToyResNet(), (2, 2), ["a", "b"]), "toy")


def test_toy_graph_structure_and_exact_values():
    e = toy_entry()
    g = build_graph(e.model, (1, 2, 2), "toy")
    assert list(g.nodes) == ["input", "conv1", "relu1", "conv2", "add", "relu2", "pool", "fc"]
    assert g.nodes["add"].inputs == ["conv2", "relu1"]
    assert [(b.split, b.merge, b.members) for b in g.blocks] == [("relu1", "add", ["conv2", "add"])]
    assert g.nodes["conv1"].shape == (2, 2, 2) and g.nodes["fc"].channels == 2
    x = torch.tensor([[[[1.0, -2.0], [0.25, 0.0]]]])
    logits, acts = capture(e.model, g, ["conv1", "relu1", "add", "pool"], x)
    # conv1: channel 0 = x, channel 1 = 0.5 - x
    assert torch.equal(acts["conv1"][0, 0], x[0, 0])
    assert torch.equal(acts["conv1"][0, 1], torch.tensor([[-0.5, 2.5], [0.25, 0.5]]))
    a = torch.tensor([[[1.0, 0.0], [0.25, 0.0]], [[0.0, 2.5], [0.25, 0.5]]])
    assert torch.equal(acts["relu1"][0], a)
    # conv2: ch0 = 2 a0, ch1 = a0 + a1; plus skip a
    b = torch.stack([3 * a[0], 2 * a[1] + a[0]])
    assert torch.equal(acts["add"][0], b)
    assert torch.allclose(acts["pool"][0].flatten(), torch.tensor([3.75 / 4, 7.75 / 4]))
    assert torch.allclose(logits[0], torch.tensor([3.75 / 4, 7.75 / 4]))


def test_gradients_flow_to_captured_layers():
    e = toy_entry()
    g = build_graph(e.model, (1, 2, 2), "toy")
    x = torch.tensor([[[[1.0, -2.0], [0.25, 0.0]]]], requires_grad=True)
    logits, acts = capture(e.model, g, ["relu1", "add"], x, grad=True)
    ga, gb = torch.autograd.grad(logits[0, 0], [acts["relu1"], acts["add"]])
    # logit0 = mean(relu(b0)) with b0 = 3 a0 > 0 where a0 > 0 -> d/db0 = 1/4 where b0 > 0
    assert torch.equal(gb[0, 0], (acts["add"][0, 0] > 0).float() / 4)
    assert torch.equal(gb[0, 1], torch.zeros(2, 2))
    # d/da0 = 3 * 1/4 where b0 > 0 ; d/da1 = 0
    assert torch.equal(ga[0, 0], 0.75 * (acts["add"][0, 0] > 0).float())


@pytest.mark.parametrize("name,merges", [("cifar-resnet20", 9), ("cifar-resnet56", 27), ("efficientnet-lite0", 9)])
def test_residual_merges(name, merges, request):
    fixture = {"cifar-resnet20": "resnet20", "cifar-resnet56": "resnet56", "efficientnet-lite0": "lite0"}[name]
    e = request.getfixturevalue(fixture)
    g = build_graph(e.model, (3, *e.input_size), name)
    assert g.traced and g.warning is None
    assert len(g.blocks) == merges
    for b in g.blocks:
        assert g.nodes[b.merge].op == "add" and b.members[-1] == b.merge
        assert b.split not in b.members
    assert LayerGraph.from_dict(g.to_dict()).to_dict() == g.to_dict()


def test_efficientnet_relu6_called_twice_is_two_layers(lite0):
    g = build_graph(lite0.model, (3, 224, 224), "lite0")
    calls = [n for n in g.nodes.values() if n.module == "_blocks.1._swish"]
    assert [n.id for n in calls] == ["_blocks.1._swish", "_blocks.1._swish#2"]
    assert calls[0].shape == (96, 112, 112) and calls[1].shape == (96, 56, 56)
    assert g.nodes["_conv_stem"].op == "conv"  # Conv2dStaticSamePadding kept as one leaf
    x = torch.rand(2, 3, 224, 224)
    _, acts = capture(lite0.model, g, ["_blocks.1._swish", "_blocks.1._swish#2"], x)
    net = lite0.model.net
    with torch.no_grad():
        h = net._swish(net._bn0(net._conv_stem(lite0.model.normalize(x))))
        h = net._blocks[0](h)
        blk = net._blocks[1]
        first = blk._swish(blk._bn0(blk._expand_conv(h)))
        second = blk._swish(blk._bn1(blk._depthwise_conv(first)))
    assert torch.allclose(acts["_blocks.1._swish"], first, atol=1e-6)
    assert torch.allclose(acts["_blocks.1._swish#2"], second, atol=1e-6)


def test_captured_outputs_equal_eager_resnet20(resnet20):
    g = build_graph(resnet20.model, (3, 32, 32), "r20")
    x = torch.rand(3, 3, 32, 32)
    ids = ["relu", "layer2.0.add", "layer3.2.relu2", "avgpool", "linear"]
    logits, acts = capture(resnet20.model, g, ids, x)
    net = resnet20.model.net
    with torch.no_grad():
        h = net.relu(net.bn1(net.conv1(resnet20.model.normalize(x))))
        assert torch.allclose(acts["relu"], h)
        h1 = net.layer1(h)
        b = net.layer2[0]
        add = b.bn2(b.conv2(b.relu1(b.bn1(b.conv1(h1))))) + b.shortcut(h1)
        assert torch.allclose(acts["layer2.0.add"], add, atol=1e-6)
        h3 = net.layer3(net.layer2(h1))
        assert torch.allclose(acts["layer3.2.relu2"], h3, atol=1e-6)
        assert torch.allclose(acts["avgpool"], net.avgpool(h3), atol=1e-6)
    assert torch.allclose(logits, resnet20.model(x), atol=1e-6)
    assert torch.allclose(acts["linear"], logits)


def test_inplace_relu_keeps_captured_value_and_gradient():
    torch.manual_seed(0)
    e = wrap(ModelSpec(InplaceNet(), (5, 5), ["a", "b"]), "inplace")
    g = build_graph(e.model, (3, 5, 5), "inplace")
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    logits, acts = capture(e.model, g, ["conv"], x, grad=True)
    with torch.no_grad():
        ref = e.model.net.conv(x)
    assert (ref < 0).any() and torch.allclose(acts["conv"], ref)
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), [acts["conv"]])
    assert grad.abs().sum() > 0
    assert e.model.net.act.inplace  # the model itself is unchanged


def test_mlp_is_a_chain_with_neurons_as_feature_maps():
    e = wrap(ModelSpec(MLP(), (1, 4), ["a", "b"]), "mlp")
    g = build_graph(e.model.net, (4,), "mlp")
    assert list(g.nodes) == ["input", "fc1", "act", "fc2"]
    assert [g.nodes[k].inputs for k in g.nodes] == [[], ["input"], ["fc1"], ["act"]]
    assert g.nodes["fc1"].channels == 3 and g.nodes["fc2"].channels == 2 and g.blocks == []


def test_untraceable_model_takes_hook_fallback_with_warning():
    torch.manual_seed(0)
    e = wrap(ModelSpec(Untraceable(), (6, 6), ["a", "b"]), "untraceable")
    with pytest.warns(RuntimeWarning, match="torch.fx cannot trace Untraceable"):
        g = build_graph(e.model, (3, 6, 6), "untraceable")
    assert not g.traced and "falling back" in (g.warning or "")
    assert list(g.nodes) == ["input", "conv", "act", "act#2", "fc"]
    x = torch.rand(2, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logits, acts = capture(e.model, g, ["conv", "act#2"], x)
    net = e.model.net
    with torch.no_grad():
        y = torch.relu(net.conv(e.model.normalize(x)))
    assert torch.allclose(acts["conv"], net.conv(x))
    assert torch.allclose(acts["act#2"], torch.relu(2 * y))
    assert not net.conv._forward_hooks and not net.act._forward_hooks  # hooks removed


def test_hierarchy_groups(resnet56):
    g = build_graph(resnet56.model, (3, 32, 32), "r56")
    root = build_hierarchy(g)
    top = [c.id for c in root.children]
    assert top == ["input", "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "linear"]
    layer2 = next(c for c in root.children if c.id == "layer2")
    assert [c.id for c in layer2.children] == [f"layer2.{i}" for i in range(9)]
    assert layer2.children[3].layers()[0] == "layer2.3.conv1"
    assert sorted(root.layers()) == sorted(g.nodes)


class Broken(torch.nn.Module):
    """Neither traceable nor runnable on the declared input size."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 2
        return self.fc(x.flatten(1))


def test_model_that_cannot_be_traced_nor_run_gives_one_line():
    from aevis_core.errors import ModelLoadError

    e = wrap(ModelSpec(Broken(), (4, 4), ["a", "b"]), "broken")
    with pytest.warns(RuntimeWarning), pytest.raises(ModelLoadError) as err:
        build_graph(e.model, (3, 4, 4), "broken")
    msg = str(err.value)
    assert "cannot build a layer graph of Broken" in msg and "RuntimeError" in msg and "\n" not in msg


def test_layouts_survive_the_dict_round_trip_and_old_dicts_load():
    from tests.toy_layouts import ToyViT

    torch.manual_seed(0)
    e = wrap(ModelSpec(ToyViT(), (8, 8), list("abcd")), "vit")
    g = build_graph(e.model, (3, 8, 8), "vit")
    d = g.to_dict()
    g2 = LayerGraph.from_dict(d)
    assert g2.to_dict() == d and g2.unmapped == g.unmapped and g2.nodes["block.fc1"].channel_axis == 1
    assert g2.nodes["block.fc1"].spatial == (5,)  # tokens
    assert [k for k, n in g.nodes.items() if not n.inputs] == ["input"]  # the class token is no root layer
    old = {**d, "nodes": [{k: v for k, v in nd.items() if k != "channel_axis"} for nd in d["nodes"]]}
    del old["unmapped"]
    g3 = LayerGraph.from_dict(old)
    assert g3.nodes["patch"].channel_axis == 0 and g3.unmapped == {}
