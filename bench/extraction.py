"""Datapath extraction benchmark: ratios measured in one run on the same images.

(a) floor: one forward + one backward of Σp to all captured layers (per batch);
(b) full extraction: the same pass plus accumulating Q, c and solving every layer's QP;
(c) per-layer loop: one forward + backward per layer (as Captum's LayerGradientXActivation
    called layer by layer), timed on an evenly spaced sample of layers and scaled to all layers.
Targets: (b)/(a) <= 1.2, (c)/(b) >= 10; peak memory over 200 images ≈ that of one batch
(peak RSS, VmHWM, of a fresh child process extracting 32 vs 200 images; ru_maxrss would include
the parent's peak, which survives exec on Linux).

Usage: python bench/extraction.py [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from aevis_core.data import demo_path, load_image_set
from aevis_core.datapath.extract import ExtractConfig, extract_datapath
from aevis_core.datapath.scores_pass import batch_scores
from aevis_core.graph import LayerCapture, build_graph
from aevis_core.models import load_model


def floor_pass(entry, graph, x, targets, layers, batch_size):  # noqa: ANN001, ANN201
    cap = LayerCapture(entry.model, graph, layers)
    for s in range(0, x.shape[0], batch_size):
        batch_scores(cap, x[s:s + batch_size], targets[s:s + batch_size])


def per_layer_loop(entry, graph, x, targets, layers, batch_size):  # noqa: ANN001, ANN201
    for lid in layers:
        floor_pass(entry, graph, x, targets, [lid], batch_size)


def best_of(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(model: str, demo: str, n: int, repeat: int, sample: int) -> None:
    entry = load_model(model)
    graph = build_graph(entry.model, (3, *entry.input_size), model)
    s = load_image_set(demo_path(demo))
    x = entry.preprocess_many(s.images[:n])
    if x.shape[0] < n:  # pad with flipped copies
        x = torch.cat([x, x.flip(3)])[:n]
    layers = graph.feature_layers()
    targets = entry.predict(x)[1]
    cfg = ExtractConfig(batch_size=32)
    extract_datapath(entry, graph, x[:2], cfg)  # warm-up
    a = best_of(lambda: floor_pass(entry, graph, x, targets, layers, 32), repeat)
    b = best_of(lambda: extract_datapath(entry, graph, x, cfg), repeat)
    step = max(1, len(layers) // sample)
    some = layers[::step]
    c_some = best_of(lambda: per_layer_loop(entry, graph, x, targets, some, 32), 1)
    c = c_some * len(layers) / len(some)
    print(f"{model}: {n} images, {len(layers)} layers")
    print(f"  (a) floor fwd+bwd      {a:8.2f} s")
    print(f"  (b) full extraction    {b:8.2f} s   (b)/(a) = {b / a:.2f}   target <= 1.2")
    print(f"  (c) per-layer loop     {c:8.2f} s   (c)/(b) = {c / b:.1f}   target >= 10"
          f"   ({len(some)} layers timed, scaled x{len(layers) / len(some):.1f})")


def peak_rss_child(n: int) -> float:
    code = (
        "import torch;from aevis_core.models import load_model;"
        "from aevis_core.graph import build_graph;from aevis_core.data import load_image_set,demo_path;"
        "from aevis_core.datapath.extract import extract_datapath,ExtractConfig;"
        "e=load_model('cifar-resnet56');g=build_graph(e.model,(3,32,32),'r');"
        "s=load_image_set(demo_path('cifar10'));x=e.preprocess_many(s.images);"
        f"x=torch.cat([x,x.flip(3)])[:{n}];"
        "extract_datapath(e,g,x,ExtractConfig(batch_size=32));"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]) / 1024.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer repeats and sampled layers")
    p.add_argument("--only", choices=["efficientnet", "resnet56", "memory"], default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    repeat = 1 if args.quick else 3
    sample = 8 if args.quick else 20
    if args.only in (None, "efficientnet"):
        run("efficientnet-lite0", "nips2017", 22, repeat, sample)
    if args.only in (None, "resnet56"):
        run("cifar-resnet56", "cifar10", 100, repeat, sample)
    if args.only in (None, "memory"):
        m32, m200 = peak_rss_child(32), peak_rss_child(200)
        print(f"peak RSS ResNet-56 extraction: 32 images {m32:.0f} MB, 200 images {m200:.0f} MB, "
              f"ratio {m200 / m32:.2f} (target ≈ 1)")


if __name__ == "__main__":
    main()
