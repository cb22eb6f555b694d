"""Feature-map axes of ConvNeXt-, DenseNet- and ViT-style toys: exact q against per-layer autograd
on the right axis, concat blocks, unmapped layers refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aevis_core.datapath.extract import ExtractConfig, extract_datapath
from aevis_core.errors import AEVisError
from aevis_core.graph import build_graph, capture
from aevis_core.graph.mask import MaskedModel
from aevis_core.graph.truncate import TruncatedModel
from aevis_core.models.base import ModelSpec, wrap
from tests.toy_layouts import ToyConvNeXt, ToyDenseNet, ToyViT

# graph layer id -> (recorded tensor name, axis of the maps in the raw output, batch at 0)
LAYERS = {
    ToyConvNeXt: {
        "stem": ("stem", 1), "block1.dwconv": ("block1.dwconv", 1), "block1.norm": ("block1.norm", 3),
        "block1.pwconv1": ("block1.pwconv1", 3), "block1.act": ("block1.act", 3),
        "block1.pwconv2": ("block1.pwconv2", 3), "mul": ("block1.mul", 3), "add": ("block1.add", 1),
        "layer_norm": ("layer_norm", 3), "block2.pwconv1": ("block2.pwconv1", 3), "add#2": ("block2.add", 1),
        "mean": ("mean", 1), "head_norm": ("head_norm", 1),
    },
    ToyDenseNet: {
        "stem": ("stem", 1), "cat#2": ("cat1", 1), "layers.1.conv": ("layers.1.conv", 1), "cat#3": ("cat2", 1),
        "cat#4": ("cat3", 1), "trans": ("trans", 1),
    },
    ToyViT: {
        "patch": ("patch", 1), "add": ("add", 2), "block.norm1": ("block.norm1", 2), "getitem": ("block.attn", 2),
        "add#2": ("block.add", 2), "block.fc1": ("block.fc1", 2), "add#3": ("block.add_1", 2),
        "add#4": ("attn2.proj", 2), "norm": ("norm", 2), "getitem#2": ("cls", 1),
    },
}


def make(cls):
    torch.manual_seed(0)
    net = cls()
    e = wrap(ModelSpec(net, (8, 8), list("abcd")), cls.__name__)
    return e, net, build_graph(e.model, (3, 8, 8), cls.__name__)


def reference_q(entry, net, name, axis, x, targets):
    """One eager forward + backward for ONE layer: q = Σ over every axis but batch and ``axis`` of a·∂p/∂a."""
    net.rec = {}
    xx = x.clone().requires_grad_(True)
    p = torch.softmax(entry.model(xx), 1).gather(1, targets.view(-1, 1)).sum()
    a = net.rec[name]
    net.rec = None
    (g,) = torch.autograd.grad(p, [a])
    dims = [d for d in range(1, a.dim()) if d != axis]
    q = (a * g).sum(dims) if dims else a * g
    mean = a.mean(dims) if dims else a
    return q.double().detach(), mean.double().detach()


@pytest.mark.parametrize("cls", [ToyConvNeXt, ToyDenseNet, ToyViT])
def test_exact_q_on_the_feature_axis(cls):
    e, net, g = make(cls)
    torch.manual_seed(1)
    x = torch.rand(5, 3, 8, 8)
    layers = list(LAYERS[cls])
    for lid, (_, axis) in LAYERS[cls].items():
        assert g.nodes[lid].channel_axis == axis - 1, lid
    dp = extract_datapath(e, g, x, ExtractConfig(score="prob", normalize="none", batch_size=3), layers=layers)
    targets = torch.as_tensor(dp.targets)
    for lid, (name, axis) in LAYERS[cls].items():
        q, mean = reference_q(e, net, name, axis, x, targets)
        assert dp.q[lid].shape == (5, g.nodes[lid].channels)
        assert np.allclose(dp.q[lid], q.numpy(), rtol=1e-4, atol=1e-7), lid
        assert np.allclose(dp.mean_act[lid], mean.numpy(), rtol=1e-5, atol=1e-6), lid
        assert np.abs(q.numpy()).max() > 0, lid  # the test can fail: every layer carries gradient


@pytest.mark.parametrize("cls", [ToyConvNeXt, ToyViT])
def test_captured_outputs_have_maps_first_and_gradients(cls):
    e, net, g = make(cls)
    x = torch.rand(2, 3, 8, 8)
    net.rec = {}
    with torch.no_grad():
        e.model(x)
    rec, net.rec = net.rec, None
    ids = list(LAYERS[cls])
    _, acts = capture(e.model, g, ids, x)
    for lid, (name, axis) in LAYERS[cls].items():
        assert torch.allclose(acts[lid], rec[name].movedim(axis, 1), atol=1e-6), lid
    # with grad=True the returned (moved) tensors lie on the path to the logits
    logits, acts = capture(e.model, g, ids, x.clone(), grad=True)
    grads = torch.autograd.grad(logits.sum(), [acts[k] for k in ids])
    assert all(gr.abs().sum() > 0 for gr in grads)


def test_concatenations_are_concat_blocks():
    _, _, g = make(ToyDenseNet)
    assert g.blocks and all(b.kind == "concat" for b in g.blocks)
    assert g.merges("residual") == [] and g.merges("concat") == ["cat#2", "cat#3", "cat#4"]
    assert g.nodes["cat#4"].channels == 18 and g.nodes["cat#4"].inputs == [
        "stem", "layers.0.conv", "layers.1.conv", "layers.2.conv"]
    _, _, gc = make(ToyConvNeXt)
    assert [b.kind for b in gc.blocks] == ["residual", "residual"]


def test_attention_internals_are_unmapped_and_refused():
    e, _, g = make(ToyViT)
    assert set(g.unmapped) == {"attn2.getitem", "attn2.getitem#2", "attn2.getitem#3", "attn2.matmul",
                               "attn2.mul", "attn2.softmax", "attn2.matmul#2"}
    assert "attention scores" in g.unmapped["attn2.matmul"]
    assert g.nodes["attn2.matmul"].channels == 0 and g.nodes["attn2.matmul"].channel_axis is None
    assert "attn2.matmul" not in g.feature_layers() and "attn2.proj" in g.feature_layers()
    assert g.warning is not None and "7 layer(s) have no feature-map axis" in g.warning
    x = torch.rand(2, 3, 8, 8)
    for make_call in (lambda: extract_datapath(e, g, x, layers=["attn2.matmul"]),
                      lambda: MaskedModel(e.model, g, "attn2.softmax"),
                      lambda: TruncatedModel(e.model, g, "attn2.getitem")):
        with pytest.raises(AEVisError) as err:
            make_call()
        assert "has no feature-map axis" in str(err.value) and "\n" not in str(err.value)
    dp = extract_datapath(e, g, x)  # the default layers leave them out
    assert set(dp.layers) == set(g.feature_layers())


class SeqFirst(nn.Module):
    """nn.MultiheadAttention without batch_first on (T, N, D): its output's first axis is the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.attn = nn.MultiheadAttention(4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.flatten(2).transpose(1, 2)).transpose(0, 1)  # (T, N, D)
        a = self.attn(t, t, t, need_weights=False)[0]
        return self.head(a.mean(0))


