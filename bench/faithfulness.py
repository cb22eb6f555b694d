"""Held-out faithfulness of datapath methods (ResNet-56 / CIFAR-10, EfficientNet-Lite0 / NIPS 2017).

Protocol (issue 11, item 3): the demo classes (sorted by class index) are split into a **tuning**
half (even positions) and a **report** half (odd positions). Image sets: a *class set* is the
images of one class; *mixed sets* take the half's images round-robin over its classes, cut into as
many sets as the half has classes (same size as a class set). Targets are the model's predictions.

For an early, a middle and a late layer, every method ranks the layer's n maps once and only its
top-k maps are kept (the others zeroed, ``zero``, or set to their mean over the set's images,
``mean``) for k = 5, 10, 25, 50 % of n; the score of a method on a set is the preserved top-1
fraction averaged over the layers and the k (and the mean drop of the target probability).
Methods and their parameters:

* ``QP``: Eq. 5 solved exactly, score ``prob``/``logit``, q normalised ``none``/``l1``,
  λ = 0.1/n² (``paper``) or ρ·tr(Q)/n with ρ ∈ {0.1, 1}; ranked by z, ties by Σ_k q_kj;
* ``grad×act``: Σ_k q_kj with the same score / normalisation options;
* ``activation``: mean activation; ``random``: a seeded permutation;
* ``gates``: learned whole-network gates (:mod:`aevis_core.datapath.gates`, all feature layers at
  once, L1 weight β ∈ {1, 5}, at most ``--gate-steps`` steps per set, no time limit, so the
  result does not depend on the machine's load), ranked by the gate value, ties by Σ_k q_kj
  (prob, l1).

Each method's parameters are chosen on the tuning half's class sets only (zero fill, preserved
top-1; ties by the drop); then every method, with its chosen parameters, is reported on the report
half — class sets and mixed sets, zero and mean fill. The recommended default is the method that
is best on the report half's class sets, averaged over both models (the main use: normal vs
adversarial images of one class). A last section times the learned gates with the extraction
defaults (``ExtractConfig(method="gates")``) on one class set per model.

Usage: python bench/faithfulness.py [--models m1,m2] [--nips-per-class N] [--gate-steps S]
       [--nips-layers L] [--skip-gates] [--timing-only] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aevis_core.data import demo_path, load_image_set
from aevis_core.datapath.extract import ExtractConfig, extract_datapath
from aevis_core.datapath.gates import GateConfig, learn_datapath
from aevis_core.datapath.qp import default_lambda
from aevis_core.datapath.selection import QPAccumulator, rank_maps
from aevis_core.faithfulness import FaithfulnessEvaluator, resolve_ks
from aevis_core.graph import build_graph
from aevis_core.models import load_model

KS = (0.05, 0.1, 0.25, 0.5)
SCORES = ("prob", "logit")
NORMS = ("none", "l1")
LAMS = ("paper", "rho=0.1", "rho=1")
BETAS = (1.0, 5.0)
MODELS = {
    "cifar-resnet56": ("cifar10", ["layer1.4.relu2", "layer2.4.relu2", "layer3.8.relu2"]),
    "efficientnet-lite0": ("nips2017", ["_blocks.2.add", "_blocks.9.add", "_swish#2"]),
}
FAMILY = {"qp": "QP", "gx": "grad×act", "act": "activation", "random": "random", "gates": "gates"}
CURRENT_DEFAULT = "qp[prob,l1,rho=0.1]"  # the default before this protocol
GATE_BUDGET = {"efficientnet-lite0": 100.0}  # timing section; ResNet-56 uses the default budget_s


@dataclass
class ImageSet:
    """One evaluation set: kind ``class`` | ``mixed``, half ``tune`` | ``report``, images, name."""

    kind: str
    half: str
    name: str
    images: list[Any]


def family(variant: str) -> str:
    return variant.split("[")[0]


def make_sets(demo: str, per_class: int | None) -> tuple[list[ImageSet], dict[str, list[int]]]:
    """Class and mixed sets of both halves (classes with fewer than 5 images are left out of NIPS)."""
    s = load_image_set(demo_path(demo))
    counts = Counter(s.labels)
    classes = sorted(c for c, m in counts.items() if c is not None and m >= 5)
    halves = {"tune": classes[0::2], "report": classes[1::2]}
    by_class: dict[int, list[Any]] = defaultdict(list)
    for img, c in zip(s.images, s.labels, strict=True):
        if c in classes and (per_class is None or len(by_class[c]) < per_class):
            by_class[c].append(img)
    sets: list[ImageSet] = []
    for half, cls in halves.items():
        for c in cls:
            sets.append(ImageSet("class", half, f"class {c}", by_class[c]))
        size = len(by_class[cls[0]])
        pool = [by_class[c][i] for i in range(size) for c in cls]
        for j in range(len(cls)):
            chunk = pool[j * size:(j + 1) * size]
            if chunk:
                sets.append(ImageSet("mixed", half, f"mixed {j}", chunk))
    return sets, {h: [int(c) for c in v] for h, v in halves.items()}


def lam_of(q: np.ndarray, n: int, lam: str) -> float:
    if lam == "paper":
        return default_lambda(n)
    tr = float(np.einsum("ij,ij->", q, q))
    return float(lam.split("=")[1]) * tr / n if tr > 0 else default_lambda(n)


def l1(q: np.ndarray) -> np.ndarray:
    return q / np.maximum(np.abs(q).sum(1, keepdims=True), 1e-30)


def rankings(qs: dict[str, np.ndarray], act: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Every non-learned ranking of one layer from the raw q per score ((N, n), normalize none)."""
    out: dict[str, np.ndarray] = {}
    for score in SCORES:
        for norm in NORMS:
            q = qs[score] if norm == "none" else l1(qs[score])
            g = q.sum(0)
            out[f"gx[{score},{norm}]"] = rank_maps(g, act)
            acc = QPAccumulator().add(q)
            for lam in LAMS:
                z = acc.solve(lam_of(q, n, lam)).z
                out[f"qp[{score},{norm},{lam}]"] = rank_maps(z, g)
    out["act"] = rank_maps(act, l1(qs["prob"]).sum(0))
    out["random"] = np.random.default_rng(0).permutation(n).astype(np.intp)
    return out


