"""Benchmark of the adversarial score: cross-fitted ROC-AUC, clean vs MI-FGSM, with ablations.

    python bench/scores.py                       # ResNet-20, ResNet-56, EfficientNet-Lite0
    python bench/scores.py --models cifar-resnet20 --repeats 10

For each model: the demo images (100 CIFAR-10 test images at eps 8/255, or the 62 NIPS-2017
ImageNet images at eps 4/255), 10-step MI-FGSM from ``aevis_core.attacks`` against the true
labels, penultimate features of clean and adversarial images, then 2-fold cross-fitting
(``aevis_core.scores.cross_fit_scores``): fit on half of each class's clean images (plus the
adversarial examples crafted from exactly those images), score the other half's clean and
adversarial images, swap. AUC is averaged over ``--repeats`` random fold splits (min in
brackets). Rows: the default score and ablations (KD only, uncertainty only, combined; clean-only
"tail" combiner; other uncertainties; LID; PCA; fixed bandwidth; class-disjoint folds).
``--other-attacks`` adds, for ResNet-20, how a scorer fitted with MI-FGSM examples ranks
examples of other attacks (FGSM, PGD, C&W, DeepFool, MI-FGSM at 2/255).

Held-out calibration (``--tables calibration``, issue 11): over ``--repeats`` random splits of
the demo classes into two halves, fit on the clean images of one half and score the clean and
MI-FGSM images of the *other* half (classes the scorer never saw). Prints the false-positive
rate of clean images at the thresholds 0.5 / 0.9 / 0.95 (nominal for the clean-only score:
50 % / 10 % / 5 %, since it is a clean-image CDF), the detection rate at 0.5 and the ROC-AUC,
for the clean-only score as shipped (seen/novel class regimes, smoothed empirical CDF), the
same without the novel-class regime and with a normal CDF (the score before the calibration),
and the logistic default fitted with MI-FGSM examples of the fitting half.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from aevis_core.attacks import AttackConfig, run_attack
from aevis_core.data import demo_path, load_image_set
from aevis_core.models import ModelEntry, load_model
from aevis_core.scores import (
    AdversarialScorer,
    ScoreConfig,
    classifier_head,
    cross_fit_scores,
    penultimate_features,
    roc_auc,
    stratified_folds,
)
from aevis_core.scores.stats import median_nn_distance

SETUPS = {
    "cifar-resnet20": ("cifar10", 8 / 255),
    "cifar-resnet56": ("cifar10", 8 / 255),
    "efficientnet-lite0": ("nips2017", 4 / 255),
}

BASE = ScoreConfig()
# (row label, config, supervised combiner?, fold split)
ROWS: list[tuple[str, ScoreConfig, bool, str]] = [
    ("DEFAULT kd+entropy, logistic", BASE, True, "image"),
    ("kd only, logistic", replace(BASE, components=("kd",)), True, "image"),
    ("entropy only, logistic", replace(BASE, components=("uncertainty",)), True, "image"),
    ("lid only, logistic", replace(BASE, components=("lid",)), True, "image"),
    ("kd+entropy+lid, logistic", replace(BASE, components=("kd", "uncertainty", "lid")), True, "image"),
    ("kd+margin, logistic", replace(BASE, uncertainty="margin"), True, "image"),
    ("kd+head-dropout, logistic", replace(BASE, uncertainty="head-dropout"), True, "image"),
    ("head-dropout only, logistic",
     replace(BASE, components=("uncertainty",), uncertainty="head-dropout"), True, "image"),
    ("kd (PCA 10) + entropy, logistic", replace(BASE, pca_dims=10), True, "image"),
    ("kd (no class shrinkage) + entropy", replace(BASE, class_prior=0.0), True, "image"),
    ("kd (h = fixed 4x median NN) + entropy", BASE, True, "image"),  # bandwidth set per model
    ("kd only, clean-only tail", replace(BASE, components=("kd",)), False, "image"),
    ("entropy only, clean-only tail", replace(BASE, components=("uncertainty",)), False, "image"),
    ("kd+entropy, clean-only tail", BASE, False, "image"),
    ("kd+entropy, logistic, class-disjoint", BASE, True, "class"),
    ("kd only, logistic, class-disjoint", replace(BASE, components=("kd",)), True, "class"),
]


@dataclass
class Prepared:
    """Clean and adversarial penultimate features of one model's demo images."""

    name: str
    entry: ModelEntry
    x: torch.Tensor
    y: np.ndarray
    f: np.ndarray
    z: np.ndarray
    fa: np.ndarray
    za: np.ndarray
    eps: float
    head: tuple[np.ndarray, np.ndarray] | None
    t_attack: float
    t_feat: float

    @property
    def n(self) -> int:
        """Number of images."""
        return int(self.y.shape[0])


