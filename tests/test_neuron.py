"""Neuron level: truncated forwards, activation maps, occlusion sensitivity on a hand-set net."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from aevis_core.errors import AEVisError
from aevis_core.graph import build_graph, capture
from aevis_core.graph.truncate import TruncatedModel, get_truncated
from aevis_core.models.base import ModelSpec, wrap
from aevis_core.neuron import (
    activation_maps,
    default_patch_size,
    dim_unimportant,
    discrepancy_map,
    occluder_positions,
    top_activating,
    top_patches,
)
from tests.toy_models import Untraceable

# -- helpers -----------------------------------------------------------------------------------


class RegionSum(nn.Module):
    """16×16 image -> conv(3->1, 16×16 kernel, no bias) -> 1×1 map = sum of RED over rows 4..7,
    cols 4..7 (the single region of 1 weights) -> ReLU -> fc. Hand-set, answer known."""

    REGION = (slice(4, 8), slice(4, 8))

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 16, bias=False)
        self.act = nn.ReLU()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 4:8, 4:8] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.act(self.conv(x)), 1))


@pytest.fixture(scope="module")
def toy():
    e = wrap(ModelSpec(RegionSum(), (16, 16), ["a", "b"]), "region")
    return e, build_graph(e.model, (3, 16, 16), "region")


@pytest.fixture(scope="module")
def r20(resnet20):
    return resnet20, build_graph(resnet20.model, (3, 32, 32), "cifar-resnet20")


@pytest.fixture(scope="module")
def cifar_x(resnet20, cifar_demo):
    return resnet20.preprocess_many(cifar_demo.images[::10][:6])


class CallCounter:
    """Forward hooks counting calls of named submodules of ``model``."""

    def __init__(self, model: nn.Module, paths: list[str]) -> None:
        self.calls = dict.fromkeys(paths, 0)
        self.handles = [model.get_submodule(p).register_forward_hook(self._hook(p)) for p in paths]

    def _hook(self, p: str):
        def hook(mod, args, out):
            self.calls[p] += 1
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# -- TruncatedModel ----------------------------------------------------------------------------


def test_truncated_resnet20_equals_capture_and_stops(r20, cifar_x):
    e, g = r20
    x = cifar_x[:2]
    tm = TruncatedModel(e.model, g, "layer2.1.relu2")
    cnt = CallCounter(e.model, ["net.layer2.1.relu2", "net.layer2.2.conv1", "net.linear"])
    try:
        with torch.no_grad():
            a = tm(x)
    finally:
        cnt.remove()
    _, acts = capture(e.model, g, ["layer2.1.relu2"], x)
    assert a.shape == (2, 32, 16, 16)
    assert torch.equal(a, acts["layer2.1.relu2"])
    assert cnt.calls == {"net.layer2.1.relu2": 1, "net.layer2.2.conv1": 0, "net.linear": 0}
    names = {n.name for n in tm.gm.graph.nodes}
    assert "net_layer2_2_conv1" not in names and "net_linear" not in names
    # model untouched: no hooks, original forward still gives logits
    assert not any(m._forward_hooks for m in e.model.modules())
    assert e.model(x).shape == (2, 10)


def test_truncated_efficientnet_second_call_and_layer(lite0, nips_demo):
    g = build_graph(lite0.model, (3, 224, 224), "efficientnet-lite0")
    x = lite0.preprocess_many(nips_demo.images[:2])
    layers = ["_blocks.1._swish#2", "_blocks.1._swish", "_blocks.4.add"]
    _, acts = capture(lite0.model, g, layers, x)
    tm2 = TruncatedModel(lite0.model, g, "_blocks.1._swish#2")
    cnt = CallCounter(lite0.model, ["net._blocks.1._swish", "net._blocks.1._project_conv",
                                    "net._blocks.2._expand_conv"])
    try:
        with torch.no_grad():
            a2 = tm2(x)
    finally:
        cnt.remove()
    # the swish module ran twice (the 2nd call is the layer) and nothing after it ran
    assert cnt.calls == {"net._blocks.1._swish": 2, "net._blocks.1._project_conv": 0,
                         "net._blocks.2._expand_conv": 0}
    assert a2.shape == (2, 96, 56, 56)
    assert torch.equal(a2, acts["_blocks.1._swish#2"])
    with torch.no_grad():
        a1 = TruncatedModel(lite0.model, g, "_blocks.1._swish")(x)
        a4 = TruncatedModel(lite0.model, g, "_blocks.4.add")(x)
    assert a1.shape == (2, 96, 112, 112) and torch.equal(a1, acts["_blocks.1._swish"])
    assert a4.shape == (2, 40, 28, 28) and torch.equal(a4, acts["_blocks.4.add"])


def test_truncated_fallback_untraced_stops_early():
    torch.manual_seed(0)
    net = Untraceable()
    with torch.no_grad():
        net.conv.bias.fill_(1.0)  # y.sum() > 0, so the ReLU runs twice
    e = wrap(ModelSpec(net, (6, 6), ["a", "b"]), "untraceable")
    with pytest.warns(RuntimeWarning):
        g = build_graph(e.model, (3, 6, 6), "untraceable")
    assert not g.traced
    x = torch.rand(2, 3, 6, 6)
    _, acts = capture(e.model, g, ["act", "act#2"], x)
    cnt = CallCounter(e.model, ["net.fc"])
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error")
            a1 = TruncatedModel(e.model, g, "act")(x)
            a2 = TruncatedModel(e.model, g, "act#2")(x)
    finally:
        cnt.remove()
    assert torch.equal(a1, acts["act"]) and torch.equal(a2, acts["act#2"])
    assert not torch.equal(a1, a2)
    assert cnt.calls["net.fc"] == 0
    assert not any(m._forward_hooks for m in e.model.modules())


class InplaceMid(nn.Module):
    """``y = conv1(x); y.relu_(); z = conv2(y)``: the in-place op's result is unused, yet it
    changes what conv2 reads, so truncating at conv2 must keep it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        y.relu_()
        z = self.conv2(y)
        return self.fc(z.mean(dim=(2, 3)))