def evaluate_set(entry: Any, graph: Any, iset: ImageSet, layers: list[str], fills: tuple[str, ...],
                 betas: tuple[float, ...], gate_steps: int) -> dict[str, dict[str, tuple[float, float]]]:
    """{variant: {fill: (preserved, drop)}} averaged over the layers and k for one set."""
    x = entry.preprocess_many(iset.images)
    targets = entry.predict(x)[1]
    labels = [int(t) for t in targets.tolist()]
    dps = {s: extract_datapath(entry, graph, x, ExtractConfig(score=s, normalize="none", target="true"),
                               layers=layers, labels=labels) for s in SCORES}
    gate_z: dict[str, dict[str, np.ndarray]] = {}
    for beta in betas:
        cfg = ExtractConfig(method="gates", score="prob", normalize="l1", target="true", sparsity=beta,
                            budget_s=1e4)  # a fixed number of steps: results do not depend on the machine's load
        gdp = learn_datapath(entry, graph, x, cfg, None, labels, gate_config=GateConfig(max_steps=gate_steps))
        gate_z[f"gates[beta={beta:g}]"] = {k: gdp.layers[k].z for k in layers}
    acc: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for layer in layers:
        ev = FaithfulnessEvaluator(entry, graph, x, layer, targets, batch_size=50)
        qs = {s: dps[s].q[layer].astype(np.float64) for s in SCORES}
        act = dps["prob"].mean_act[layer].astype(np.float64).mean(0)
        ranks = rankings(qs, act, ev.n)
        g = l1(qs["prob"]).sum(0)
        for name, zz in gate_z.items():
            ranks[name] = rank_maps(zz[layer], g)
        for _, k in resolve_ks(KS, ev.n):
            for fill in fills:
                for name, order in ranks.items():
                    r = ev.evaluate(order[:k], fill)
                    acc[name][fill].append((r.preserved, r.drop))
    return {m: {f: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))) for f, v in d.items()}
            for m, d in acc.items()}


def mean_over(results: list[dict[str, dict[str, tuple[float, float]]]], variant: str, fill: str) -> tuple[float, float]:
    vals = [r[variant][fill] for r in results if variant in r]
    return float(np.mean([a for a, _ in vals])), float(np.mean([b for _, b in vals]))


def best_per_family(results: list[dict[str, dict[str, tuple[float, float]]]]) -> dict[str, str]:
    """Each family's variant with the highest preserved top-1 (zero fill), ties by the lower drop."""
    best: dict[str, tuple[float, float, str]] = {}
    for v in results[0]:
        p, d = mean_over(results, v, "zero")
        f = family(v)
        if f not in best or (p, -d) > (best[f][0], -best[f][1]):
            best[f] = (p, d, v)
    return {f: t[2] for f, t in best.items()}


