"""Similarities and datapath statistics (datapath/similarity.py): exact values on hand-made data and toys,
hooks vs capture on ResNet-20; the diverging point is tested in test_diverge.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aevis_core.datapath.extract import Datapath, ExtractConfig, LayerDatapath
from aevis_core.datapath.similarity import (
    activation_similarity,
    cosine_rows,
    datapath_set_similarity,
    jaccard,
    layer_stats,
    mean_map_activation,
    mean_vector_similarity,
    set_similarity,
)
from aevis_core.errors import AEVisError

R20_LAYERS = ["conv1", "layer1.0.conv1", "layer2.1.bn2", "layer3.2.conv2", "linear"]


def noise_control(x: torch.Tensor, eps: float, seed: int, kind: str = "uniform") -> torch.Tensor:
    """x plus seeded uniform (or ±eps sign) noise, clipped to [0, 1]."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    d = (2 * u - 1) * eps if kind == "uniform" else torch.where(u < 0.5, -eps, eps)
    return (x + d).clamp(0, 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches: one intra-op thread is as fast and avoids spin-waiting on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def r20(resnet20, resnet20_graph, cifar_demo):
    g = resnet20_graph
    x = resnet20.preprocess_many(cifar_demo.images[:8])
    return resnet20, g, x


def const(*values: float) -> torch.Tensor:
    """(N, 1, 2, 2) toy images, image i filled with values[i]."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


# ---------------------------------------------------------------------------------------------- cosine

def test_cosine_rows_exact_and_zero_convention():
    s = cosine_rows(np.array([[1.0, 0.0], [0, 0], [0, 0], [1, 2]]), np.array([[1.0, 1.0], [0, 0], [3, 4], [-2, -4]]))
    assert np.allclose(s, [1 / math.sqrt(2), 1.0, 0.0, -1.0])
    with pytest.raises(AEVisError):
        cosine_rows(np.ones((2, 3)), np.ones((2, 4)))


def test_activation_similarity_exact_on_toy(toy):
    # conv1 = [x, 0.5 - x], relu1 = relu(conv1), add = [3 r0, r0 + 2 r1] per pixel (constant images)
    e, g = toy
    s = activation_similarity(e, g, const(1.0, 1.0), const(0.25, 0.0), ["conv1", "relu1", "add", "pool", "fc"])
    assert np.allclose(s["conv1"], [1 / math.sqrt(10), -1 / math.sqrt(5)])   # [1,-.5]·[.25,.25]; [1,-.5]·[0,.5]
    assert np.allclose(s["relu1"], [1 / math.sqrt(2), 0.0])                  # [1,0] vs [1,1]; [1,0] vs [0,1]
    assert np.allclose(s["add"], [2 / math.sqrt(5), 1 / math.sqrt(10)])      # [3,1] vs [1,1]; [3,1] vs [0,1]
    assert np.allclose(s["pool"], s["add"]) and np.allclose(s["fc"], s["add"])
    assert list(s) == ["conv1", "relu1", "add", "pool", "fc"] and s["relu1"].dtype == np.float64


def test_unpaired_set_similarity_exact_on_toy(toy):
    e, g = toy
    m = mean_map_activation(e, g, const(1.0, 0.25), ["relu1"], batch_size=1)
    assert np.allclose(m["relu1"], [0.625, 0.125])
    s = set_similarity(e, g, const(1.0, 0.25), const(0.0), ["relu1"])       # [5, 1] vs [0, 1]
    assert s["relu1"] == pytest.approx(1 / math.sqrt(26))
    assert mean_vector_similarity(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 1.0]])) == pytest.approx(
        1 / math.sqrt(2))


def test_activation_similarity_rejects_bad_input(toy):
    e, g = toy
    with pytest.raises(AEVisError):
        activation_similarity(e, g, const(1.0, 0.5), const(1.0), ["relu1"])
    with pytest.raises(AEVisError):
        activation_similarity(e, g, const(1.0), const(1.0), ["nope"])


def test_activation_similarity_matches_direct_hooks(r20):
    entry, g, x = r20
    xb = noise_control(x, 8 / 255, seed=3)
    sims = activation_similarity(entry, g, x, xb, R20_LAYERS, batch_size=3)
    net = entry.model.net
    for lid in R20_LAYERS:
        store: list[torch.Tensor] = []

        def keep(m: torch.nn.Module, i: object, o: torch.Tensor, store: list[torch.Tensor] = store) -> None:
            store.append(o.detach().clone())

        h = net.get_submodule(lid).register_forward_hook(keep)
        with torch.no_grad():
            entry.model(x)
            entry.model(xb)
        h.remove()
        a, b = (t.flatten(1).double() for t in store)
        ref = torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()
        assert np.allclose(sims[lid], ref, atol=1e-6), lid


def test_activation_similarity_batch_size_invariant(r20):
    entry, g, x = r20
    x = x[:5]
    xb = noise_control(x, 8 / 255, seed=1, kind="sign")
    s1 = activation_similarity(entry, g, x, xb, R20_LAYERS, batch_size=1)
    s2 = activation_similarity(entry, g, x, xb, R20_LAYERS, batch_size=2)
    s5 = activation_similarity(entry, g, x, xb, R20_LAYERS, batch_size=5)
    for k in R20_LAYERS:
        assert s1[k].shape == (5,)
        assert np.allclose(s1[k], s5[k], atol=1e-5) and np.allclose(s2[k], s5[k], atol=1e-5)


# ---------------------------------------------------------------------------------------------- datapaths

def test_jaccard():
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0
    assert jaccard({1}, set()) == 0.0
    assert jaccard([4, 5], (5, 4)) == 1.0


def hand_dp(crit: dict[str, list[int]], mean_act: dict[str, list[list[float]]]) -> Datapath:
    layers = {k: LayerDatapath(k, len(mean_act[k][0]), np.zeros(len(mean_act[k][0])), v) for k, v in crit.items()}
    ma = {k: np.asarray(v, dtype=np.float32) for k, v in mean_act.items()}
    n = len(next(iter(ma.values())))
    return Datapath("hand", ExtractConfig(), layers, np.zeros(n, dtype=np.int64), np.zeros((n, 2)),
                    {k: np.zeros_like(v) for k, v in ma.items()}, ma)


@pytest.fixture()
def hand_sets():
    normal = hand_dp({"a": [0, 2], "b": []}, {"a": [[1, 2, 3], [3, 2, 1]], "b": [[1, 1], [1, 1]]})
    adv = hand_dp({"a": [1, 2], "b": [0]}, {"a": [[0, 4, 1], [2, 2, 5]], "b": [[2, 0], [0, 0]]})
    target = hand_dp({"a": [1], "b": [0]}, {"a": [[0, 1, 0]], "b": [[5, 5]]})
    return {"normal": normal, "adversarial": adv, "target": target}


def test_layer_stats_exact(hand_sets):
    st = layer_stats(hand_sets)
    assert st.sets == ["normal", "adversarial", "target"] and list(st.layers) == ["a", "b"]
    a = st.layers["a"]
    assert a.n == 3 and a.critical["normal"] == [0, 2]
    assert a.jaccard[("normal", "adversarial")] == pytest.approx(1 / 3)
    assert a.jaccard[("normal", "target")] == 0.0 and a.jaccard[("adversarial", "target")] == pytest.approx(0.5)
    # own datapath: normal maps {0,2} -> mean(1,3,3,1) = 2; adversarial maps {1,2} -> mean(4,1,2,5) = 3
    assert a.own_activation == pytest.approx({"normal": 2.0, "adversarial": 3.0, "target": 1.0})
    assert a.activation["adversarial"]["normal"] == pytest.approx(2.0)   # mean(0,1,2,5)
    assert a.activation["normal"]["adversarial"] == pytest.approx(2.0)   # mean(2,3,2,1)
    assert np.allclose(a.map_activation["normal"], [2, 2, 2])
    assert np.allclose(a.map_activation["adversarial"], [1, 3, 3])
    assert np.allclose(a.diff, [1, -1, -1]) and a.diff_sets == ("normal", "adversarial")
    b = st.layers["b"]
    assert b.jaccard[("normal", "adversarial")] == 0.0 and b.jaccard[("adversarial", "target")] == 1.0
    assert math.isnan(b.own_activation["normal"])                        # empty datapath
    assert np.allclose(b.diff, [0, 1])
    d = json.loads(json.dumps(st.to_dict(), allow_nan=False))
    assert d["layers"]["b"]["own_activation"]["normal"] is None
    assert d["layers"]["a"]["jaccard"][0] == {"a": "normal", "b": "adversarial", "jaccard": 0.333333}
    assert d["layers"]["a"]["diff"] == [1.0, -1.0, -1.0]


def test_layer_stats_options_and_errors(hand_sets):
    st = layer_stats({"x": hand_sets["normal"], "y": hand_sets["target"]})
    assert st.diff_sets is None and st.layers["a"].diff is None
    st = layer_stats(hand_sets, diff=("target", "normal"), layers=["b"])
    assert list(st.layers) == ["b"] and np.allclose(st.layers["b"].diff, [4, 4])
    with pytest.raises(AEVisError):
        layer_stats(hand_sets, diff=("normal", "missing"))
    with pytest.raises(AEVisError):
        layer_stats({})
    bad = hand_dp({"a": [0]}, {"a": [[1.0, 2.0]]})
    with pytest.raises(AEVisError):
        layer_stats({"normal": hand_sets["normal"], "bad": bad}, layers=["a"])
    sim = datapath_set_similarity(hand_sets["normal"], hand_sets["target"])
    assert sim["b"] == pytest.approx(1.0) and sim["a"] == pytest.approx(2 / math.sqrt(12))