def test_sequence_first_outputs_are_unmapped():
    e = wrap(ModelSpec(SeqFirst(), (3, 3), ["a", "b"]), "seq")
    g = build_graph(e.model, (3, 3, 3), "seq")
    assert g.nodes["embed"].channel_axis == 1
    assert g.unmapped["getitem"].startswith("the batch is not its first axis")
    assert g.nodes["mean"].channel_axis is None and "head" in g.feature_layers()


def test_masked_and_truncated_channels_last_layer():
    e, net, g = make(ToyConvNeXt)
    x = torch.rand(3, 3, 8, 8)
    lid = "block1.pwconv1"
    mm = MaskedModel(e.model, g, lid)
    assert mm.n == 32
    mask = torch.ones(32)
    mask[[3, 17]] = 0.0

    def zero(mod, inp, out):
        out = out.clone()
        out[..., [3, 17]] = 0.0
        return out

    h = net.block1.pwconv1.register_forward_hook(zero)
    with torch.no_grad():
        ref = e.model(x)
    h.remove()
    with torch.no_grad():
        assert torch.allclose(mm(x, mask), ref, atol=1e-6)
        assert torch.equal(mm(x, torch.ones(32)), e.model(x))
        net.rec = {}
        e.model(x)
        a = net.rec[lid]
        net.rec = None
        assert torch.equal(TruncatedModel(e.model, g, lid)(x), a.movedim(3, 1))
        assert mm.prefix(x).act.shape == (3, 32, 4, 4)


def test_concat_links_map_each_input_to_its_offset():
    from types import SimpleNamespace

    from aevis_core.datapath.connections import connect

    e, _, g = make(ToyDenseNet)
    dp = SimpleNamespace(layers={
        "stem": SimpleNamespace(n=6, critical=[1, 4]),
        "layers.0.conv": SimpleNamespace(n=4, critical=[2]),
        "cat#2": SimpleNamespace(n=10, critical=[1, 8, 9]),
    })
    links = [lk for lk in connect(e, g, dp) if lk[2] == "cat#2"]
    assert sorted(links) == [("layers.0.conv", 2, "cat#2", 8, 1.0), ("stem", 1, "cat#2", 1, 1.0)]
