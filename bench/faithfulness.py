"""Faithfulness of datapath methods at equal k (ResNet-56 / CIFAR-10, EfficientNet-Lite0 / NIPS 2017).

For an early, a middle and a late layer of each model, every method ranks the layer's n
feature maps once; only the top-k maps are kept (the others zeroed, or set to their mean over
the images with ``fill=mean``) for k = 5 %, 10 %, 25 %, 50 % of n and, for each QP variant, at
its own natural k = |{z > 0.5}| (the other QP variants show "-" there; row labels
``nat:pn,pl,ln,ll`` = prob/none, prob/l1, logit/none, logit/l1, ``R`` = the refined QP).
Reported per cell: ``preserved top-1 fraction / mean drop of the target probability``
(targets = the unmasked predictions). Methods:

* ``qp[score,norm]``: the exact box QP (Eq. 5) with the paper's λ = 0.1/n², q from the
  target's probability (``prob``) or logit, raw (``none``) or per-image L1-normalised (``l1``);
  ranked by z, ties by Σ_k q_kj;
* ``gx[score,none]``: gradient × activation, Σ_k q_kj (same q as the QP);
* ``act``: mean activation; ``random``: a seeded permutation.

The ``l1`` variants are re-solved from the stored q of the ``none`` extraction (normalising is
a per-image rescaling of q, so no further pass is needed). Extra sections: the natural set of
the QP with a unit-free ridge λ = ρ·tr(Q)/n (ρ = 1e-3, 1e-1) against gx / act / random at the
same k, and, at the late layers, the QP refined on the true Eq. 4
objective (:func:`aevis_core.datapath.refine.refine_layer`, 20 PGD steps).

Images: ResNet-56 on the 100 CIFAR-10 demo images; EfficientNet-Lite0 on the first
``--nips-per-class`` (default 2, i.e. 24 images; 5 = all 60) images of each of the 12
five-image NIPS-2017 demo classes. ``--quick``: 32 CIFAR and 12 NIPS images.

Usage: python bench/faithfulness.py [--quick] [--nips-per-class N] [--json out.json] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from aevis_core.data import demo_path, load_image_set
from aevis_core.datapath.extract import Datapath, ExtractConfig, LayerDatapath, extract_datapath
from aevis_core.datapath.qp import default_lambda
from aevis_core.datapath.selection import QPAccumulator, critical_set
from aevis_core.evaluate import FaithfulnessEvaluator, faithfulness_curve, rank_maps, resolve_ks
from aevis_core.graph import build_graph
from aevis_core.models import load_model

KS = (0.05, 0.1, 0.25, 0.5)
VARIANTS = (("prob", "none"), ("prob", "l1"), ("logit", "none"), ("logit", "l1"))
RHOS = (1e-3, 1e-1)
MODELS = {
    "cifar-resnet56": ("cifar10", ["layer1.4.relu2", "layer2.4.relu2", "layer3.8.relu2"]),
    "efficientnet-lite0": ("nips2017", ["_blocks.2.add", "_blocks.9.add", "_swish#2"]),
}
REFINE_LAYERS = {"layer3.8.relu2", "_swish#2"}  # late layers: the suffix is cheap


def resolve(dp: Datapath, normalize: str, lam: dict[str, float] | None = None) -> Datapath:
    """The QP of every layer of a ``normalize="none"`` datapath re-solved from its stored q.

    ``normalize="l1"`` divides each image's q by Σ_j |q_kj| (as ``extract_datapath`` does);
    ``lam`` per layer (default 0.1 / n²). No forward or backward pass.
    """
    assert dp.config.normalize == "none"
    layers: dict[str, LayerDatapath] = {}
    qs: dict[str, np.ndarray] = {}
    for k, ld in dp.layers.items():
        q = dp.q[k].astype(np.float64)
        if normalize == "l1":
            q = q / np.maximum(np.abs(q).sum(1, keepdims=True), 1e-30)
        lam_k = default_lambda(ld.n) if lam is None else lam[k]
        res = QPAccumulator().add(q).solve(lam_k)
        layers[k] = LayerDatapath(k, ld.n, res.z, critical_set(res.z, 0.5).tolist(), res.objective,
                                  res.kkt_residual, res.lam)
        qs[k] = q.astype(np.float32)
    return replace(dp, config=replace(dp.config, normalize=normalize), layers=layers, q=qs, connections=[])


def nips_subset(per_class: int) -> tuple[list[Any], list[int]]:
    """First ``per_class`` images of each of the NIPS demo classes that have five images."""
    s = load_image_set(demo_path("nips2017"))
    big = {c for c, m in Counter(s.labels).items() if m == 5}
    taken: Counter[int] = Counter()
    idx = []
    for i, c in enumerate(s.labels):
        if c in big and taken[c] < per_class:
            taken[c] += 1
            idx.append(i)
    return [s.images[i] for i in idx], idx


def cell(r: dict[str, Any] | None) -> str:
    return "      -     " if r is None else f"{r['preserved']:.2f}/{r['drop']:+.3f}"


def run_model(name: str, n_images: int | None, per_class: int, log: list[dict[str, Any]]) -> None:
    demo, layers = MODELS[name]
    t0 = time.perf_counter()
    entry = load_model(name)
    graph = build_graph(entry.model, (3, *entry.input_size), name)
    if demo == "nips2017":
        images, _ = nips_subset(per_class)
        what = f"{len(images)} NIPS-2017 demo images ({per_class} per five-image class, 12 classes)"
    else:
        s = load_image_set(demo_path(demo))
        images = s.images if n_images is None else s.images[:n_images]
        what = f"{len(images)} CIFAR-10 demo images"
    x = entry.preprocess_many(images)
    targets = entry.predict(x)[1]
    labels = [int(t) for t in targets.tolist()]
    print(f"\n=== {name}: {what}; targets = predictions ===")
    dps: dict[tuple[str, str], Datapath] = {}
    for score in ("prob", "logit"):
        cfg = ExtractConfig(method="qp", score=score, normalize="none", target="true", batch_size=50)
        dps[(score, "none")] = extract_datapath(entry, graph, x, cfg, layers=layers, labels=labels)
        dps[(score, "l1")] = resolve(dps[(score, "none")], "l1")
    t_extract = time.perf_counter() - t0
    for layer in layers:
        t1 = time.perf_counter()
        ev = FaithfulnessEvaluator(entry, graph, x, layer, targets, batch_size=50)
        n = ev.n
        naturals = {v: len(dps[v].layers[layer].critical) for v in VARIANTS}
        cols: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
        tabs = []
        for v in VARIANTS:
            methods: tuple[str, ...] = ("qp", "act_topk", "random")
            if v[1] == "none":  # gradient x activation: one column per score
                methods = (*methods, "gradxact_topk")
            if v == ("prob", "none") and layer in REFINE_LAYERS:
                methods = (*methods, "qp_refine")
            fills = ("zero", "mean") if v == ("prob", "none") else ("zero",)
            tab = faithfulness_curve(entry, graph, x, layer, methods=methods, ks=KS, datapath=dps[v],
                                     evaluator=ev, fill=fills, refine_steps=20)
            tab["variant"] = list(v)
            tabs.append(tab)
            for r in tab["rows"]:
                m = r["method"]
                col = {"qp": f"qp[{v[0]},{v[1]}]", "gradxact_topk": f"gx[{v[0]},{v[1]}]", "act_topk": "act",
                       "random": "random", "qp_refine": "qp+refine"}[m]
                cols.setdefault(col, {})[(r["fill"], r["k"])] = r
        print(f"\n--- {name} {layer}: n = {n} maps, N = {ev.n_images}, mean target p = {float(ev.p0.mean()):.3f}, "
              f"λ = 0.1/n² = {default_lambda(n):.3g}")
        print("natural k = |{z > 0.5}| of the QP: " + ", ".join(f"{s}/{m}: {naturals[(s, m)]}" for s, m in VARIANTS))
        order = [f"qp[{s},{m}]" for s, m in VARIANTS] + ["gx[prob,none]", "gx[logit,none]", "act", "random"]
        if "qp+refine" in cols:
            order.append("qp+refine")
        ref = next(t for t in tabs if t["variant"] == ["prob", "none"])
        ref_nat = ref["natural_k"].get("qp_refine")
        for fill in ("zero", "mean"):
            use = [c for c in order if any(f == fill for f, _ in cols.get(c, {}))]
            print(f"\nfill={fill}: preserved top-1 / mean p drop")
            print(f"{'k':>16} " + " ".join(f"{c:>12}" for c in use))
            klist = sorted({k for c in use for f, k in cols[c] if f == fill})
            lab = dict((k, lbl) for lbl, k in resolve_ks(KS, n))
            for k in klist:
                nat = [f"{s[0]}{m[0]}" for (s, m), kk in naturals.items() if kk == k]
                label = f"{k} ({lab[k]})" if k in lab else f"{k}"
                if ref_nat == k:
                    nat.append("R")
                if nat:
                    label += " nat:" + ",".join(nat)
                print(f"{label:>16} " + " ".join(f"{cell(cols[c].get((fill, k))):>12}" for c in use))
        if ref["true_objective"]:
            to = ref["true_objective"]
            print(f"refine (prob/none, 20 PGD steps): true Eq. 4 objective {to['qp']:.4g} -> {to['qp_refine']:.4g}, "
                  f"natural k {ref['natural_k']['qp']} -> {ref['natural_k']['qp_refine']}")
        # unit-free ridge λ = ρ tr(Q) / n: the natural set of the QP vs the other rankings at that k
        act_rank = rank_maps(dps[("prob", "none")].mean_act[layer].astype(np.float64).mean(0))
        rnd_rank = np.random.default_rng(0).permutation(n)
        for v in (("prob", "none"), ("prob", "l1")):
            q = dps[v].q[layer].astype(np.float64)
            acc = QPAccumulator().add(q)
            assert acc.Q is not None
            tr = float(np.trace(acc.Q))
            q_sum = q.sum(0)
            parts = []
            for rho in RHOS:
                res = acc.solve(rho * tr / n)
                k = int((res.z > 0.5).sum())
                if k == 0:
                    parts.append(f"ρ={rho:g}: k=0")
                    continue
                cells = []
                for lbl, order in (("qp", rank_maps(res.z, q_sum)), ("gx", rank_maps(q_sum)),
                                   ("act", act_rank), ("rnd", rnd_rank)):
                    rr = ev.evaluate(order[:k])
                    cells.append(f"{lbl} {rr.preserved:.2f}/{rr.drop:+.3f}")
                parts.append(f"ρ={rho:g}: k={k}: " + " ".join(cells))
            print(f"QP natural set with λ = ρ·tr(Q)/n ({v[0]}/{v[1]}, fill=zero): " + "; ".join(parts))
        print(f"[{layer}: {time.perf_counter() - t1:.1f} s, {ev.n_evals} masked passes]")
        nat = {f"{s}/{m}": k for (s, m), k in naturals.items()}
        log.append({"model": name, "layer": layer, "n": n, "naturals": nat, "tables": tabs})
    print(f"[{name}: extraction {t_extract:.1f} s, total {time.perf_counter() - t0:.1f} s]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 CIFAR images, 1 NIPS image per class")
    ap.add_argument("--nips-per-class", type=int, default=2, help="NIPS images per class (1..5; 5 = all 60)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--json", default=None, help="also write every table to this JSON file")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    per_class = 1 if args.quick else max(1, min(5, args.nips_per_class))
    n_cifar = 32 if args.quick else None
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for name in args.models.split(","):
        run_model(name.strip(), n_cifar, per_class, log)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(log, fh, indent=1)


if __name__ == "__main__":
    main()
