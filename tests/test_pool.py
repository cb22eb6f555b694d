"""The image pool: same results as attacking, predicting and cross-fitting scorers by hand; bounded
batches; the two-stage API (``scores=False`` + ``add_scores``); the shared model untouched."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from aevis_core.attacks import AttackConfig, quantise, run_attack
from aevis_core.data import ImageSet
from aevis_core.errors import AEVisError
from aevis_core.models.base import ModelSpec, wrap
from aevis_core.pool import POOL_BATCH, add_scores, build_pool
from aevis_core.scores import AdversarialScorer, stratified_folds

ATTACK = AttackConfig(method="mifgsm", eps=8 / 255, steps=3)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One thread: small CPU convolutions with several threads crawl on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small(cifar_demo: ImageSet) -> ImageSet:
    """12 CIFAR demo images of 3 classes (4 each), so both folds hold every class."""
    rows: list[int] = []
    for c in (0, 1, 8):
        rows += [i for i in range(100) if cifar_demo.labels[i] == c][:4]
    return cifar_demo.subset(rows)


@pytest.fixture(scope="module")
def pool(resnet20: Any, small: ImageSet) -> Any:
    return build_pool(resnet20, small, ATTACK)


def _by_hand(entry: Any, images: ImageSet) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """The pool computed the plain way: quantise, predict, attack (plain layout, batch 32),
    predict, and per fold a scorer fitted on the other fold's pixels."""
    x = entry.preprocess_many(images.images)
    x8 = quantise(x, x, None)[1].float() / 255.0
    pred = entry.predict(x8)[1]
    y = torch.tensor([int(p) if v is None else int(v) for v, p in zip(images.labels, pred.tolist(), strict=True)])
    adv8 = quantise(run_attack(entry.model, x8, y, ATTACK), x8, ATTACK.eps)[0].float() / 255.0
    n = x8.shape[0]
    s_clean, s_adv = np.zeros(n), np.zeros(n)
    fold = stratified_folds(images.labels, n, 2, seed=ATTACK.seed)
    for k in (0, 1):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        sc = AdversarialScorer().fit(entry, x8[tr], [images.labels[i] for i in tr], adv_x=adv8[tr])
        s_clean[te], s_adv[te] = sc.score(entry, x8[te]), sc.score(entry, adv8[te])
    return x8, adv8, s_clean, s_adv


def test_pool_equals_the_plain_computation(resnet20: Any, small: ImageSet, pool: Any) -> None:
    x8, adv8, s_clean, s_adv = _by_hand(resnet20, small)
    n = len(small)
    pix = torch.from_numpy(pool.pixels).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(pix[:n], x8)
    # the NHWC attack copy rounds differently, which flips the sign of a few near-zero
    # gradients: almost all 8-bit values are equal, all within eps of the clean ones
    diff = (pix[n:] - adv8).abs() * 255
    assert float((diff > 0.5).float().mean()) < 0.01
    assert float(((pix[n:] - x8).abs() * 255).max()) <= math.floor(ATTACK.eps * 255) + 1e-4
    probs, pred = resnet20.predict(pix)
    assert [it.pred for it in pool.items] == pred.tolist()
    np.testing.assert_allclose([it.prob for it in pool.items], probs[torch.arange(2 * n), pred].numpy(),
                               rtol=1e-5, atol=1e-6)
    # scores out-of-fold, from the pool's own features: those of the plain computation when the
    # adversarial pixels are equal (compare on the pool's pixels to isolate the scoring)
    fold = stratified_folds(small.labels, n, 2, seed=ATTACK.seed)
    for k in (0, 1):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        sc = AdversarialScorer().fit(resnet20, pix[tr], [small.labels[i] for i in tr], adv_x=pix[n + tr])
        np.testing.assert_allclose([pool.items[i].score for i in te], sc.score(resnet20, pix[te]), atol=1e-6)
        np.testing.assert_allclose([pool.items[n + i].score for i in te], sc.score(resnet20, pix[n + te]),
                                   atol=1e-6)
    agree = np.mean(np.abs(np.array([it.score for it in pool.items]) - np.concatenate([s_clean, s_adv])) < 0.05)
    assert agree > 0.9
    assert [it.id for it in pool.items[n:]] == [f"{i}~adv" for i in small.ids]
    assert pool.attack == ATTACK.to_dict() and pool.scored


