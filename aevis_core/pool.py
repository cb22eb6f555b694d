"""The image pool a dashboard session works on: normal images, their adversarial twins, scores.

``build_pool`` preprocesses a set, attacks it (MI-FGSM by default), quantises the adversarial
images to 8 bits exactly as stored PNGs are (:func:`aevis_core.attacks.quantise`), predicts both
and scores both with an adversarial scorer fitted with the same attack on the normal images
(out-of-fold: 2-fold cross-fitting, so no image is scored by a scorer that saw it). Everything
is plain arrays, cacheable by content key.

Cost (EfficientNet-Lite0, 62 images, 10-step MI-FGSM, ``bench/first_start.py``): the attack's
10 forward + backward passes per image are nearly all of it. One no-grad forward pass per
quantised image (normal and adversarial) gives the prediction *and* the penultimate features,
which the out-of-fold scorers are fitted on and score from (``AdversarialScorer.fit_features``):
no image is run through the model twice. Every pass is bounded by ``batch_size`` images, so the
peak memory is that of one batch's backward pass, whatever the set size.

Two stages for callers that want thumbnails first: ``build_pool(..., scores=False)`` returns a
complete pool whose ``score`` fields are NaN (and ``scored`` False), and :func:`add_scores` fills
them in place from the features kept on the pool (no model pass). ``scores=True`` (the default)
does both.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from aevis_core.attacks import AttackConfig, quantise, run_attack
from aevis_core.data import ImageSet
from aevis_core.errors import AEVisError
from aevis_core.models.base import ModelEntry
from aevis_core.scores import AdversarialScorer, find_classifier, penultimate_features, stratified_folds

Progress = Callable[[int, int, str], None]
log = logging.getLogger(__name__)

#: Images per forward/backward pass while building a pool. The attack's backward pass keeps
#: every activation of the batch, ~90 MB per 224² EfficientNet-Lite0 image (measured), so 4
#: images add ~0.4 GB to the ~0.3 GB of torch and the model; larger batches are no faster on
#: 2 CPU cores (NHWC, 1-2 threads: the same CPU time per image from 4 to 16).
POOL_BATCH = 4


@dataclass
class PoolItem:
    """One image of the pool (normal or adversarial)."""

    id: str
    kind: str              # "normal" | "adversarial"
    source: str            # id of the normal image it comes from (itself for normal ones)
    label: int | None
    pred: int
    prob: float
    score: float           # NaN until scored (see Pool.scored)


@dataclass
class Pool:
    """Images (N, H, W, 3) uint8 at model input size, in the order of ``items``.

    ``features`` / ``logits``: penultimate features (N, D) float32 and logits (N, K) of the
    items, kept so that :func:`add_scores` needs no model pass (None when the model has no
    linear classifier head; such a pool cannot be scored). ``scored``: scores are filled in.
    """

    model_id: str
    attack: dict[str, object]
    items: list[PoolItem]
    pixels: np.ndarray
    class_names: list[str] = field(default_factory=list)
    features: np.ndarray | None = None
    logits: np.ndarray | None = None
    scored: bool = True

    def index(self) -> dict[str, int]:
        """Item id -> row."""
        return {it.id: i for i, it in enumerate(self.items)}

    def tensor(self, ids: list[str]) -> torch.Tensor:
        """(len(ids), 3, H, W) float pixels in [0, 1] of the given items."""
        idx = self.index()
        rows = [idx[i] for i in ids]
        return torch.from_numpy(self.pixels[rows]).permute(0, 3, 1, 2).float() / 255.0


def _forward(entry: ModelEntry, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(penultimate features (N, D) or None, logits (N, K)) of pixels ``x`` in one no-grad pass.

    Features come from the classifier head's input (:func:`penultimate_features`); a model
    without a linear head gets None and plain logits (the pool then cannot be scored).
    """
    if x.shape[0] == 0:
        return None, np.zeros((0, entry.num_classes), dtype=np.float32)
    try:
        find_classifier(entry.model, entry.num_classes)
    except AEVisError as exc:
        log.warning("pool: no penultimate features (%s); predictions only", exc)
    else:
        return penultimate_features(entry, x, batch_size)
    with torch.inference_mode():
        device = next(entry.model.parameters()).device
        logits = [entry.model(x[i:i + batch_size].to(device)).float().cpu().numpy()
                  for i in range(0, x.shape[0], batch_size)]
    return None, np.concatenate(logits)


