"""Datapath extraction benchmark against the plainest honest floor, ratios measured in one run.

Per model (same images, same process, interleaved repeats, best of each):

* plain: ONE forward + ONE backward of Σ_k p_k (softmax of the predicted class) to the input
  pixels, nothing captured — what any gradient method pays at least;
* (a) the previous floor: one forward returning every layer's output + ONE
  ``torch.autograd.grad`` of Σp w.r.t. all of them + the q reductions (it keeps every layer's
  output and gradient alive until the end);
* (c) the new capture alone: one forward + one backward with tensor-hook capture of every layer
  (q and per-map means, :func:`batch_scores`), no QP;
* (b) the full extraction :func:`extract_datapath` (that capture, every QP, critical sets, links);
* Captum's one-call ``LayerGradientXActivation`` over the same module layers, when captum is
  importable (not a dependency of the project).

Peak memory: VmHWM (the kernel's high-water mark of resident memory) read by a FRESH child
process (one per model and mode) after building the model, its graph and the images, and after
one plain pass or one extraction; the ratio is extraction ÷ plain (whole-process peaks, and the
increase over the set-up). ru_maxrss is not used: on Linux it keeps the pre-exec peak of the
forked parent. Memory over 32 vs 200 images: ResNet-56 extraction in fresh children.

Models: EfficientNet-Lite0 (22 NIPS demo images), CIFAR ResNet-56 (100 CIFAR demo images), and
random-weight ResNet-101, VGG-16 and ConvNeXt-T written below (torchvision architectures, no
torchvision needed) at 224², 16 random images. With CUDA the timing table is repeated on the GPU
(peaks from ``torch.cuda.max_memory_allocated``). Targets: (b) ÷ plain ≤ 1.2, peak ≤ 1.5× plain,
memory 200 vs 32 images ≤ 1.1.

Usage: OMP_NUM_THREADS=1 python bench/extraction.py [--repeat 2] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aevis_core.datapath.extract import ExtractConfig, extract_datapath  # noqa: E402
from aevis_core.datapath.scores_pass import batch_scores  # noqa: E402
from aevis_core.graph import LayerCapture, build_graph  # noqa: E402
from aevis_core.graph.capture import map_q  # noqa: E402
from aevis_core.graph.types import LayerGraph  # noqa: E402
from aevis_core.models import load_model  # noqa: E402
from aevis_core.models.base import ModelEntry, ModelSpec, wrap  # noqa: E402

Tensor = torch.Tensor

# -- random-weight networks (torchvision architectures, written out) ---------------------------


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class ResNet101(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        cin, stages = 64, []
        for planes, n, stride in ((64, 3, 1), (128, 4, 2), (256, 23, 2), (512, 3, 2)):
            blocks = [Bottleneck(cin, planes, stride)] + [Bottleneck(planes * 4, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = planes * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, 1000)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG16(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features, self.avgpool = nn.Sequential(*layers), nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm, self.pwconv1 = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim)
        self.act, self.pwconv2 = nn.GELU(), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.layer_scale * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtT(nn.Module):
    def __init__(self, dims: tuple[int, ...] = (96, 192, 384, 768), depths: tuple[int, ...] = (3, 3, 9, 3)) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))]
        for i, (d, n) in enumerate(zip(dims, depths, strict=True)):
            if i:
                mods.append(nn.Sequential(LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)))
            mods.append(nn.Sequential(*[CNBlock(d) for _ in range(n)]))
        self.features = nn.Sequential(*mods)
        self.avgpool, self.norm = nn.AdaptiveAvgPool2d(1), LayerNorm2d(dims[-1], eps=1e-6)
        self.fc = nn.Linear(dims[-1], 1000)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.norm(self.avgpool(self.features(x))), 1))


RANDOM = {"resnet101": ResNet101, "vgg16": VGG16, "convnext": ConvNeXtT}
CASES = {  # name -> (zoo model or random net, demo set or None, number of images)
    "efficientnet": ("efficientnet-lite0", "nips2017", 22),
    "resnet56": ("cifar-resnet56", "cifar10", 100),
    "resnet101": ("resnet101", None, 16),
    "vgg16": ("vgg16", None, 16),
    "convnext": ("convnext", None, 16),
}


def setup(case: str, n: int | None = None, device: str = "cpu") -> tuple[ModelEntry, LayerGraph, Tensor]:
    """Model entry, layer graph and the (n, 3, H, W) images of a case."""
    model, demo, count = CASES[case]
    n = n or count
    torch.manual_seed(0)
    if demo is None:
        entry = wrap(ModelSpec(RANDOM[model](), (224, 224), [str(i) for i in range(1000)],
                               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), model)
        x = torch.rand(n, 3, 224, 224)
    else:
        from aevis_core.data import demo_path, load_image_set

        entry = load_model(model)
        x = entry.preprocess_many(load_image_set(demo_path(demo)).images)
        while x.shape[0] < n:  # pad with flipped copies
            x = torch.cat([x, x.flip(3)])
        x = x[:n]
    entry.model.to(device)
    graph = build_graph(entry.model, (3, *entry.input_size), model)
    return entry, graph, x.to(device)


# -- the passes --------------------------------------------------------------------------------

def plain(entry: ModelEntry, graph: LayerGraph, x: Tensor, bs: int = 32) -> None:
    """Forward + backward of Σp (predicted class) to the input; nothing captured."""
    for s in range(0, x.shape[0], bs):
        xx = x[s:s + bs].detach().requires_grad_(True)
        probs = torch.softmax(entry.model(xx).float(), 1)
        torch.autograd.grad(probs.max(1).values.sum(), [xx])


def old_floor(entry: ModelEntry, graph: LayerGraph, x: Tensor, bs: int = 32) -> None:
    """The previous floor: every layer's output returned, one autograd.grad to all of them, q."""
    ids = graph.feature_layers()
    cap = LayerCapture(entry.model, graph, ids)
    for s in range(0, x.shape[0], bs):
        xx = x[s:s + bs].detach().requires_grad_(True)
        logits, acts = cap(xx)
        p = torch.softmax(logits.float(), 1).max(1).values
        grads = torch.autograd.grad(p.sum(), [acts[k] for k in ids], allow_unused=True)
        for k, g in zip(ids, grads, strict=True):
            if g is not None:
                map_q(acts[k].detach(), g, 1)
        del acts, grads