def test_two_stages_give_the_same_pool(resnet20: Any, small: ImageSet, pool: Any) -> None:
    stages: list[str] = []
    fast = build_pool(resnet20, small, ATTACK, progress=lambda d, t, s: stages.append(s), scores=False)
    assert not fast.scored and all(math.isnan(it.score) for it in fast.items)
    assert "scoring" not in stages and stages[0] == "attacking" and stages[-1] == "done"
    np.testing.assert_array_equal(fast.pixels, pool.pixels)
    assert [it.pred for it in fast.items] == [it.pred for it in pool.items]
    assert add_scores(fast) is fast and fast.scored
    assert [it.score for it in fast.items] == [it.score for it in pool.items]


def test_batches_are_bounded_and_do_not_change_results(resnet20: Any, small: ImageSet, pool: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = run_attack

    def spy(model: nn.Module, x: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        seen.append(args[1].batch_size)
        return real(model, x, *args, **kw)

    monkeypatch.setattr("aevis_core.pool.run_attack", spy)
    other = build_pool(resnet20, small, replace(ATTACK, batch_size=64), batch_size=5)
    assert seen == [5]
    np.testing.assert_array_equal(other.pixels, pool.pixels)
    np.testing.assert_allclose([it.score for it in other.items], [it.score for it in pool.items], atol=1e-6)
    assert POOL_BATCH <= 8


def test_shared_model_is_left_untouched(resnet20: Any, small: ImageSet) -> None:
    before = {k: v.clone() for k, v in resnet20.model.state_dict().items()}
    build_pool(resnet20, small.subset(range(4)), ATTACK, scores=False)
    after = resnet20.model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].is_contiguous() for k in before)
    assert not any(p.requires_grad for p in resnet20.model.parameters())


class _NoLinearHead(nn.Module):
    """Logits from a 1x1 convolution and a mean: no nn.Linear, so no penultimate features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def test_model_without_linear_head_pools_but_cannot_be_scored(small: ImageSet) -> None:
    entry = wrap(ModelSpec(_NoLinearHead(), (32, 32), ["a", "b", "c"]), "conv-head")
    images = ImageSet("x", small.images[:4], small.ids[:4], [None] * 4)
    p = build_pool(entry, images, ATTACK, scores=False)
    probs, pred = entry.predict(torch.from_numpy(p.pixels).permute(0, 3, 1, 2).float() / 255.0)
    assert [it.pred for it in p.items] == pred.tolist() and p.features is None
    with pytest.raises(AEVisError, match="cannot be scored"):
        add_scores(p)


def test_empty_set_gives_an_empty_pool(resnet20: Any) -> None:
    p = build_pool(resnet20, ImageSet("empty"), ATTACK)
    assert p.items == [] and p.pixels.shape == (0, 32, 32, 3) and p.scored


def test_small_sets_are_scored_leave_one_out_or_left_unscored(resnet20: Any, cifar_demo: ImageSet) -> None:
    """4 images: 2 folds of 2 cannot fit a scorer (it needs 3) -> leave-one-out, still out of fold;
    3 images: nothing can be fitted out of fold -> the pool is built, its scores are NaN."""
    from aevis_core.attacks import AttackConfig
    from aevis_core.pool import build_pool

    cfg = AttackConfig(eps=8 / 255, steps=2)
    four = build_pool(resnet20, cifar_demo.subset([0, 10, 20, 30]), cfg)
    assert len(four.items) == 8 and all(np.isfinite(it.score) for it in four.items)
    three = build_pool(resnet20, cifar_demo.subset([0, 10, 20]), cfg)
    assert len(three.items) == 6 and all(np.isnan(it.score) for it in three.items)
