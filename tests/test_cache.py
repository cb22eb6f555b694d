"""Result cache: content keys change with every input that matters; cached extraction is reused."""

from __future__ import annotations

import numpy as np
import torch

from aevis_core.cache import ResultCache, content_key, tensor_hash
from aevis_core.datapath.extract import ExtractConfig
from aevis_core.datapath.service import cached_datapath
from aevis_core.graph import build_graph


def test_content_key_sensitivity():
    x = torch.zeros(2, 3, 4, 4)
    base = content_key("dp", "m@1", x, {"method": "qp"})
    assert base == content_key("dp", "m@1", x.clone(), {"method": "qp"})
    y = x.clone()
    y[1, 2, 3, 3] = 1 / 255
    assert base != content_key("dp", "m@1", y, {"method": "qp"})
    assert base != content_key("dp", "m@2", x, {"method": "qp"})
    assert base != content_key("dp", "m@1", x, {"method": "act_topk"})
    assert tensor_hash(x) != tensor_hash(x.double())


def test_get_or_compute(tmp_path):
    cache = ResultCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"z": np.arange(3)}

    v1, hit1 = cache.get_or_compute("k", compute)
    v2, hit2 = cache.get_or_compute("k", compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert np.array_equal(v1["z"], v2["z"])
    cache.close()
    reopened = ResultCache(tmp_path)  # another process / a restarted server sees the entry
    assert np.array_equal(reopened.get("k")["z"], np.arange(3))


def test_cached_datapath_reused(tmp_path, resnet20, cifar_demo):
    g = build_graph(resnet20.model, (3, 32, 32), "r20")
    x = resnet20.preprocess_many(cifar_demo.images[:4])
    cache = ResultCache(tmp_path)
    layers = ["layer3.2.relu2", "linear"]
    dp1, hit1 = cached_datapath(resnet20, g, x, ExtractConfig(), cache, layers)
    dp2, hit2 = cached_datapath(resnet20, g, x, ExtractConfig(), cache, layers)
    dp3, hit3 = cached_datapath(resnet20, g, x, ExtractConfig(score="prob"), cache, layers)
    assert (hit1, hit2, hit3) == (False, True, False)
    assert dp1.layers["linear"].critical == dp2.layers["linear"].critical
    assert np.array_equal(dp1.q["linear"], dp2.q["linear"])