def prepare(name: str) -> Prepared:
    """Load model and demo set, run MI-FGSM, extract clean and adversarial features."""
    dataset, eps = SETUPS[name]
    entry = load_model(name)
    images = load_image_set(demo_path(dataset))
    x = entry.preprocess_many(images.images)
    _, pred = entry.predict(x)
    y = torch.tensor([p if lab is None else lab for lab, p in zip(images.labels, pred.tolist(), strict=True)])
    t0 = time.perf_counter()
    adv = run_attack(entry.model, x, y, AttackConfig(method="mifgsm", eps=eps, steps=10, seed=0, batch_size=32))
    t_attack = time.perf_counter() - t0
    t0 = time.perf_counter()
    f, z = penultimate_features(entry, x)
    fa, za = penultimate_features(entry, adv)
    t_feat = time.perf_counter() - t0
    return Prepared(name, entry, x, y.numpy(), f, z, fa, za, eps, classifier_head(entry), t_attack, t_feat)


def evaluate(d: Prepared, cfg: ScoreConfig, supervised: bool, by: str,
             repeats: int) -> tuple[float, float, float, float]:
    """(mean AUC, min AUC, mean clean score, mean adversarial score) over ``repeats`` fold seeds."""
    aucs, cm, am = [], [], []
    for seed in range(repeats):
        c, a = cross_fit_scores(d.f, d.z, d.fa, d.za, d.y, config=cfg, supervised=supervised,
                                folds=2, seed=seed, by=by, head=d.head)
        aucs.append(roc_auc(c, a))
        cm.append(c.mean())
        am.append(a.mean())
    return float(np.mean(aucs)), float(np.min(aucs)), float(np.mean(cm)), float(np.mean(am))


def transfer_table(d: Prepared, repeats: int) -> None:
    """Scorers fitted with MI-FGSM examples (or clean only), scoring other attacks' examples.

    Same 2-fold protocol: fit on one half (clean + its MI-FGSM examples), score the other half's
    clean images and its images attacked with each method.
    """
    attacks = [AttackConfig("mifgsm", eps=2 / 255), AttackConfig("fgsm", eps=d.eps),
               AttackConfig("pgd", eps=d.eps), AttackConfig("cw", steps=50),
               AttackConfig("deepfool", steps=50)]
    print(f"\n== {d.name}: scorer fitted with MI-FGSM {d.eps * 255:.0f}/255, scoring other attacks")
    print(f"{'attack':22s} {'success':>7s} {'logistic':>9s} {'clean-tail':>11s} {'time':>6s}")
    for cfg in attacks:
        t0 = time.perf_counter()
        adv = run_attack(d.entry.model, d.x, torch.as_tensor(d.y), cfg)
        fo, zo = penultimate_features(d.entry, adv)
        success = float((zo.argmax(1) != d.y).mean())
        res = []
        for supervised in (True, False):
            aucs = []
            for seed in range(repeats):
                fold = stratified_folds(d.y, d.n, 2, seed)
                c, o = np.empty(d.n), np.empty(d.n)
                for k in (0, 1):
                    tr, te = fold != k, fold == k
                    sc = AdversarialScorer().fit_features(
                        d.f[tr], d.z[tr], d.y[tr], d.fa[tr] if supervised else None,
                        d.za[tr] if supervised else None, paired=True)
                    c[te], o[te] = sc.score_features(d.f[te], d.z[te]), sc.score_features(fo[te], zo[te])
                aucs.append(roc_auc(c, o))
            res.append(float(np.mean(aucs)))
        eps = f" {cfg.eps * 255:.0f}/255" if cfg.norm == "linf" else " (L2)"
        print(f"{cfg.method + eps:22s} {success:7.2f} {res[0]:9.3f} {res[1]:11.3f} "
              f"{time.perf_counter() - t0:5.1f}s")


