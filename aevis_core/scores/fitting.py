"""Fit an adversarial scorer for a model on reference images, cached by content hash.

Clean-only fitting ("clean-tail" mode) needs no attack and is the fast default; with an
:class:`~aevis_core.attacks.AttackConfig` the scorer is fitted with the adversarial twins of the
reference images (logistic mode, Feinman et al. 2017), which is what the dashboard uses for the
attack being analysed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import torch

from aevis_core.attacks import AttackConfig, run_attack
from aevis_core.cache import ResultCache, content_key
from aevis_core.models.base import ModelEntry
from aevis_core.scores.scorer import AdversarialScorer


def fit_scorer(entry: ModelEntry, clean_x: torch.Tensor, clean_y: Sequence[int | None] | None = None,
               attack: AttackConfig | None = None, cache: ResultCache | None = None) -> AdversarialScorer:
    """Fit (or load from ``cache``) a scorer on ``clean_x`` (N, 3, H, W) in [0, 1].

    ``attack`` given: craft the reference images' adversarial twins with it (labels = ``clean_y``
    or the predictions) and fit the logistic combiner; None: clean-only fit.
    """
    key = content_key("scorer/v2", entry.model_id, clean_x, list(clean_y) if clean_y is not None else None,
                      asdict(attack) if attack is not None else None)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return AdversarialScorer.from_dict(hit)
    adv = None
    if attack is not None:
        pred = entry.predict(clean_x)[1]
        y = torch.tensor([int(p) if v is None else int(v) for v, p in
                          zip(clean_y if clean_y is not None else [None] * len(pred), pred.tolist(), strict=True)])
        adv = run_attack(entry.model, clean_x, y, attack)
    scorer = AdversarialScorer().fit(entry, clean_x, clean_y, adv_x=adv)
    if cache is not None:
        cache.put(key, scorer.to_dict())
    return scorer