def test_truncated_keeps_inplace_op_on_kept_path():
    torch.manual_seed(3)
    e = wrap(ModelSpec(InplaceMid(), (5, 5), ["a", "b"]), "inplace")
    g = build_graph(e.model, (3, 5, 5), "inplace")
    x = torch.rand(2, 3, 5, 5) - 0.5
    with torch.no_grad():
        a = TruncatedModel(e.model, g, "conv2")(x)
        net = e.model.net
        want = net.conv2(torch.relu(net.conv1(x)))
    assert torch.allclose(a, want)
    assert not torch.allclose(net.conv2(net.conv1(x)), want)  # the ReLU matters here


def test_truncated_input_unknown_and_cache(r20, cifar_x):
    e, g = r20
    assert torch.equal(TruncatedModel(e.model, g, "input")(cifar_x[:1]), cifar_x[:1])
    with pytest.raises(AEVisError):
        TruncatedModel(e.model, g, "nope")
    assert get_truncated(e.model, g, "layer1.0.add") is get_truncated(e.model, g, "layer1.0.add")


# -- activation maps ---------------------------------------------------------------------------


def test_activation_maps_equal_hook(r20, cifar_x):
    e, g = r20
    got: list[torch.Tensor] = []
    h = e.model.get_submodule("net.layer3.0.relu2").register_forward_hook(
        lambda m, a, o: got.append(o.detach().clone()))
    try:
        with torch.no_grad():
            logits = e.model(cifar_x)
    finally:
        h.remove()
    maps = activation_maps(e, g, "layer3.0.relu2", 7, cifar_x, batch_size=4)
    assert maps.dtype == np.float32 and maps.shape == (6, 8, 8)
    np.testing.assert_allclose(maps, got[0][:, 7].numpy(), rtol=0, atol=1e-6)
    vec = activation_maps(e, g, "linear", 3, cifar_x)
    assert vec.shape == (6, 1, 1)
    np.testing.assert_allclose(vec[:, 0, 0], logits[:, 3].numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(AEVisError):
        activation_maps(e, g, "layer3.0.relu2", 64, cifar_x)

    top = top_activating(e, g, "layer3.0.relu2", 7, cifar_x, k=3)
    assert list(top) == list(np.argsort(-maps.reshape(6, -1).mean(1), kind="stable")[:3])
    topm = top_activating(e, g, "layer3.0.relu2", 7, cifar_x, k=10, by="max")
    assert list(topm) == list(np.argsort(-maps.reshape(6, -1).max(1), kind="stable"))


def test_top_patches_inside_image(r20, cifar_x):
    e, g = r20
    assert default_patch_size((32, 32), (8, 8)) == 16
    assert default_patch_size((32, 32), (32, 32)) == 8
    assert default_patch_size((32, 32), (1, 1)) == 32
    patches = top_patches(e, g, "layer3.0.relu2", 7, cifar_x, k=4)
    maps = activation_maps(e, g, "layer3.0.relu2", 7, cifar_x)
    assert [p.image_index for p in patches] == list(np.argsort(-maps.reshape(6, -1).max(1), kind="stable")[:4])
    for i, (top, left, bottom, right), crop in patches:
        assert 0 <= top < bottom <= 32 and 0 <= left < right <= 32
        assert (bottom - top, right - left) == (16, 16) and crop.dtype == np.uint8
        want = np.rint(cifar_x[i].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)[top:bottom, left:right]
        assert np.array_equal(crop, want)
    big = top_patches(e, g, "layer1.0.relu2", 0, cifar_x, k=2, patch_size=100)
    assert all(p.box == (0, 0, 32, 32) and p.crop.shape == (32, 32, 3) for p in big)


# -- occlusion sensitivity ---------------------------------------------------------------------


def _expected(img: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """Independent discrepancy of RegionSum with a zero fill: drop = red sum of region ∩ patch."""
    region = np.zeros((16, 16), bool)
    region[RegionSum.REGION] = True
    acc = np.zeros((16, 16))
    cnt = np.zeros((16, 16))
    for y in occluder_positions(16, patch, stride):
        for x in occluder_positions(16, patch, stride):
            cover = np.zeros((16, 16), bool)
            cover[y:y + patch, x:x + patch] = True
            acc[cover] += img[0][cover & region].sum()
            cnt[cover] += 1
    return np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)  # stride > patch: gaps stay 0


def test_occluder_positions():
    assert occluder_positions(16, 4, 4) == [0, 4, 8, 12]
    assert occluder_positions(16, 3, 5) == [0, 5, 10, 13]
    assert occluder_positions(8, 20, 2) == [0]


def test_discrepancy_exact_on_region_sum(toy):
    e, g = toy
    ones = torch.ones(3, 16, 16)
    d = discrepancy_map(e, g, "conv", 0, ones, patch=4, stride=4, fill="zero")
    want = np.zeros((16, 16), np.float32)
    want[RegionSum.REGION] = 16.0  # the one occluder on the region removes all 16 ones
    assert d.shape == (16, 16) and d.dtype == np.float32
    np.testing.assert_array_equal(d, want)

    torch.manual_seed(1)
    img = torch.rand(3, 16, 16) * 0.9 + 0.1
    for patch, stride in [(4, 2), (3, 5), (6, 1)]:
        d = discrepancy_map(e, g, "conv", 0, img, patch=patch, stride=stride, fill="zero", batch_size=7)
        exp = _expected(img.numpy(), patch, stride)
        np.testing.assert_allclose(d, exp, rtol=1e-5, atol=1e-5)
        assert np.all(d[exp > 0] > 0)
        if stride <= patch:
            assert np.all(d[RegionSum.REGION] > 0)  # every region pixel is occluded somewhere
        # a pixel whose every occluder misses the region: exactly zero
        far = exp == 0
        assert far.any() and np.all(d[far] == 0)
        # the ReLU after the conv does not change a positive feature
        np.testing.assert_allclose(discrepancy_map(e, g, "act", 0, img, patch=patch, stride=stride,
                                                   fill="zero"), d, rtol=1e-6, atol=1e-6)


def test_discrepancy_fills_reduce_finite(toy, r20, cifar_x):
    e, g = toy
    torch.manual_seed(2)
    img = torch.rand(3, 16, 16)
    for fill in ("mean", "zero", "blur"):
        for reduce in ("sum", "max"):
            d = discrepancy_map(e, g, "conv", 0, img, patch=5, stride=3, fill=fill, reduce=reduce)
            assert d.shape == (16, 16) and np.isfinite(d).all()
            assert np.all(d[12:, 12:] == 0)  # occluders down there never touch the region
    with pytest.raises(AEVisError):
        discrepancy_map(e, g, "conv", 0, img, fill="noise")  # type: ignore[arg-type]
    er, gr = r20
    d = discrepancy_map(er, gr, "layer2.0.relu2", 3, cifar_x[0], patch=8, stride=4, fill="blur")
    assert d.shape == (32, 32) and np.isfinite(d).all() and np.abs(d).max() > 0


def test_progress_and_cancel(toy):
    e, g = toy
    img = torch.rand(3, 16, 16)
    seen: list[tuple[int, int]] = []
    d = discrepancy_map(e, g, "conv", 0, img, patch=4, stride=2, batch_size=10,
                        progress=lambda a, b: seen.append((a, b)))
    total = len(occluder_positions(16, 4, 2)) ** 2
    assert d is not None and total == 49
    assert [a for a, _ in seen] == [10, 20, 30, 40, 49] and {b for _, b in seen} == {49}

    polls = []
    seen.clear()

    def stop() -> bool:
        polls.append(1)
        return len(polls) > 2  # 1st poll before the base pass, 2nd before batch 1, stop at 3rd

    assert discrepancy_map(e, g, "conv", 0, img, patch=4, stride=2, batch_size=10,
                           progress=lambda a, b: seen.append((a, b)), should_stop=stop) is None
    assert seen == [(10, 49)]
    assert discrepancy_map(e, g, "conv", 0, img, should_stop=lambda: True) is None


def test_dim_unimportant_keeps_top_fraction():
    rng = np.random.default_rng(0)
    img = torch.rand(3, 10, 10)
    dmap = rng.random((10, 10)) + 0.01
    out = dim_unimportant(img, dmap, keep_fraction=0.2, dim=0.25)
    rgb = np.rint(img.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    top = dmap >= np.sort(dmap.ravel())[-20]
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8 and top.sum() == 20
    assert np.array_equal(out[top], rgb[top])
    assert np.array_equal(out[~top], np.rint(rgb[~top] * 0.25).astype(np.uint8))
    # non-positive discrepancies are never kept; uint8 HWC input works too
    out2 = dim_unimportant(rgb, np.zeros((10, 10)), keep_fraction=0.5, dim=0.0)
    assert not out2.any()
    top33 = dmap >= np.sort(dmap.ravel())[-math.ceil(0.33 * 100)]
    out3 = dim_unimportant(rgb, dmap, 0.33, 0.0)
    assert top33.sum() == 33 and np.array_equal(out3[top33], rgb[top33]) and not out3[~top33].any()
    with pytest.raises(AEVisError):
        dim_unimportant(img, np.zeros((5, 5)))