def calibration_table(d: Prepared, repeats: int) -> None:
    """Clean-only (and logistic) scorers fitted on half of the classes, scored on the other half."""
    classes = np.unique(d.y)
    print(f"\n== {d.name}: held-out classes ({classes.size} classes, fit on {classes.size // 2}, "
          f"{repeats} random class splits; FPR = clean images above the threshold, nominal 1 - t)")
    print(f"{'scorer':44s} {'FPR@.5':>7s} {'FPR@.9':>7s} {'FPR@.95':>8s} {'TPR@.5':>7s} {'AUC':>6s}")
    rows: dict[str, list[tuple[float, ...]]] = {}
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        fit = np.isin(d.y, rng.permutation(classes)[: classes.size // 2])
        te = ~fit
        variants = {
            "clean-only, calibrated (default)": AdversarialScorer().fit_features(d.f[fit], d.z[fit], d.y[fit]),
            "clean-only, before (one regime, normal CDF)": _uncalibrated(
                AdversarialScorer().fit_features(d.f[fit], d.z[fit], d.y[fit])),
            "logistic, fitted with MI-FGSM": AdversarialScorer().fit_features(
                d.f[fit], d.z[fit], d.y[fit], d.fa[fit], d.za[fit], paired=True),
        }
        for label, sc in variants.items():
            c, a = sc.score_features(d.f[te], d.z[te]), sc.score_features(d.fa[te], d.za[te])
            rows.setdefault(label, []).append(
                ((c > 0.5).mean(), (c > 0.9).mean(), (c > 0.95).mean(), (a > 0.5).mean(), roc_auc(c, a)))
    for label, vals in rows.items():
        m = np.mean(vals, axis=0)
        print(f"{label:44s} {m[0]:7.2f} {m[1]:7.2f} {m[2]:8.2f} {m[3]:7.2f} {m[4]:6.3f}")


def _uncalibrated(scorer: AdversarialScorer) -> AdversarialScorer:
    """The clean-only score before the held-out calibration: one regime for all images and the
    normal CDF of the tail statistic (what a format-1 scorer computes)."""
    state = scorer._state
    assert state is not None
    state.tail_null = np.zeros(0)
    return scorer


def main() -> None:
    """Run the benchmark and print one AUC table per model."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--repeats", type=int, default=5, help="random 2-fold splits averaged (default 5)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--other-attacks", action="store_true",
                    help="ResNet-20 only: also score FGSM, PGD, C&W, DeepFool, weak MI-FGSM examples")
    ap.add_argument("--tables", choices=["auc", "calibration", "all"], default="all",
                    help="cross-fitted AUC ablation, held-out class calibration, or both")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    summary = []
    for name in args.models:
        d = prepare(name)
        clean_acc = float((d.z.argmax(1) == d.y).mean())
        adv_acc = float((d.za.argmax(1) == d.y).mean())
        print(f"\n== {name}: {d.n} demo images, MI-FGSM eps {d.eps * 255:.0f}/255, 10 steps "
              f"(attack {d.t_attack:.1f}s, features {d.t_feat:.1f}s); "
              f"top-1 clean {clean_acc:.2f}, adversarial {adv_acc:.2f}")
        if args.tables != "auc":
            calibration_table(d, max(args.repeats, 10))
        if args.tables == "calibration":
            continue
        print(f"{'score':42s} {'AUC':>6s} {'(min)':>7s} {'clean':>6s} {'adv':>6s} {'time':>6s}")
        fixed_h = 4.0 * median_nn_distance(d.f.astype(np.float64) - d.f.mean(0))
        for label, cfg, sup, by in ROWS:
            if label.startswith("kd (h = fixed"):
                cfg = replace(cfg, bandwidth=fixed_h)
            t0 = time.perf_counter()
            auc, lo, cm, am = evaluate(d, cfg, sup, by, args.repeats)
            dt = time.perf_counter() - t0
            print(f"{label:42s} {auc:6.3f} ({lo:5.3f}) {cm:6.2f} {am:6.2f} {dt:5.1f}s")
            if label.startswith("DEFAULT"):
                summary.append((name, d.eps, auc, lo))
        if args.other_attacks and name == "cifar-resnet20":
            transfer_table(d, args.repeats)
    if not summary:
        return
    print("\n== summary (default score, 2-fold cross-fitted, mean over splits; target >= 0.85)")
    for name, eps, auc, lo in summary:
        flag = "ok" if lo >= 0.85 else "BELOW TARGET"
        print(f"{name:20s} MI-FGSM {eps * 255:.0f}/255  AUC {auc:.3f} (min {lo:.3f})  {flag}")
    print(f"total {time.perf_counter() - t_all:.0f}s")


if __name__ == "__main__":
    main()