def run_model(name: str, per_class: int | None, layers_n: int | None, betas: tuple[float, ...],
              gate_steps: int, log: dict[str, Any]) -> dict[str, Any]:
    demo, layers = MODELS[name]
    if layers_n is not None:
        layers = layers[-layers_n:]
    t0 = time.perf_counter()
    entry = load_model(name)
    graph = build_graph(entry.model, (3, *entry.input_size), name)
    sets, halves = make_sets(demo, per_class)
    print(f"\n=== {name}: classes tuning {halves['tune']} / report {halves['report']}; layers {', '.join(layers)}; "
          f"{len(sets[0].images)} images per class set ===", flush=True)
    tune = [evaluate_set(entry, graph, s, layers, ("zero",), betas, gate_steps)
            for s in sets if s.half == "tune" and s.kind == "class"]
    chosen = best_per_family(tune)
    print(f"[tuning half, {len(tune)} class sets, {time.perf_counter() - t0:.0f} s] zero fill, preserved top-1 / drop:")
    for v in sorted(tune[0], key=lambda v: -mean_over(tune, v, "zero")[0]):
        p, d = mean_over(tune, v, "zero")
        mark = "   <- chosen for " + FAMILY[family(v)] if chosen[family(v)] == v else ""
        print(f"  {v:28s} {p:.3f} / {d:+.3f}{mark}")
    report: dict[str, list[dict[str, dict[str, tuple[float, float]]]]] = {}
    gate_pick = (float(chosen["gates"][len("gates[beta="):-1]),) if "gates" in chosen else ()
    for kind in ("class", "mixed"):
        report[kind] = [evaluate_set(entry, graph, s, layers, ("zero", "mean"), gate_pick, gate_steps)
                        for s in sets if s.half == "report" and s.kind == kind]
    shown = list(dict.fromkeys([*chosen.values(), CURRENT_DEFAULT]))
    table = {v: {f"{kind}/{fill}": mean_over(report[kind], v, fill) for kind in report for fill in ("zero", "mean")}
             for v in report["class"][0]}
    print(f"[report half: {len(report['class'])} class sets, {len(report['mixed'])} mixed sets; "
          f"{time.perf_counter() - t0:.0f} s] preserved top-1 / mean drop of p, mean over layers x k:")
    print(f"  {'method (params from tuning)':34s} {'class, zero':>15s} {'class, mean':>15s} "
          f"{'mixed, zero':>15s} {'mixed, mean':>15s}")
    for v in sorted(shown, key=lambda v: -table[v]["class/zero"][0]):
        label = f"{FAMILY[family(v)]} {v[len(family(v)):]}" + (" (previous default)" if v == CURRENT_DEFAULT else "")
        print(f"  {label:34s} " + " ".join(f"{table[v][c][0]:.3f}/{table[v][c][1]:+.3f}".rjust(15)
                                          for c in ("class/zero", "class/mean", "mixed/zero", "mixed/mean")))
    out = {"model": name, "halves": halves, "layers": layers, "images_per_set": len(sets[0].images),
           "chosen": chosen, "tuning": {v: mean_over(tune, v, "zero") for v in tune[0]}, "report": table,
           "seconds": time.perf_counter() - t0}
    log[name] = out
    return out


def combine(log: dict[str, Any], names: list[str]) -> None:
    """Cross-model protocol: each family's parameters chosen on both tuning halves (mean over the
    models), each family reported on both report halves; the default = the best family on the
    report half's class sets (zero fill, mean over the models)."""
    common = set.intersection(*(set(log[m]["tuning"]) for m in names))
    fams: dict[str, str] = {}
    for v in sorted(common):
        t = float(np.mean([log[m]["tuning"][v][0] for m in names]))
        f = family(v)
        if f not in fams or t > float(np.mean([log[m]["tuning"][fams[f]][0] for m in names])):
            fams[f] = v
    print(f"\n=== both models ({', '.join(names)}): parameters chosen on the tuning halves (mean over models), "
          "reported on the report halves; preserved top-1 / mean drop of p ===")
    cols = ("class/zero", "class/mean", "mixed/zero", "mixed/mean")
    print(f"  {'method (params)':34s} {'tuning, class':>14s} " + " ".join(f"{c:>15s}" for c in cols))
    rows = []
    for f, v in fams.items():
        rep = [log[m]["report"].get(v) for m in names]
        if any(r is None for r in rep):  # e.g. gates reported with another β on one model
            rep = [log[m]["report"][log[m]["chosen"][f]] for m in names]
        vals = {c: (float(np.mean([r[c][0] for r in rep])), float(np.mean([r[c][1] for r in rep]))) for c in cols}
        rows.append((vals["class/zero"][0], f, v, vals))
    for _, f, v, vals in sorted(rows, reverse=True):
        t = float(np.mean([log[m]["tuning"][v][0] for m in names]))
        print(f"  {FAMILY[f] + ' ' + v[len(f):]:34s} {t:14.3f} "
              + " ".join(f"{vals[c][0]:.3f}/{vals[c][1]:+.3f}".rjust(15) for c in cols))
    cur = [log[m]["report"][CURRENT_DEFAULT] for m in names]
    print(f"  {'QP [prob,l1,rho=0.1] (previous)':34s} {'':14s} " + " ".join(
        f"{np.mean([r[c][0] for r in cur]):.3f}/{np.mean([r[c][1] for r in cur]):+.3f}".rjust(15) for c in cols))
    best = max(rows)
    print(f"recommended default (best on the report half's class sets): {FAMILY[best[1]]} {best[2][len(best[1]):]}")


