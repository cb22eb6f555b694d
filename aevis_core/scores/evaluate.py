"""Honest evaluation of the adversarial score: stratified folds, cross-fitting and ROC-AUC.

A scorer must never be evaluated on the images it was fitted on. :func:`cross_fit_scores` splits
the clean images into folds (stratified by class), fits on all folds but one (clean images plus
the adversarial examples crafted *from those images*) and scores the held-out fold's clean and
adversarial images; every image gets exactly one out-of-fold score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from aevis_core.errors import AEVisError
from aevis_core.scores.scorer import AdversarialScorer, ScoreConfig


def stratified_folds(labels: Sequence[int | None] | np.ndarray | None, n: int, folds: int = 2,
                     seed: int = 0, by: str = "image") -> np.ndarray:
    """Fold index (n,) in ``[0, folds)``.

    by="image": every class is spread evenly over the folds (unknown labels form one group);
    by="class": whole classes go to one fold (the held-out fold has classes never seen in
    fitting; the KDE then relies on its class-agnostic part). Seeded and deterministic.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise AEVisError(f"folds must be an integer >= 2, got {folds!r}")
    if n < folds:
        raise AEVisError(f"cannot split {n} images into {folds} folds")
    labs = np.full(n, -1, dtype=np.int64) if labels is None else np.array(
        [-1 if v is None else int(v) for v in labels], dtype=np.int64)
    if labs.shape != (n,):
        raise AEVisError(f"got {labs.size} labels for {n} images")
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.int64)
    classes = np.unique(labs)
    if by == "class":
        order = rng.permutation(classes)
        for i, c in enumerate(order):
            out[labs == c] = i % folds
        return out
    if by != "image":
        raise AEVisError(f"fold split must be 'image' or 'class', got {by!r}")
    offset = 0
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labs == c))
        out[idx] = (offset + np.arange(idx.size)) % folds
        offset += idx.size  # classes of odd size alternate which fold gets the extra image
    return out


def roc_auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC of scores, clean (``negative``) vs adversarial (``positive``); ties count 1/2.

    Equals the Mann-Whitney probability P(score(adv) > score(clean)).
    """
    neg, pos = np.asarray(negative, np.float64).ravel(), np.asarray(positive, np.float64).ravel()
    if neg.size == 0 or pos.size == 0:
        raise AEVisError("ROC-AUC needs at least one clean and one adversarial score")
    ranks = rankdata(np.concatenate([neg, pos]))
    u = ranks[neg.size:].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (neg.size * pos.size))


def cross_fit_scores(features: np.ndarray, logits: np.ndarray, adv_features: np.ndarray,
                     adv_logits: np.ndarray, labels: Sequence[int | None] | np.ndarray | None = None,
                     *, config: ScoreConfig | None = None, supervised: bool = True, folds: int = 2,
                     seed: int = 0, by: str = "image",
                     head: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold adversarial scores ``(clean (N,), adversarial (N,))``.

    features (N, D) / logits (N, K): clean images; adv_features / adv_logits (N, ...): paired
    adversarial images (``adv[i]`` crafted from clean image ``i``). For each fold, a scorer is
    fitted on the other folds' clean images (and, when ``supervised``, their adversarial
    examples) and scores the fold's clean and adversarial images. ``labels`` stratify the folds
    and name the clean images' KDE classes. See :func:`stratified_folds` for ``by``.
    """
    f = np.asarray(features)
    fa = np.asarray(adv_features)
    if fa.shape[0] != f.shape[0]:
        raise AEVisError(f"cross-fitting needs paired clean/adversarial images, got {f.shape[0]} and {fa.shape[0]}")
    z, za = np.asarray(logits), np.asarray(adv_logits)
    fold = stratified_folds(labels, f.shape[0], folds, seed, by)
    lab = None if labels is None else list(labels)
    clean_s = np.empty(f.shape[0])
    adv_s = np.empty(f.shape[0])
    for k in range(folds):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        scorer = AdversarialScorer(config)
        scorer.fit_features(f[tr], z[tr], None if lab is None else [lab[i] for i in tr],
                            fa[tr] if supervised else None, za[tr] if supervised else None,
                            head=head, paired=True)
        clean_s[te] = scorer.score_features(f[te], z[te])
        adv_s[te] = scorer.score_features(fa[te], za[te])
    return clean_s, adv_s
