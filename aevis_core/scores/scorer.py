"""The adversarial score: a per-image probability-like number in [0, 1].

:class:`AdversarialScorer` turns per-image statistics of the penultimate features (see
:mod:`aevis_core.scores.stats`) into one score:

* fitted with adversarial examples (``adv_x``): a logistic regression on the standardised
  statistics, clean = 0 vs adversarial = 1, exactly as Feinman et al. 2017 combine KD and
  Bayesian uncertainty; the score is the regression's probability (balanced classes prior).
* fitted on clean images only: a one-class "clean tail" score. Each statistic is z-scored against
  the clean images (leave-one-out), KD and LID one-sided (low density / high LID is suspicious),
  the uncertainty two-sided (``(z² − 1)/√2``: strong iterative attacks such as MI-FGSM make
  predictions *over*-confident, minimal attacks such as DeepFool leave them near the boundary);
  their sum is mapped through its kernel-smoothed empirical CDF on the clean images, so clean
  images score roughly uniformly on [0, 1] and atypical images close to 1. Calibrated separately
  for images of classes with and without clean references (leave-class-out null), so the
  threshold holds on classes the scorer was not fitted on: :mod:`aevis_core.scores.calibration`.

Clean reference statistics are always computed leave-one-out (a clean image never sees itself in
the KDE / LID reference set; an adversarial image never sees its own source image), so the fitted
combiner sees the same distribution as genuinely unseen images.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression

from aevis_core.errors import AEVisError
from aevis_core.scores import calibration, stats
from aevis_core.scores.features import classifier_head, find_classifier, penultimate_features

log = logging.getLogger(__name__)

COMPONENTS = ("kd", "uncertainty", "lid")
UNCERTAINTIES = ("entropy", "margin", "head-dropout")
FORMAT = "aevis-adversarial-scorer/2"
_OLD_FORMATS = ("aevis-adversarial-scorer/1",)  # clean-tail mapped by a normal CDF, no class regimes
MIN_CLEAN = 3
_CLIP = 1e6


@dataclass(frozen=True)
class ScoreConfig:
    """Options of :class:`AdversarialScorer` (defaults measured in ``bench/scores.py``).

    components: any of ``"kd"`` (class-conditional kernel density), ``"uncertainty"``, ``"lid"``.
    uncertainty: ``"entropy"`` (default), ``"margin"`` or ``"head-dropout"``.
    bandwidth: KDE bandwidth in feature units; None = leave-one-out likelihood selection.
    class_prior: pseudo-count λ of the class-agnostic KDE mixed into each class KDE.
    pca_dims: project centred features on that many principal axes before KD/LID (None = off).
    lid_k: neighbours for LID. mc_samples / dropout: head-dropout samples T and rate.
    C: inverse L2 strength of the logistic regression. seed: dropout masks, reference subsample.
    max_reference: clean references kept (seeded subsample beyond). successful_only: train the
    regression only on adversarial images whose prediction differs from their source's.
    """

    components: tuple[str, ...] = ("kd", "uncertainty")
    uncertainty: str = "entropy"
    bandwidth: float | None = None
    class_prior: float = 1.0
    pca_dims: int | None = None
    lid_k: int = 10
    mc_samples: int = 30
    dropout: float = 0.5
    C: float = 1.0
    seed: int = 0
    max_reference: int = 5000
    successful_only: bool = True

    def validated(self) -> ScoreConfig:
        """A checked copy (components as a de-duplicated tuple); AEVisError naming the bad field."""
        comps = tuple(dict.fromkeys([self.components] if isinstance(self.components, str)
                                    else self.components))
        bad = [c for c in comps if c not in COMPONENTS]
        if not comps or bad:
            raise AEVisError(f"score components must be a non-empty subset of {', '.join(COMPONENTS)}"
                             f", got {list(comps)}")
        if self.uncertainty not in UNCERTAINTIES:
            raise AEVisError(f"uncertainty must be one of {', '.join(UNCERTAINTIES)}, got {self.uncertainty!r}")
        if self.bandwidth is not None and not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise AEVisError(f"KDE bandwidth must be > 0 or None (automatic), got {self.bandwidth!r}")
        if not (math.isfinite(self.class_prior) and self.class_prior >= 0):
            raise AEVisError(f"class_prior must be >= 0, got {self.class_prior!r}")
        if self.pca_dims is not None and (not isinstance(self.pca_dims, int) or self.pca_dims < 1):
            raise AEVisError(f"pca_dims must be a positive integer or None, got {self.pca_dims!r}")
        for name, lo in (("lid_k", 2), ("mc_samples", 2), ("max_reference", MIN_CLEAN), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise AEVisError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise AEVisError(f"dropout rate must be in [0, 1), got {self.dropout!r}")
        if not (math.isfinite(self.C) and self.C > 0):
            raise AEVisError(f"C must be > 0, got {self.C!r}")
        return replace(self, components=comps)


def _labels_array(labels: object, n: int, num_classes: int) -> np.ndarray:
    """Labels (list with None, array or tensor) -> int64 (n,), -1 where unknown/out of range."""
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().tolist()
    seq = list(labels)  # type: ignore[call-overload]
    if len(seq) != n:
        raise AEVisError(f"got {len(seq)} labels for {n} clean images")
    out = np.full(n, -1, dtype=np.int64)
    for i, v in enumerate(seq):
        if v is None or isinstance(v, bool):
            continue
        try:
            lab = int(v)
        except (TypeError, ValueError) as exc:
            raise AEVisError(f"label {v!r} of clean image {i} is not a class index") from exc
        if 0 <= lab < num_classes:
            out[i] = lab
    return out


def _check_features(features: object, logits: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features and (N, K) logits as finite float64 arrays, AEVisError otherwise."""
    f = np.asarray(features, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    if f.ndim != 2 or z.ndim != 2 or f.shape[0] != z.shape[0]:
        raise AEVisError(f"{what}: features must be (N, D) and logits (N, K) with the same N, "
                         f"got {f.shape} and {z.shape}")
    if f.shape[0] == 0:
        raise AEVisError(f"{what}: the set is empty")
    if not (np.isfinite(f).all() and np.isfinite(z).all()):
        raise AEVisError(f"{what}: features or logits contain NaN or infinite values")
    return f, z


@dataclass
class _State:
    """Everything a fitted scorer needs (NumPy arrays and scalars; see ``to_dict``)."""

    mode: str
    mu: np.ndarray
    proj: np.ndarray
    ref: np.ndarray
    ref_labels: np.ndarray
    bandwidth: float
    stand_mean: np.ndarray
    stand_std: np.ndarray
    coef: np.ndarray
    intercept: float
    tail_loc: float = 0.0
    tail_scale: float = 1.0
    num_classes: int = 0
    head_w: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    head_b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    model_id: str = ""
    layer: str = ""
    # clean-tail calibration (empty: format /1, normal CDF with tail_loc/tail_scale)
    tail_null: np.ndarray = field(default_factory=lambda: np.zeros(0))
    novel_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    novel_std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    novel_null: np.ndarray = field(default_factory=lambda: np.zeros(0))


_CALIBRATION_KEYS = ("tail_null", "novel_mean", "novel_std", "novel_null")


class AdversarialScorer:
    """Per-image adversarial score in [0, 1] from penultimate-layer density and uncertainty.

    >>> scorer = AdversarialScorer().fit(entry, clean_x, clean_y, adv_x=adv_x)  # doctest: +SKIP
    >>> scorer.score(entry, new_x)                                             # doctest: +SKIP
    array([0.03, 0.98, ...])

    Fit on clean images of the model's domain (and, for the supervised logistic combiner, the
    adversarial examples crafted from them); score other images. ``mode == "logistic"``: the
    score is P(adversarial) under a 50/50 prior (Feinman et al. 2017's combiner);
    ``mode == "clean-tail"``: the score is the clean-image CDF of the combined atypicality, so
    0.95 means "more atypical than about 95% of clean images", also for images of classes that
    had no clean image in the fit (calibrated leave-class-out). Deterministic for a given
    config and inputs. ``to_dict`` / ``from_dict`` (and ``save`` / ``load``) cache a fitted
    scorer as plain NumPy arrays.
    """

    def __init__(self, config: ScoreConfig | None = None, **options: Any) -> None:
        cfg = config or ScoreConfig()
        try:
            cfg = replace(cfg, **options)
        except TypeError as exc:
            raise AEVisError(f"unknown adversarial score option: {exc}") from exc
        self.config = cfg.validated()
        self._state: _State | None = None

    # ---------------------------------------------------------------- fitting
    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` / :meth:`fit_features` has run."""
        return self._state is not None

    @property
    def mode(self) -> str:
        """``"logistic"`` (fitted with adversarial examples) or ``"clean-tail"`` (clean only)."""
        return self._require().mode

    def fit(self, entry: Any, clean_x: torch.Tensor, clean_y: object = None,
            adv_x: torch.Tensor | None = None, *, batch_size: int = 64,
            layer: str | None = None) -> AdversarialScorer:
        """Fit on clean pixel images (N, 3, H, W) in [0, 1] and optional adversarial ones (M, 3, H, W).

        clean_y: true classes (N,) (ints, None for unknown); used as the KDE class of each clean
        reference, else its predicted class. adv_x: when ``M == N`` it is taken as paired with
        ``clean_x`` (``adv_x[i]`` crafted from ``clean_x[i]``). Returns ``self``.
        """
        feats, logits = penultimate_features(entry, clean_x, batch_size, layer)
        adv_f = adv_l = None
        if adv_x is not None:
            adv_f, adv_l = penultimate_features(entry, adv_x, batch_size, layer)
        head = classifier_head(entry, layer) if self.config.uncertainty == "head-dropout" else None
        self.fit_features(feats, logits, clean_y, adv_f, adv_l, head=head)
        state = self._require()
        state.model_id = str(getattr(entry, "model_id", ""))
        model = entry if isinstance(entry, torch.nn.Module) else entry.model
        state.layer = find_classifier(model, getattr(entry, "num_classes", None), layer)[0]
        return self

    def fit_features(self, features: np.ndarray, logits: np.ndarray, labels: object = None,
                     adv_features: np.ndarray | None = None, adv_logits: np.ndarray | None = None,
                     *, head: tuple[np.ndarray, np.ndarray] | None = None,
                     paired: bool | None = None) -> AdversarialScorer:
        """Fit from precomputed penultimate features (N, D) / logits (N, K) (see :meth:`fit`).

        adv_features (M, D) / adv_logits (M, K): adversarial examples for the logistic combiner
        (``paired`` defaults to ``M == N``). head: ``(W (K, D), b (K,))`` of the linear classifier,
        required by ``uncertainty="head-dropout"``.
        """
        cfg = self.config
        f, z = _check_features(features, logits, "clean images")
        n, k = z.shape
        if n < MIN_CLEAN:
            raise AEVisError(f"need at least {MIN_CLEAN} clean images to fit the adversarial score, got {n}")
        if cfg.uncertainty == "head-dropout" and "uncertainty" in cfg.components:
            if head is None:
                raise AEVisError("uncertainty='head-dropout' needs the linear classifier head (W, b)")
            head = (np.asarray(head[0], np.float64), np.asarray(head[1], np.float64))
            if head[0].shape != (k, f.shape[1]) or head[1].shape != (k,):
                raise AEVisError(f"classifier head shapes {head[0].shape}/{head[1].shape} do not fit "
                                 f"features of dimension {f.shape[1]} and {k} classes")
        y = _labels_array(labels, n, k)
        pred = z.argmax(1)
        ref_labels = np.where(y >= 0, y, pred)
        keep = np.arange(n)
        if n > cfg.max_reference:
            keep = np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.max_reference, replace=False))
            log.info("adversarial score: %d clean references subsampled to %d", n, keep.size)
        mu = f[keep].mean(0)
        proj = np.zeros((0, 0))
        if cfg.pca_dims is not None:
            d = min(cfg.pca_dims, keep.size - 1, f.shape[1])
            proj = np.linalg.svd(f[keep] - mu, full_matrices=False)[2][:d].T
        ref = (f[keep] - mu) @ proj if proj.size else f[keep] - mu
        ref_lab = ref_labels[keep]
        h = cfg.bandwidth if cfg.bandwidth is not None else stats.select_bandwidth(ref, ref_lab, cfg.class_prior)
        state = _State("clean-tail", mu, proj, ref, ref_lab, float(h), np.zeros(0), np.ones(0),
                       np.zeros(0), 0.0, num_classes=k)
        if head is not None:
            state.head_w, state.head_b = head
        self._state = state
        # leave-one-out statistics of the clean images (each excluded from its own reference set)
        self_excl = keep[None, :] == np.arange(n)[:, None]
        xc = self._components(f, z, self_excl)
        xa = None
        if adv_features is not None or adv_logits is not None:
            if adv_features is None or adv_logits is None:
                raise AEVisError("adversarial features and logits must be given together")
            fa, za = _check_features(adv_features, adv_logits, "adversarial images")
            if fa.shape[1] != f.shape[1] or za.shape[1] != k:
                raise AEVisError(f"adversarial features {fa.shape}/logits {za.shape} do not match the "
                                 f"clean ones (D={f.shape[1]}, K={k})")
            is_paired = (fa.shape[0] == n) if paired is None else paired
            if is_paired and fa.shape[0] != n:
                raise AEVisError(f"paired adversarial images must be as many as clean ones ({n}), got {fa.shape[0]}")
            sel = np.arange(fa.shape[0])
            if is_paired and cfg.successful_only:
                sel = np.flatnonzero(za.argmax(1) != pred)
                if sel.size < fa.shape[0]:
                    log.info("adversarial score: %d of %d adversarial images did not change the "
                             "prediction; fitted without them", fa.shape[0] - sel.size, fa.shape[0])
            excl = (keep[None, :] == sel[:, None]) if is_paired else None
            if sel.size >= 2:
                xa = self._components(fa[sel], za[sel], excl)
            else:
                log.warning("adversarial score: fewer than 2 successful adversarial images; "
                            "falling back to the clean-only score")
        seen = calibration.seen_class(ref_lab, pred, self_excl)
        xn = None
        if xa is None and np.unique(ref_lab).size >= 2:
            lco = calibration.leave_class_out(ref_lab, ref_labels, self_excl)
            xn = self._components(f, z, lco, np.full(n, -1))
        self._fit_combiner(xc, xa, seen, xn)
        log.info("adversarial score fitted: %s, %d clean refs (D=%d), %s adversarial, bandwidth %.4g, "
                 "components %s", state.mode, ref.shape[0], ref.shape[1],
                 0 if xa is None else xa.shape[0], state.bandwidth, ", ".join(cfg.components))
        return self

    def _fit_combiner(self, xc: np.ndarray, xa: np.ndarray | None, seen: np.ndarray,
                      xn: np.ndarray | None) -> None:
        """Logistic regression (xa given) or the clean-tail calibration: ``xc`` leave-one-out
        statistics of the clean images, ``seen`` (N,) whether their class kept a reference,
        ``xn`` their leave-class-out statistics (None: fewer than two classes)."""
        state = self._require()
        if xa is not None:
            x = np.concatenate([xc, xa])
            t = np.concatenate([np.zeros(len(xc)), np.ones(len(xa))])
            state.stand_mean, state.stand_std = x.mean(0), self._safe_std(x)
            lr = LogisticRegression(C=self.config.C, max_iter=1000)
            lr.fit(self._standardise(x), t)
            state.mode, state.coef, state.intercept = "logistic", lr.coef_[0].copy(), float(lr.intercept_[0])
            log.info("adversarial score: logistic weights %s",
                     dict(zip(self.config.components, np.round(state.coef, 3).tolist(), strict=True)))
        else:
            xs = xc[seen] if int(seen.sum()) >= MIN_CLEAN else xc
            state.stand_mean, state.stand_std = xs.mean(0), self._safe_std(xs)
            tail = self._tail_statistic(self._standardise(xs))
            state.mode, state.coef, state.intercept = "clean-tail", np.zeros(0), 0.0
            state.tail_loc, state.tail_scale = float(tail.mean()), float(max(tail.std(), 1e-12))
            state.tail_null = np.sort(tail)
            if xn is None:
                xn = xc  # one class: no novel-class null, both regimes share the clean one
            state.novel_mean, state.novel_std = xn.mean(0), self._safe_std(xn)
            state.novel_null = np.sort(self._tail_statistic(
                np.clip((xn - state.novel_mean) / state.novel_std, -_CLIP, _CLIP)))

    # ---------------------------------------------------------------- scoring
    def _require(self) -> _State:
        if self._state is None:
            raise AEVisError("the adversarial scorer is not fitted yet (call fit first)")
        return self._state

    @staticmethod
    def _safe_std(x: np.ndarray) -> np.ndarray:
        s = x.std(0)
        return np.where(s > 1e-12, s, 1.0)

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        state = self._require()
        return np.clip((x - state.stand_mean) / state.stand_std, -_CLIP, _CLIP)

    def _tail_statistic(self, zs: np.ndarray) -> np.ndarray:
        cols = [(zs[:, j] ** 2 - 1.0) / math.sqrt(2.0) if c == "uncertainty" else zs[:, j]
                for j, c in enumerate(self.config.components)]
        return np.sum(cols, axis=0)

    def _components(self, f: np.ndarray, z: np.ndarray, exclude: np.ndarray | None,
                    query_class: np.ndarray | None = None) -> np.ndarray:
        """Raw statistics (N, M) in ``config.components`` order; larger = more suspicious
        (except the two-sided uncertainty). KD class: ``query_class`` or the predicted one
        (-1: class-agnostic density)."""
        state, cfg = self._require(), self.config
        q = f - state.mu
        if state.proj.size:
            q = q @ state.proj
        cols = []
        for c in cfg.components:
            if c == "kd":
                qc = z.argmax(1) if query_class is None else query_class
                cols.append(-stats.kde_log_density(state.ref, state.ref_labels, q, qc,
                                                   state.bandwidth, exclude, cfg.class_prior))
            elif c == "lid":
                cols.append(stats.lid_mle(state.ref, q, cfg.lid_k, exclude))
            else:
                masks = None
                if cfg.uncertainty == "head-dropout":
                    masks = stats.dropout_masks(f.shape[1], cfg.mc_samples, cfg.dropout, cfg.seed)
                head = (state.head_w, state.head_b) if state.head_w.size else None
                cols.append(stats.uncertainty(z, cfg.uncertainty, f, head, masks))
        return np.nan_to_num(np.stack(cols, axis=1), nan=0.0, posinf=_CLIP, neginf=-_CLIP)

    def component_values(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Raw per-component statistics (N, M), columns in ``config.components`` order:
        ``kd`` = −log density, ``uncertainty`` = log uncertainty, ``lid`` = LID estimate."""
        f, z = self._checked(features, logits)
        return self._components(f, z, None)

    def _checked(self, features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = self._require()
        f, z = _check_features(features, logits, "images to score")
        if f.shape[1] != state.mu.shape[0] or z.shape[1] != state.num_classes:
            raise AEVisError(f"features (D={f.shape[1]}, K={z.shape[1]}) do not match the fitted "
                             f"scorer (D={state.mu.shape[0]}, K={state.num_classes}): another model?")
        return f, z

    def score_features(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Adversarial scores (N,) in [0, 1] from penultimate features (N, D) and logits (N, K)."""
        state = self._require()
        f, z = self._checked(features, logits)
        x = self._components(f, z, None)
        if state.mode == "logistic":
            s = expit(self._standardise(x) @ state.coef + state.intercept)
        elif not state.tail_null.size:
            s = norm.cdf((self._tail_statistic(self._standardise(x)) - state.tail_loc) / state.tail_scale)
        else:
            s = self._calibrated_tail(x, z)
        return np.clip(np.nan_to_num(s, nan=0.5), 0.0, 1.0)

    def _calibrated_tail(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Clean-tail scores (N,) of raw statistics ``x`` (N, M): each image in the regime of its
        predicted class (seen: has clean references; novel: none), see :mod:`.calibration`."""
        state = self._require()
        novel = ~calibration.seen_class(state.ref_labels, z.argmax(1))
        s = np.empty(x.shape[0])
        for mask, mean, std, null in ((~novel, state.stand_mean, state.stand_std, state.tail_null),
                                      (novel, state.novel_mean, state.novel_std, state.novel_null)):
            if mask.any():
                zs = np.clip((x[mask] - mean) / std, -_CLIP, _CLIP)
                s[mask] = calibration.smoothed_cdf(null, self._tail_statistic(zs))
        return s

    def score(self, entry: Any, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Adversarial scores (N,) in [0, 1] of pixel images ``x`` (N, 3, H, W) in [0, 1].

        ``entry`` must be the model the scorer was fitted with (checked by ``model_id``).
        Images the scorer was fitted on get optimistic (in-sample) scores.
        """
        state = self._require()
        mid = str(getattr(entry, "model_id", ""))
        if state.model_id and mid and mid != state.model_id:
            raise AEVisError(f"this adversarial scorer was fitted for {state.model_id}, not {mid}")
        feats, logits = penultimate_features(entry, x, batch_size, state.layer or None)
        return self.score_features(feats, logits)

    # ---------------------------------------------------------------- caching
    def to_dict(self) -> dict[str, np.ndarray]:
        """The fitted scorer as NumPy arrays only (``np.savez(path, **d)`` works, no pickle)."""
        s = self._require()
        scalars = {"mode": s.mode, "model_id": s.model_id, "layer": s.layer,
                   "config": json.dumps(asdict(self.config)), "format": FORMAT}
        out = {k: np.asarray(v) for k, v in scalars.items()}
        out.update(mu=s.mu, proj=s.proj, ref=s.ref, ref_labels=s.ref_labels,
                   stand_mean=s.stand_mean, stand_std=s.stand_std, coef=s.coef,
                   head_w=s.head_w, head_b=s.head_b, tail_null=s.tail_null, novel_mean=s.novel_mean,
                   novel_std=s.novel_std, novel_null=s.novel_null,
                   numbers=np.array([s.bandwidth, s.intercept, s.tail_loc, s.tail_scale, s.num_classes]))
        return {k: np.array(v, copy=True) for k, v in out.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdversarialScorer:
        """Rebuild a scorer from :meth:`to_dict` output (or ``np.load`` of a saved file)."""
        try:
            fmt = str(np.asarray(d["format"]))
            if fmt != FORMAT and fmt not in _OLD_FORMATS:
                raise AEVisError(f"unsupported adversarial scorer format {str(np.asarray(d['format']))!r}")
            cfg_d = json.loads(str(np.asarray(d["config"])))
            cfg_d["components"] = tuple(cfg_d["components"])
            scorer = cls(ScoreConfig(**cfg_d))
            bw, intercept, loc, scale, k = (float(v) for v in np.asarray(d["numbers"], np.float64))
            arr = {key: np.asarray(d[key]) for key in ("mu", "proj", "ref", "stand_mean", "stand_std",
                                                       "coef", "head_w", "head_b")}
            f64 = {key: v.astype(np.float64) for key, v in arr.items()}
            state = _State(str(np.asarray(d["mode"])), f64["mu"], f64["proj"], f64["ref"],
                           np.asarray(d["ref_labels"]).astype(np.int64), bw, f64["stand_mean"],
                           f64["stand_std"], f64["coef"], intercept, loc, scale, int(k),
                           f64["head_w"], f64["head_b"], str(np.asarray(d["model_id"])),
                           str(np.asarray(d["layer"])))
            if fmt == FORMAT:
                for key in _CALIBRATION_KEYS:
                    setattr(state, key, np.asarray(d[key]).astype(np.float64))
        except AEVisError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise AEVisError(f"not a saved adversarial scorer ({type(exc).__name__}: {exc})") from exc
        m = len(scorer.config.components)
        dim = state.proj.shape[1] if state.proj.size else state.mu.shape[0]
        if (state.mode not in ("logistic", "clean-tail") or state.ref.ndim != 2
                or state.ref.shape[1] != dim or state.stand_mean.shape != (m,)
                or (state.mode == "logistic" and state.coef.shape != (m,))
                or (state.tail_null.size and state.novel_mean.shape != (m,))):
            raise AEVisError("saved adversarial scorer is inconsistent (corrupt cache?)")
        scorer._state = state
        return scorer

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to an ``.npz`` file (no pickle)."""
        np.savez(Path(path), **self.to_dict())  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> AdversarialScorer:
        """Read a scorer written by :meth:`save`."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                return cls.from_dict({k: data[k] for k in data.files})
        except (OSError, ValueError) as exc:
            raise AEVisError(f"cannot read adversarial scorer {Path(path).name}: {exc}") from exc

