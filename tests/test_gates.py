"""Learned whole-network gates: lower the training loss, the kept-only network keeps the predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aevis_core.datapath.extract import ExtractConfig, extract_datapath
from aevis_core.datapath.gates import GateConfig, GatedModel, learn_gates
from aevis_core.graph import build_graph
from aevis_core.models.base import ModelSpec, wrap
from tests.toy_models import ToyResNet

X_TOY = torch.tensor([[[[1.0, -2.0], [0.25, 0.0]]], [[[0.5, 0.0], [-1.0, 2.0]]], [[[2.0, 1.0], [1.0, 0.5]]]])


def hooked_predictions(entry, masks: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Independent reference: forward hooks multiply module outputs by 0/1 masks per map."""
    hooks = []
    for name, m in masks.items():
        mod = entry.model.net.get_submodule(name)
        shape = (1, -1) + (1,) * (2 if name not in ("linear", "fc") else 0)
        hooks.append(mod.register_forward_hook(lambda _m, _i, o, mm=m, sh=shape: o * mm.view(*sh)))
    try:
        with torch.no_grad():
            return entry.model(x).argmax(1)
    finally:
        for h in hooks:
            h.remove()


def test_gated_model_at_one_is_the_model_and_the_model_stays_unchanged(toy):
    entry, g = toy
    before = {k: v.clone() for k, v in entry.model.state_dict().items()}
    gm = GatedModel(entry.model, g, g.feature_layers())
    with torch.no_grad():
        assert torch.equal(gm(X_TOY), entry.model(X_TOY))
        masks = {k: torch.ones(2) for k in g.feature_layers()}
        gm.set_hard({**masks, "relu1": torch.tensor([1.0, 0.0])})
        a = torch.relu(torch.stack([X_TOY[:, 0], torch.zeros_like(X_TOY[:, 0])], 1))  # relu1 with map 1 removed
        b = torch.relu(torch.stack([3 * a[:, 0], a[:, 0] + 2 * a[:, 1]], 1)).mean(dim=(2, 3))
        assert torch.allclose(gm(X_TOY), b)
    assert all(torch.equal(before[k], v) for k, v in entry.model.state_dict().items())
    assert not any(p.requires_grad for p in entry.model.parameters())


def test_gates_lower_the_loss_and_keep_the_predictions_toy():
    entry = wrap(ModelSpec(ToyResNet(), (2, 2), ["a", "b"]), "toy")
    g = build_graph(entry.model, (1, 2, 2), "toy")
    with torch.no_grad():
        t = entry.model(X_TOY).argmax(1)
    layers = ["conv1", "relu1", "conv2", "relu2", "fc"]
    res = learn_gates(entry, g, X_TOY, t, layers, GateConfig(sparsity=0.3, max_steps=150, budget_s=60))
    assert res.history[-1] < res.history[0] - 0.01  # the hard network lost a map: ≥ 0.3 / 10 less L1
    assert res.preserved == 1.0 and 0 < res.threshold <= 0.5
    masks = {k: torch.zeros(2).index_fill_(0, torch.tensor(res.critical[k], dtype=torch.long), 1.0) for k in layers}
    assert torch.equal(hooked_predictions(entry, masks, X_TOY), t)
    for k in layers:  # critical sets: z above the threshold, by z descending
        z = res.z[k]
        assert res.critical[k] == [j for j in np.argsort(-z, kind="stable") if z[j] > res.threshold]


@pytest.mark.slow
def test_gates_resnet20_class_set(resnet20, resnet20_graph, cifar_demo):
    labels = np.array(cifar_demo.labels)
    idx = np.flatnonzero(labels == labels[0])[:4]
    x = resnet20.preprocess_many([cifar_demo.images[i] for i in idx])
    t = resnet20.predict(x)[1]
    mods = dict(resnet20.model.net.named_modules())
    layers = [k for k in resnet20_graph.feature_layers() if k in mods]  # module layers: hook reference
    calls: list[tuple[int, int, str]] = []
    res = learn_gates(resnet20, resnet20_graph, x, t, layers,
                      GateConfig(sparsity=1.0, max_steps=40, budget_s=60, patience=10),
                      progress=lambda d, n, s: calls.append((d, n, s)))
    assert res.history[-1] < res.history[0]
    assert {s for _, _, s in calls} >= {"train", "threshold", "done"}
    kept = sum(len(v) for v in res.critical.values())
    assert kept < sum(len(v) for v in res.z.values())
    masks = {k: torch.zeros(len(res.z[k])).index_fill_(0, torch.tensor(res.critical[k], dtype=torch.long), 1.0)
             for k in layers}
    assert torch.equal(hooked_predictions(resnet20, masks, x), t)


def test_gates_through_extract_datapath(toy):
    entry, g = toy
    cfg = ExtractConfig(method="gates", sparsity=1.0, budget_s=30)
    dp = extract_datapath(entry, g, X_TOY, cfg)
    assert dp.config.method == "gates" and set(dp.layers) == set(g.feature_layers())
    assert dp.q["relu1"].shape == (3, 2) and dp.targets.shape == (3,)
    for ld in dp.layers.values():
        assert ld.z.shape == (2,) and ((ld.z >= 0) & (ld.z <= 1)).all()
        assert set(ld.critical) == {j for j in range(2) if ld.z[j] > ld.lam}


def test_gates_act_on_the_feature_map_axis_of_channels_last_layers():
    """A hard gate closing map 0 of a channels-last Linear equals zeroing [..., 0] of its output."""
    import torch

    from aevis_core.datapath.gates import GatedModel
    from tests.test_layouts import make
    from tests.toy_layouts import ToyConvNeXt

    entry, net, graph = make(ToyConvNeXt)
    lid = next(k for k, v in graph.nodes.items() if (v.module or "").endswith("block1.pwconv1"))
    node = graph.nodes[lid]
    assert node.channel_axis == len(node.shape) - 1 and node.channels == 32  # (H, W, 4C): maps last
    gated = GatedModel(entry.model, graph, [lid])
    mask = torch.ones(32)
    mask[0] = 0.0
    gated.set_hard({lid: mask})
    x = torch.rand(3, 3, 8, 8)

    def zero_first(_m, _i, out):
        out = out.clone()
        out[..., 0] = 0.0
        return out

    handle = net.block1.pwconv1.register_forward_hook(zero_first)
    try:
        want = entry.model(x)
    finally:
        handle.remove()
    with torch.no_grad():
        got = gated(x)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(entry.model(x), want, atol=1e-6)  # the mask did change the output
