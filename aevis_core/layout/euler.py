"""Feature-map level: Euler-diagram regions of 2–4 datapaths and K-means clusters inside them.

Liu et al. (VAST 2018, Sec. 5.2) compare the critical feature maps of a layer across image sets
with an Euler diagram; every *region* is the set of maps critical for exactly a given combination
of sets (``A only``, ``A∩B``, …), and inside a region similar maps are clustered (K-means) so a
layer with hundreds of maps stays readable.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

INTERSECT = "∩"


@dataclass
class Region:
    """Maps critical for exactly the sets flagged in ``pattern`` (one bool per set, input order)."""

    pattern: tuple[bool, ...]
    label: str
    maps: list[int] = field(default_factory=list)
    sets: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """Number of maps in the region."""
        return len(self.maps)


def region_label(names: Sequence[str], pattern: Sequence[bool]) -> str:
    """``"A only"`` for a single set, ``"A∩B"`` for several (the maps of exactly those sets)."""
    inside = [n for n, b in zip(names, pattern, strict=True) if b]
    if not inside:
        return "none"
    return f"{inside[0]} only" if len(inside) == 1 else INTERSECT.join(inside)


def region_patterns(k: int) -> list[tuple[bool, ...]]:
    """All 2^k − 1 non-empty membership patterns in the fixed display order.

    Order: more sets first (the all-sets intersection leads, single-set regions come last); among
    patterns with the same number of sets, those containing earlier sets first (lexicographic with
    True before False). For k = 2: ``A∩B, A only, B only``; k = 3: ``A∩B∩C, A∩B, A∩C, B∩C, A only,
    B only, C only``.
    """
    pats = [p for p in itertools.product((True, False), repeat=k) if any(p)]
    return sorted(pats, key=lambda p: (-sum(p), tuple(not b for b in p)))


def euler_regions(critical: Mapping[str, Iterable[int]], n: int) -> list[Region]:
    """Non-empty Euler regions of 2–4 (or 1) critical-map sets of a layer with ``n`` maps.

    ``critical``: set name → critical map indices in [0, n). Only maps critical in at least one set
    appear; empty regions are dropped; regions follow :func:`region_patterns`, maps ascending.
    """
    names = list(critical)
    if not 1 <= len(names) <= 4:
        raise ValueError(f"an Euler diagram needs 1 to 4 sets, got {len(names)}")
    sets = [set(int(j) for j in critical[s]) for s in names]
    for s, js in zip(names, sets, strict=True):
        bad = [j for j in js if not 0 <= j < n]
        if bad:
            raise ValueError(f"set {s!r} has map index {bad[0]} outside 0..{n - 1}")
    by_pattern: dict[tuple[bool, ...], list[int]] = {}
    for j in sorted(set().union(*sets)):
        by_pattern.setdefault(tuple(j in s for s in sets), []).append(j)
    return [Region(p, region_label(names, p), by_pattern[p], tuple(names))
            for p in region_patterns(len(names)) if p in by_pattern]


def map_features(*mean_acts: np.ndarray) -> np.ndarray:
    """(n, Σ N_s) clustering features: each map's mean activation on every image of every set.

    ``mean_acts``: per set an (N_s, n) array (``Datapath.mean_act[layer]``); they are transposed
    and concatenated. Callers may use any other (n, d) features with :func:`kmeans_clusters`.
    """
    if not mean_acts:
        raise ValueError("need at least one (N, n) activation array")
    return np.concatenate([np.asarray(a, dtype=np.float64).T for a in mean_acts], axis=1)


def kmeans_clusters(maps: Sequence[int], features: np.ndarray, k: int, seed: int = 0,
                    n_init: int = 10) -> list[list[int]]:
    """Split ``maps`` into ≤ k K-means clusters of their rows of ``features`` (n, d).

    ``k`` is clipped to [1, number of distinct feature rows among ``maps``] so K-means never
    returns empty clusters. Deterministic for a given ``seed`` (scikit-learn ``KMeans`` with
    ``random_state=seed`` and an explicit ``n_init``; k-means++ initialisation, Lloyd
    iterations). NaN/inf features are set to 0. Clusters are returned largest first (ties: the
    one with the smallest map), maps ascending.
    """
    from sklearn.cluster import KMeans

    maps = sorted(int(j) for j in maps)
    if not maps:
        return []
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim == 1:
        feats = feats[:, None]
    x = np.nan_to_num(feats[maps], nan=0.0, posinf=0.0, neginf=0.0)
    if x.shape[1] == 0:
        x = np.zeros((len(maps), 1))
    distinct = len(np.unique(x, axis=0))
    k = max(1, min(int(k), distinct))
    if k == 1:
        return [maps]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # ConvergenceWarning on near-duplicate rows
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
    groups: dict[int, list[int]] = {}
    for j, lab in zip(maps, labels, strict=True):
        groups.setdefault(int(lab), []).append(j)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))
