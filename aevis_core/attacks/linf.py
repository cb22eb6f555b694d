"""L-inf gradient-sign attacks on pixel-space models: FGSM, PGD and MI-FGSM, one shared loop.

Why not call ``torchattacks`` (3.5.1) although it has all three: its PGD random start draws from
the global RNG for the whole batch, so the noise an image gets depends on how the set is batched
and on earlier RNG use (the dashboard must reproduce a stored example from its seed); its
MI-FGSM divides by ``mean|grad|`` unguarded, so one all-zero gradient (a saturated model) turns
the momentum into NaN and silently freezes that image for the remaining steps; it prints to
stdout and toggles ``model.train()/eval()``. The loop below uses per-image summed losses, a
per-image seeded random start (global RNG untouched) and a zero-guarded normalisation. Otherwise
it is the same algorithm: ``tests/test_attacks.py`` checks that FGSM, MI-FGSM (untargeted and
targeted) and PGD without random start agree with torchattacks (bit for bit on the CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

_SEED_STRIDE = 1_000_003  # seed -> per-image generator seeds that do not collide for small seeds


def _random_start(x: Tensor, eps: float, seed: int, offset: int) -> Tensor:
    """Uniform noise in [-eps, eps], (B, C, H, W); image ``offset + i`` always gets the same draw."""
    noise = torch.empty((x.shape[0], *x.shape[1:]), dtype=torch.float32)
    for i in range(x.shape[0]):
        g = torch.Generator().manual_seed(seed * _SEED_STRIDE + offset + i)
        noise[i].uniform_(-eps, eps, generator=g)
    return noise.to(device=x.device, dtype=x.dtype)


def linf_attack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
                decay: float | None = None, target: Tensor | None = None,
                random_start: bool = False, seed: int = 0, offset: int = 0) -> Tensor:
    """Iterative signed-gradient attack under ``||adv - x||_inf <= eps``, adv in [0, 1].

    x: (B, 3, H, W) pixels in [0, 1]; y: (B,) true classes; target: (B,) classes to reach
    (targeted mode: descend the cross-entropy of ``target``) or None (ascend that of ``y``).

    - FGSM (Goodfellow et al. 2015): ``steps=1, alpha=eps``.
    - PGD (Madry et al. 2018): ``random_start=True``, ``decay=None``.
    - MI-FGSM (Dong et al. 2018, Alg. 1): ``decay=μ``; ``g ← μ·g + ∇J / ||∇J||_1`` and
      ``x ← clip(x + α·sign(g))``. The L1 norm is taken as ``mean |∇J|`` (the same up to the
      constant pixel count, hence the same signs) and guarded against zero gradients.

    ``seed``/``offset`` make the random start per image (global index ``offset + i``).
    Returns (B, 3, H, W) detached adversarial images.
    """
    x = x.detach()
    adv = x.clone()
    if random_start:
        adv = (x + _random_start(x, eps, seed, offset)).clamp(0.0, 1.0)
    momentum = torch.zeros_like(x) if decay is not None else None
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = model(adv)
        if target is not None:
            loss = -F.cross_entropy(logits, target, reduction="sum")
        else:
            loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        if momentum is not None and decay is not None:
            scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True)
            scale = scale.clamp_min(torch.finfo(scale.dtype).tiny)  # only an all-zero gradient
            momentum = decay * momentum + grad / scale
            direction = momentum.sign()
        else:
            direction = grad.sign()
        stepped = adv.detach() + alpha * direction
        adv = (x + (stepped - x).clamp(-eps, eps)).clamp(0.0, 1.0).detach()
    return adv