def gate_timing(name: str, budget: float | None) -> dict[str, Any]:
    """One class set (the first report class) with ``ExtractConfig(method="gates")`` defaults."""
    demo, _ = MODELS[name]
    entry = load_model(name)
    graph = build_graph(entry.model, (3, *entry.input_size), name)
    sets, _ = make_sets(demo, None)
    iset = next(s for s in sets if s.half == "report" and s.kind == "class")
    x = entry.preprocess_many(iset.images)
    cfg = ExtractConfig(method="gates") if budget is None else ExtractConfig(method="gates", budget_s=budget)
    t0 = time.perf_counter()
    extract_datapath(entry, graph, x, ExtractConfig())
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    dp = extract_datapath(entry, graph, x, cfg, progress=None)
    secs = time.perf_counter() - t0
    kept = sum(len(v.critical) for v in dp.layers.values()) / sum(v.n for v in dp.layers.values())
    load = os.getloadavg()
    print(f"  {name}: {iset.name}, {x.shape[0]} images, {len(dp.layers)} gated layers: {secs:.1f} s "
          f"(budget {cfg.budget_s:g} s; QP extraction of the same set {t_plain:.1f} s, ratio {secs / t_plain:.1f}); "
          f"kept {100 * kept:.0f} % of the maps, threshold {next(iter(dp.layers.values())).lam:g}; "
          f"load average {load[0]:.1f} on {os.cpu_count()} CPUs; device {next(entry.model.parameters()).device}",
          flush=True)
    return {"model": name, "images": int(x.shape[0]), "seconds": secs, "qp_seconds": t_plain, "kept_frac": kept,
            "loadavg": load[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--nips-per-class", type=int, default=None, help="NIPS images per class (default all 5)")
    ap.add_argument("--nips-layers", type=int, default=None, help="only the last L layers for EfficientNet")
    ap.add_argument("--gate-steps", type=int, default=60, help="gate training steps per set (at most)")
    ap.add_argument("--skip-gates", action="store_true", help="leave the learned gates out")
    ap.add_argument("--timing-only", action="store_true", help="only the gate timing section")
    ap.add_argument("--json", default=None, help="also write the tables to this JSON file")
    ap.add_argument("--combine", default=None, help="JSON files of earlier runs (comma-separated): cross-model table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("aevis_core.datapath.gates").setLevel(logging.INFO)  # steps, stop reason, threshold
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    log: dict[str, Any] = {}
    t0 = time.perf_counter()
    names = [m.strip() for m in args.models.split(",")]
    if args.combine:
        for path in args.combine.split(","):
            with open(path) as fh:
                log.update({k: v for k, v in json.load(fh).items() if k != "gate_timing"})
        combine(log, [k for k in log if k in MODELS])
        return
    if not args.timing_only:
        for name in names:
            nips = name == "efficientnet-lite0"
            run_model(name, args.nips_per_class if nips else None, args.nips_layers if nips else None,
                      () if args.skip_gates else BETAS, args.gate_steps, log)
        if len(names) > 1:
            combine(log, names)
    print("\n=== learned gates, one class set with the extraction defaults (time incl. its extraction pass) ===")
    log["gate_timing"] = [gate_timing(name, GATE_BUDGET.get(name)) for name in names]
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(log, fh, indent=1)


if __name__ == "__main__":
    main()
