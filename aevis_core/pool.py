"""The image pool a dashboard session works on: normal images, their adversarial twins, scores.

``build_pool`` preprocesses a set, attacks it (MI-FGSM by default), quantises the adversarial
images to 8 bits exactly as stored PNGs are (:func:`aevis_core.attacks.quantise`), predicts both
and scores both with an adversarial scorer fitted with the same attack on the normal images
(out-of-fold: 2-fold cross-fitting, so no image is scored by a scorer that saw it). Everything
is plain arrays, cacheable by content key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from aevis_core.attacks import AttackConfig, quantise, run_attack
from aevis_core.data import ImageSet
from aevis_core.models.base import ModelEntry
from aevis_core.scores import AdversarialScorer, stratified_folds

Progress = Callable[[int, int, str], None]


@dataclass
class PoolItem:
    """One image of the pool (normal or adversarial)."""

    id: str
    kind: str              # "normal" | "adversarial"
    source: str            # id of the normal image it comes from (itself for normal ones)
    label: int | None
    pred: int
    prob: float
    score: float


@dataclass
class Pool:
    """Images (N, H, W, 3) uint8 at model input size, in the order of ``items``."""

    model_id: str
    attack: dict[str, object]
    items: list[PoolItem]
    pixels: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def index(self) -> dict[str, int]:
        """Item id -> row."""
        return {it.id: i for i, it in enumerate(self.items)}

    def tensor(self, ids: list[str]) -> torch.Tensor:
        """(len(ids), 3, H, W) float pixels in [0, 1] of the given items."""
        idx = self.index()
        rows = [idx[i] for i in ids]
        return torch.from_numpy(self.pixels[rows]).permute(0, 3, 1, 2).float() / 255.0


def _scores(entry: ModelEntry, x: torch.Tensor, adv: torch.Tensor, labels: list[int | None],
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold scores of normal and adversarial images (2-fold cross-fitting)."""
    n = x.shape[0]
    s_clean = np.zeros(n)
    s_adv = np.zeros(n)
    fold_of = stratified_folds(labels, n, 2, seed=seed) if n >= 4 else np.zeros(n, dtype=np.int64)
    for f in np.unique(fold_of):
        test = np.flatnonzero(fold_of == f)
        train = np.flatnonzero(fold_of != f)
        if train.size == 0:
            train = test
        scorer = AdversarialScorer().fit(entry, x[train], [labels[i] for i in train], adv_x=adv[train])
        s_clean[test] = scorer.score(entry, x[test])
        s_adv[test] = scorer.score(entry, adv[test])
    return s_clean, s_adv


def build_pool(entry: ModelEntry, images: ImageSet, attack: AttackConfig,
               progress: Progress | None = None, source: ModelEntry | None = None) -> Pool:
    """Normal + adversarial pool of ``images`` for ``entry`` (attack crafted on ``source`` or ``entry``)."""
    report = progress or (lambda d, t, s: None)
    x = entry.preprocess_many(images.images)
    x8 = quantise(x, x, None)[1].float() / 255.0
    probs, pred = entry.predict(x8)
    y = torch.tensor([int(p) if lab is None else int(lab) for lab, p in zip(images.labels, pred.tolist(), strict=True)])
    n = x.shape[0]
    crafter = source or entry
    adv = run_attack(crafter.model, x8, y, attack, progress=lambda d, t: report(d, t + t // 4, "attacking"))
    adv8 = quantise(adv, x8, attack.eps if attack.norm == "linf" else None)[0].float() / 255.0
    aprobs, apred = entry.predict(adv8)
    report(n, n + n // 4, "scoring")
    s_clean, s_adv = _scores(entry, x8, adv8, list(images.labels), attack.seed)
    items = []
    for i in range(n):
        items.append(PoolItem(images.ids[i], "normal", images.ids[i], images.labels[i], int(pred[i]),
                              float(probs[i, pred[i]]), float(s_clean[i])))
    for i in range(n):
        items.append(PoolItem(f"{images.ids[i]}~adv", "adversarial", images.ids[i], images.labels[i],
                              int(apred[i]), float(aprobs[i, apred[i]]), float(s_adv[i])))
    pix = torch.cat([x8, adv8]).mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    report(n + n // 4, n + n // 4, "done")
    return Pool(entry.model_id, attack.to_dict(), items, np.ascontiguousarray(pix), list(entry.class_names))