def capture_pass(entry: ModelEntry, graph: LayerGraph, x: Tensor, bs: int = 32) -> None:
    """(c) one forward + one backward with tensor-hook capture of every layer (q, means), no QP."""
    cap = LayerCapture(entry.model, graph, graph.feature_layers())
    for s in range(0, x.shape[0], bs):
        batch_scores(cap, x[s:s + bs], None)


def extraction(entry: ModelEntry, graph: LayerGraph, x: Tensor, bs: int = 32) -> None:
    """The full extraction (QP method, default options)."""
    extract_datapath(entry, graph, x, ExtractConfig(batch_size=bs))


def captum_pass(entry: ModelEntry, graph: LayerGraph, x: Tensor, bs: int = 32) -> None:
    """Captum's LayerGradientXActivation over every module layer in one call per batch."""
    from captum.attr import LayerGradientXActivation

    net = entry.model
    mods = [net.get_submodule(f"net.{graph.nodes[k].module}") for k in graph.feature_layers()
            if graph.nodes[k].module and "#" not in k]
    lgxa = LayerGradientXActivation(net, mods)
    for s in range(0, x.shape[0], bs):
        xb = x[s:s + bs]
        with torch.no_grad():
            target = net(xb).argmax(1)
        lgxa.attribute(xb, target=target.tolist())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(case: str, repeat: int, device: str) -> dict[str, float]:
    """Best-of-``repeat`` seconds of each pass, interleaved (plain, a, b, captum, plain, ...)."""
    entry, graph, x = setup(case, device=device)
    fns: dict[str, Callable[..., None]] = {"plain": plain, "a": old_floor, "c": capture_pass, "b": extraction}
    try:
        import captum  # noqa: F401

        fns["captum"] = captum_pass
    except ImportError:
        pass
    for fn in fns.values():  # warm-up on two images
        fn(entry, graph, x[:2])
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn(entry, graph, x)
            sync(device)
            best[k] = min(best[k], time.perf_counter() - t)
    best["layers"] = len(graph.feature_layers())
    best["images"] = x.shape[0]
    return best


def _vm(field: str) -> float:
    return next(float(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith(field)) / 1024.0


def child(case: str, mode: str, n: int | None, device: str) -> None:
    """Run in a fresh process: set-up, then ONE pass; print the peaks (MB) as JSON."""
    entry, graph, x = setup(case, n, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _vm("VmHWM")
    {"plain": plain, "b": extraction}[mode](entry, graph, x)
    out = {"setup": before, "peak": _vm("VmHWM")}
    if device.startswith("cuda"):
        out["cuda_peak"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def peak(case: str, mode: str, n: int | None = None, device: str = "cpu") -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", case, mode, str(n or 0), device]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def report(device: str, cases: list[str], repeat: int) -> None:
    print(f"\n## {device.upper()} (torch {torch.__version__}, threads {torch.get_num_threads()}, best of {repeat})")
    head = ("| model, images | layers | plain fwd+bwd | (a) old floor | (b) extraction | (b) ÷ plain | (a) ÷ plain"
            " | (c) capture ÷ plain | captum ÷ plain | peak plain | peak (b) | peak ratio | increase ratio |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for case in cases:
        t = time_case(case, repeat, device)
        mp, mb = peak(case, "plain", device=device), peak(case, "b", device=device)
        key = "cuda_peak" if device.startswith("cuda") else "peak"
        inc = (mb[key] - (0 if key == "cuda_peak" else mb["setup"])) / max(
            1e-9, mp[key] - (0 if key == "cuda_peak" else mp["setup"]))
        cap = f"{t['captum'] / t['plain']:.2f}" if "captum" in t else "—"
        print(f"| {CASES[case][0]}, {int(t['images'])} | {int(t['layers'])} | {t['plain']:.2f} s | {t['a']:.2f} s "
              f"| {t['b']:.2f} s | **{t['b'] / t['plain']:.2f}** | {t['a'] / t['plain']:.2f} "
              f"| {t['c'] / t['plain']:.2f} | {cap} "
              f"| {mp[key]:.0f} MB | {mb[key]:.0f} MB | **{mb[key] / mp[key]:.2f}** | {inc:.2f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--only", nargs="*", choices=[*CASES, "memory"], default=None)
    p.add_argument("--child", nargs=4, metavar=("CASE", "MODE", "N", "DEVICE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        case, mode, n, device = args.child
        child(case, mode, int(n) or None, device)
        return
    only = args.only or [*CASES, "memory"]
    cases = [c for c in CASES if c in only]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        if cases:
            report(device, cases, args.repeat)
    if "memory" in only:
        m32, m200 = peak("resnet56", "b", 32)["peak"], peak("resnet56", "b", 200)["peak"]
        print(f"\nPeak memory (VmHWM) of a ResNet-56 extraction: 32 images {m32:.0f} MB, 200 images {m200:.0f} MB, "
              f"ratio {m200 / m32:.2f} (target ≤ 1.1)")


if __name__ == "__main__":
    main()