def _channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """A channels-last copy of ``model`` for the attack (the shared model is left untouched).

    Same function; oneDNN's NHWC convolutions need ~30 % less CPU per forward + backward pass of
    EfficientNet-Lite0 (depthwise convolutions), float round-off aside. The original model when
    it cannot be copied.
    """
    try:
        return copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    except Exception as exc:  # noqa: BLE001 - user models may refuse deepcopy; plain layout then
        log.info("pool: attacking with the model as is (no channels-last copy: %s)", exc)
        return model


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (N, K) of float logits, computed like ``torch.softmax`` in float32."""
    t = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    return torch.softmax(t, dim=1).numpy()


def pool_scores(features: np.ndarray, logits: np.ndarray, n: int, labels: list[int | None],
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold scores (clean (n,), adversarial (n,)) from features of the 2n pool items (NaN when
    even leave-one-out leaves too few images to fit a scorer).

    features (2n, D) / logits (2n, K): normal items first, then their adversarial twins in the
    same order. 2-fold cross-fitting stratified by class (leave-one-out when a fold would be too small): each fold is
    scored by a logistic KD + entropy scorer fitted on the other fold's normal images and their
    adversarial twins (Feinman et al. 2017), never on itself.
    """
    f, z, fa, za = features[:n], logits[:n], features[n:], logits[n:]
    schemes = [stratified_folds(labels, n, 2, seed=seed)] if n >= 4 else []
    for fold_of in [*schemes, np.arange(n)]:  # too few images per fold: leave-one-out instead
        s_clean = np.full(n, np.nan)
        s_adv = np.full(n, np.nan)
        try:
            for k in np.unique(fold_of):
                test = np.flatnonzero(fold_of == k)
                train = np.flatnonzero(fold_of != k)  # never the scored images themselves
                scorer = AdversarialScorer().fit_features(f[train], z[train], [labels[i] for i in train],
                                                          fa[train], za[train], paired=True)
                s_clean[test] = scorer.score_features(f[test], z[test])
                s_adv[test] = scorer.score_features(fa[test], za[test])
            return s_clean, s_adv
        except AEVisError as exc:
            log.info("adversarial scores: %s", exc)
    log.warning("adversarial scores left empty: %d images are too few to fit a scorer out of fold", n)
    return np.full(n, np.nan), np.full(n, np.nan)


def add_scores(pool: Pool, seed: int | None = None) -> Pool:
    """Fill the items' out-of-fold adversarial scores in place (see :func:`pool_scores`); returns it.

    Uses the features kept on the pool (no model pass, well under a second for the demo).
    ``seed`` defaults to the attack's seed, as :func:`build_pool` uses.
    """
    if not pool.items:
        pool.scored = True
        return pool
    if pool.features is None or pool.logits is None:
        raise AEVisError("this pool has no penultimate features (model without a linear "
                         "classifier head): it cannot be scored")
    n = len(pool.items) // 2
    labels = [it.label for it in pool.items[:n]]
    s = int(pool.attack.get("seed", 0)) if seed is None else seed  # type: ignore[call-overload]
    s_clean, s_adv = pool_scores(pool.features, pool.logits, n, labels, s)
    for i, v in enumerate(np.concatenate([s_clean, s_adv])):
        pool.items[i].score = float(v)
    pool.scored = True
    return pool


def build_pool(entry: ModelEntry, images: ImageSet, attack: AttackConfig,
               progress: Progress | None = None, source: ModelEntry | None = None, *,
               scores: bool = True, batch_size: int = POOL_BATCH) -> Pool:
    """Normal + adversarial pool of ``images`` for ``entry`` (attack crafted on ``source`` or ``entry``).

    ``progress(done, total, stage)`` with stage ``"attacking"`` (done = images attacked),
    ``"scoring"`` and ``"done"``. ``batch_size`` bounds every model pass (attack batches are
    ``min(attack.batch_size, batch_size)``; results do not depend on it). ``scores=False``: skip
    the scoring stage (scores NaN, ``pool.scored`` False; fill them with :func:`add_scores`).
    """
    report = progress or (lambda d, t, s: None)
    t0 = time.perf_counter()
    n = len(images.images)
    total = n + n // 4
    x = entry.preprocess_many(images.images)
    clean8 = quantise(x, x, None)[1]  # uint8: float copies live only while a pass needs them
    del x
    feats, logits = _forward(entry, clean8.float() / 255.0, batch_size)
    pred = logits.argmax(1)
    y = torch.tensor([int(p) if lab is None else int(lab) for lab, p in zip(images.labels, pred.tolist(), strict=True)],
                     dtype=torch.long)
    crafter = _channels_last((source or entry).model)
    cfg = replace(attack, batch_size=max(1, min(attack.batch_size, batch_size)))
    report(0, total, "attacking")
    x8 = (clean8.float() / 255.0).contiguous(memory_format=torch.channels_last)
    adv = run_attack(crafter, x8, y, cfg, progress=lambda d, t: report(d, total, "attacking"))
    del crafter
    adv8 = quantise(adv, x8, attack.eps if attack.norm == "linf" else None)[0]
    del adv, x8
    t_attack = time.perf_counter()
    afeats, alogits = _forward(entry, adv8.float() / 255.0, batch_size)
    all_logits = np.concatenate([logits, alogits])
    all_feats = None if feats is None or afeats is None else np.concatenate([feats, afeats])
    preds = all_logits.argmax(1)
    probs = _softmax(all_logits)[np.arange(2 * n), preds]
    pix = torch.cat([clean8, adv8]).permute(0, 2, 3, 1).numpy()
    items = [PoolItem(images.ids[i], "normal", images.ids[i], images.labels[i], int(preds[i]),
                      float(probs[i]), math.nan) for i in range(n)]
    items += [PoolItem(f"{images.ids[i]}~adv", "adversarial", images.ids[i], images.labels[i],
                       int(preds[n + i]), float(probs[n + i]), math.nan) for i in range(n)]
    pool = Pool(entry.model_id, attack.to_dict(), items, np.ascontiguousarray(pix),
                list(entry.class_names), all_feats, all_logits, scored=False)
    if scores:
        report(n, total, "scoring")
        add_scores(pool, attack.seed)
    report(total, total, "done")
    log.info("pool of %d images: preprocessing + attack %.1f s, predictions + scores %.2f s", n,
             t_attack - t0, time.perf_counter() - t_attack)
    return pool
