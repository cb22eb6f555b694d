"""Benchmark of the calibrated diverging point (``aevis_core.datapath.diverge``).

    OMP_NUM_THREADS=1 python bench/diverge.py                     # ResNet-20, ResNet-56, EfficientNet-Lite0
    OMP_NUM_THREADS=1 python bench/diverge.py --models cifar-resnet20 --reps 1000

Per model (demo images; CIFAR ResNets: the 100 CIFAR-10 images, 10 per class, eps 8/255;
EfficientNet-Lite0: the NIPS-2017 demo, the first --lite-images images of classes with >= 5
images, eps 4/255; 10-step attacks, 8-bit quantised as the pool stores them):

1. False positives on no-attack pairs: pairs (normal, normal + a fresh shuffled draw of the
   MI-FGSM perturbation), R = 39 controls. A pool of 1 + --pool draws per image is computed once
   and every repetition draws 40 of them per image without replacement (the first plays the
   "adversarial" twin), for random image sets of 1, 5 and 10 pairs. Rates of the default rule
   and of its purely statistical part (min_effect 0; the gate is an exact level-alpha test).
2. Detection on MI-FGSM and PGD: fraction of image sets of 1, 5 and 10 pairs (CIFAR: every
   image, class halves, classes; EfficientNet: every image, classes of 5, pairs of classes)
   with a diverging point, and its median position (fraction of the depth).
3. Stability of the diverging point of one set (CIFAR: the first class, 10 airplanes; EfficientNet: the first 10
   images) across control kinds (with each control's rms), control seeds, PGD seeds, and
   across disjoint image subsets (the class sets).
4. Cost: time of the comparison with R = 39 draws over the plain paired similarity (R = 0), same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch

from aevis_core.attacks import AttackConfig, quantise, run_attack
from aevis_core.data import demo_path, load_image_set
from aevis_core.datapath.control_similarity import NoiseComparison, compare_with_noise_control
from aevis_core.datapath.controls import CONTROLS, control_draws
from aevis_core.datapath.diverge import DivergenceConfig, diverging_point, find_diverging_point
from aevis_core.datapath.similarity import activation_similarity
from aevis_core.graph import build_graph
from aevis_core.graph.types import LayerGraph
from aevis_core.models import ModelEntry, load_model

SETUPS = {"cifar-resnet20": ("cifar10", 8 / 255), "cifar-resnet56": ("cifar10", 8 / 255),
          "efficientnet-lite0": ("nips2017", 4 / 255)}
ALPHA = 0.05


def attack(entry: ModelEntry, x: torch.Tensor, y: torch.Tensor, method: str, eps: float, seed: int = 0) -> torch.Tensor:
    """8-bit quantised adversarial twins (as the pool stores them), in batches of 16."""
    cfg = AttackConfig(method=method, eps=eps, steps=10, seed=seed, batch_size=16)
    adv = run_attack(entry.model, x, y, cfg)
    return quantise(adv, x, eps)[0].float() / 255


def subset(cmp: NoiseComparison, imgs: Sequence[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return ({k: v[list(imgs)] for k, v in cmp.sim_adv.items()}, {k: v[list(imgs)] for k, v in cmp.sim_control.items()})


def sets_of(groups: list[list[int]]) -> dict[int, list[list[int]]]:
    """Image sets of 1, 5 and 10 pairs from class groups (indices into the analysed images)."""
    singles = [[i] for g in groups for i in g]
    fives = [g[h:h + 5] for g in groups for h in range(0, len(g) - 4, 5)]
    tens = ([g[:10] for g in groups if len(g) >= 10] or
            [groups[j][:5] + groups[j + 1][:5] for j in range(0, len(groups) - 1, 2)])
    return {1: singles, 5: fives, 10: tens}


def load(name: str, lite_images: int) -> tuple[ModelEntry, LayerGraph, torch.Tensor, torch.Tensor, list[list[int]],
                                               float, list[str]]:
    data, eps = SETUPS[name]
    entry = load_model(name, device="cpu")
    images = load_image_set(demo_path(data))
    by_class: dict[int, list[int]] = {}
    for i, lab in enumerate(images.labels):
        if lab is not None:
            by_class.setdefault(int(lab), []).append(i)
    if data == "nips2017":
        chosen = [v[:5] for _, v in sorted(by_class.items()) if len(v) >= 5][: max(1, lite_images // 5)]
    else:
        chosen = [v[:10] for _, v in sorted(by_class.items())]
    order = [i for g in chosen for i in g]
    by_label = {i: lab for lab, v in by_class.items() for i in v}
    names = [str(images.label_name(g[0])) for g in chosen]
    x = entry.preprocess_many([images.images[i] for i in order])
    x = (x * 255).round() / 255
    y = torch.tensor([by_label[i] for i in order])
    groups, k = [], 0
    for g in chosen:
        groups.append(list(range(k, k + len(g))))
        k += len(g)
    graph = build_graph(entry.model, (3, *entry.input_size), entry.name)
    return entry, graph, x, y, groups, eps, names


def false_positives(entry: ModelEntry, graph: LayerGraph, x: torch.Tensor, xa: torch.Tensor, pool: int, reps: int,
                    seed: int = 0) -> dict[int, tuple[float, float, int]]:
    """size -> (default-rule rate, statistical-part rate, repetitions) on no-attack pairs."""
    n = min(10, x.shape[0])
    fresh = torch.cat([control_draws(x[i], xa[i], i, range(10_000, 10_001)) for i in range(n)])
    t = time.perf_counter()
    cmp = compare_with_noise_control(entry, graph, x[:n], fresh, draws=pool, seed=1)
    print(f"  no-attack pool: {n} images x {pool + 1} draws in {time.perf_counter() - t:.0f} s")
    sims = {k: np.concatenate([cmp.sim_adv[k][:, None], cmp.sim_control[k]], axis=1) for k in cmp.layers}
    rng = np.random.default_rng(seed)
    out = {}
    for size in (1, 5, 10):
        fired = {0.05: 0, 0.0: 0}
        for _ in range(reps):
            imgs = rng.choice(n, size=size, replace=False)
            pick = np.stack([rng.permutation(pool + 1)[:40] for _ in imgs])
            adv = {k: sims[k][imgs, pick[:, 0]] for k in sims}
            ctrl = {k: np.take_along_axis(sims[k][imgs], pick[:, 1:], axis=1) for k in sims}
            for m in fired:
                d = find_diverging_point(adv, ctrl, cmp.layers, DivergenceConfig(min_effect=m))
                fired[m] += d.layer is not None
        out[size] = (fired[0.05] / reps, fired[0.0] / reps, reps)
    return out


def detection(cmp: NoiseComparison, sets: dict[int, list[list[int]]]) -> dict[int, tuple[int, int, float]]:
    """size -> (sets with a diverging point, sets, median position as a fraction of the depth)."""
    out = {}
    for size, ss in sets.items():
        pos = []
        for imgs in ss:
            d = find_diverging_point(*subset(cmp, imgs), cmp.layers)
            if d.index is not None:
                pos.append(d.index / len(cmp.layers))
        out[size] = (len(pos), len(ss), float(np.median(pos)) if pos else float("nan"))
    return out


def where(cmp: NoiseComparison, imgs: Sequence[int] | None = None) -> str:
    d = (diverging_point(cmp) if imgs is None else find_diverging_point(*subset(cmp, imgs), cmp.layers))
    return f"{d.layer} ({d.index}/{len(cmp.layers)})" if d.layer else f"none (candidate {d.candidate})"


def run(name: str, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    entry, graph, x, y, groups, eps, names = load(name, args.lite_images)
    lite = SETUPS[name][0] == "nips2017"
    print(f"\n=== {name}: {x.shape[0]} images in {len(groups)} classes, eps {eps * 255:.0f}/255, "
          f"{len(graph.feature_layers())} layers; R = 39 shuffled draws unless stated")
    adv = {"mifgsm": attack(entry, x, y, "mifgsm", eps), "pgd": attack(entry, x, y, "pgd", eps)}
    fooled = {m: float((entry.predict(a)[1] != y).float().mean()) for m, a in adv.items()}
    print(f"  attacks: MI-FGSM fools {fooled['mifgsm']:.0%}, PGD {fooled['pgd']:.0%} of the images")

    parts = set(args.parts.split(","))
    if "fp" in parts:
        reps = args.lite_reps if lite else args.reps
        fp = false_positives(entry, graph, x, adv["mifgsm"], args.lite_pool if lite else args.pool, reps)
        print("\n  | no-attack pairs | default rule fires | statistical part (min_effect 0) | repetitions |")
        print("  |---|---|---|---|")
        for size, (a, b, r) in fp.items():
            print(f"  | {size} pair(s) | {a:.3f} | {b:.3f} | {r} |", flush=True)

    sets = sets_of(groups)
    cmps: dict[str, NoiseComparison] = {}
    for m in adv if "detect" in parts or "stability" in parts else ():
        t = time.perf_counter()
        cmps[m] = compare_with_noise_control(entry, graph, x, adv[m])
        print(f"  {m}: comparison of {x.shape[0]} pairs with 39 draws in {time.perf_counter() - t:.0f} s")
    if "detect" in parts:
        print("\n  | attack | 1 pair | 5 pairs | 10 pairs |")
        print("  |---|---|---|---|")
        for m, cmp in cmps.items():
            det = detection(cmp, sets)
            cells = [f"{a}/{n} = {a / n:.0%} (median at {p:.2f} of depth)" if n else "-" for a, n, p in det.values()]
            print(f"  | {m} | " + " | ".join(cells) + " |", flush=True)
    ten = sets[10][0][: args.stability_images]
    if "stability" in parts:
        stability(entry, graph, x, y, adv, cmps, ten, groups, names, eps, lite)
    if "cost" in parts:
        cost(entry, graph, x[ten], adv["mifgsm"][ten])
    print(f"  ({name} done in {time.perf_counter() - t0:.0f} s)")


def stability(entry: ModelEntry, graph: LayerGraph, x: torch.Tensor, y: torch.Tensor, adv: dict[str, torch.Tensor],
              cmps: dict[str, NoiseComparison], ten: list[int], groups: list[list[int]], names: list[str],
              eps: float, lite: bool) -> None:
    """Diverging point of one set across controls, control seeds, PGD seeds; of disjoint subsets."""
    xs, xas = x[ten], adv["mifgsm"][ten]
    label = f"{names[0]} set of {len(ten)}" if not lite else f"first {len(ten)} images"
    print(f"\n  stability of the diverging point ({label}, MI-FGSM):")
    print("  | varied | value | diverging point (index/layers) | rms adv / control x255 |")
    print("  |---|---|---|---|")
    for kind in CONTROLS:
        c = compare_with_noise_control(entry, graph, xs, xas, eps, control=kind)
        energy = c.rms_255()
        print(f"  | control | {kind} | {where(c)} | {energy['rms_adv_255']} / {energy['rms_control_255']} |",
              flush=True)
    print(f"  | control seed | 0 | {where(cmps['mifgsm'], ten)} | |", flush=True)
    for seed in (1, 2):
        c = compare_with_noise_control(entry, graph, xs, xas, seed=seed)
        print(f"  | control seed | {seed} | {where(c)} | |", flush=True)
    print(f"  | PGD seed | 0 | {where(cmps['pgd'], ten)} | |", flush=True)
    for seed in (1, 2):
        c = compare_with_noise_control(entry, graph, xs, attack(entry, xs, y[ten], "pgd", eps, seed))
        print(f"  | PGD seed | {seed} | {where(c)} | |", flush=True)
    for g, nm in zip(groups, names, strict=True):
        halves = [g[:5], g[5:10]] if len(g) >= 10 else [g]
        found = " / ".join(where(cmps["mifgsm"], h) for h in halves)
        print(f"  | disjoint subset | {nm} ({' / '.join(str(len(h)) for h in halves)} images) | {found} | |")


def cost(entry: ModelEntry, graph: LayerGraph, xs: torch.Tensor, xas: torch.Tensor) -> None:
    """Time of the comparison with 39 draws over the plain paired similarity, same run."""
    t = time.perf_counter()
    activation_similarity(entry, graph, xs, xas)
    plain = time.perf_counter() - t
    t = time.perf_counter()
    compare_with_noise_control(entry, graph, xs, xas)
    full = time.perf_counter() - t
    print(f"\n  cost: comparison with 39 draws / plain paired similarity = {full / plain:.1f}x "
          f"({xs.shape[0]} pairs; forwards ratio {(39 + 2) / 2:.1f}x)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="cifar-resnet20,cifar-resnet56,efficientnet-lite0")
    p.add_argument("--reps", type=int, default=400, help="no-attack repetitions per set size (CIFAR)")
    p.add_argument("--pool", type=int, default=199, help="control draws per image in the no-attack pool (CIFAR)")
    p.add_argument("--lite-reps", type=int, default=200, help="repetitions for EfficientNet-Lite0")
    p.add_argument("--lite-pool", type=int, default=79, help="pool draws per image for EfficientNet-Lite0")
    p.add_argument("--lite-images", type=int, default=20, help="NIPS images for EfficientNet-Lite0 (classes of 5)")
    p.add_argument("--parts", default="fp,detect,stability,cost", help="which tables (default all)")
    p.add_argument("--stability-images", type=int, default=10, help="size of the set the stability table varies")
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); alpha {ALPHA}")
    for name in args.models.split(","):
        run(name.strip(), args)


if __name__ == "__main__":
    main()
