"""Diverging point for every preset of a demo model, as the dashboard computes it: the MI-FGSM pool
(ε 8/255 CIFAR, 4/255 NIPS, 10 steps, 8-bit), each preset's normal images vs their twins, the
energy-matched control with R = 39 draws and the calibrated rule (issue 11: the rule must fire for
every demo preset, one-pair presets included).

Usage: python bench/presets.py efficientnet-lite0 | cifar-resnet20 | cifar-resnet56
"""
import sys
import time

import torch

from aevis_core.attacks import AttackConfig, parse_eps
from aevis_core.data import demo_path, load_image_set
from aevis_core.datapath.control_similarity import compare_with_noise_control
from aevis_core.datapath.diverge import diverging_point
from aevis_core.graph import build_graph
from aevis_core.models import load_model
from aevis_core.pool import build_pool
from app.levels.groups.presets import presets

torch.set_num_threads(2)
model = sys.argv[1]
demo, eps = ("cifar10", "8/255") if "cifar" in model else ("nips2017", "4/255")
e = load_model(model)
g = build_graph(e.model, (3, *e.input_size), e.name)
images = load_image_set(demo_path(demo))
t = time.time()
pool = build_pool(e, images, AttackConfig(method="mifgsm", eps=parse_eps(eps), steps=10))
print(f"{model}: pool of {len(images)} in {time.time() - t:.0f} s", flush=True)
found = 0
ps = presets(pool)
for name, groups in ps.items():
    normal, adv = list(groups.values())
    comp = compare_with_noise_control(e, g, pool.tensor(normal), pool.tensor(adv))
    d = diverging_point(comp)
    found += d.layer is not None
    print(f"  {name:<45} pairs {len(normal):>2}: {d.layer}  (gate p {d.gate_p:.3f})", flush=True)
print(f"{model}: diverging point found for {found} of {len(ps)} presets")
