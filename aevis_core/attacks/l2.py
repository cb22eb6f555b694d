"""Minimal-L2 attacks: Carlini & Wagner L2 and DeepFool, batched, per-image independent.

Why not ``torchattacks`` (3.5.1): its ``CW.f`` masks the true class by multiplying logits with
``1 - onehot``, so with all other logits negative the "best other logit" becomes 0 (a wrong
margin), and it stops early on the *batch* total cost, so an image's result depends on its
batch; its ``DeepFool`` runs one image at a time, takes one backward pass per class (1000 per
step on ImageNet) and applies the overshoot to each step instead of the total perturbation.
"""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


def _margin(logits: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K) logits -> (logit of ``cls``, best logit of any other class), each (B,)."""
    real = logits.gather(1, cls[:, None])[:, 0]
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, cls[:, None], True)
    other = logits.masked_fill(mask, float("-inf")).amax(dim=1)
    return real, other


def cw_l2(model: nn.Module, x: Tensor, y: Tensor, *, c: float, kappa: float, lr: float,
          steps: int, target: Tensor | None = None) -> Tensor:
    """C&W-L2 (Carlini & Wagner, S&P 2017, Sec. V-A) with a fixed ``c`` (no binary search).

    Minimises ``||adv - x||_2^2 + c · f(adv)`` over ``adv = (tanh(w) + 1) / 2`` with Adam, where
    ``f = max(Z_y - max_{i≠y} Z_i, -κ)`` (untargeted) or ``max(max_{i≠t} Z_i - Z_t, -κ)``
    (targeted). Returns, per image, the smallest-L2 iterate that succeeded; images that never
    succeed get the last iterate. x: (B, 3, H, W) in [0, 1]; y, target: (B,). -> (B, 3, H, W).
    """
    x = x.detach()
    w = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    best = x.clone()
    best_l2 = torch.full((x.shape[0],), float("inf"), device=x.device)
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    cls = target if target is not None else y
    adv = x
    for step in range(steps + 1):  # the last pass only evaluates the final iterate
        adv = (torch.tanh(w) + 1) / 2
        l2 = (adv - x).pow(2).flatten(1).sum(dim=1)
        logits = model(adv)
        real, other = _margin(logits, cls)
        with torch.no_grad():
            pred = logits.argmax(dim=1)
            ok = pred == target if target is not None else pred != y
            better = ok & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best[better] = adv[better].detach()
            found |= ok
        if step == steps:
            break
        margin = (other - real) if target is not None else (real - other)
        loss = (l2 + c * margin.clamp_min(-kappa)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = adv.detach().clamp(0.0, 1.0)
    return torch.where(found[:, None, None, None], best, last).clamp(0.0, 1.0)


def deepfool(model: nn.Module, x: Tensor, *, steps: int, overshoot: float,
             candidates: int = 10) -> Tensor:
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016, Alg. 2), batched over images.

    Each image is pushed off its *clean predicted* class (as in the paper; true labels are not
    used) towards the nearest linearised boundary among its top ``candidates`` classes; the
    total perturbation ``r`` is scaled by ``1 + overshoot`` and the image clipped to [0, 1].
    Stops per image as soon as the prediction changes, after at most ``steps`` iterations.
    x: (B, 3, H, W) in [0, 1] -> (B, 3, H, W).
    """
    x = x.detach()
    with torch.no_grad():
        logits0 = model(x)
    k = min(candidates, logits0.shape[1])
    cand = logits0.topk(k, dim=1).indices  # (B, k); column 0 is the clean prediction
    orig = cand[:, 0]
    r_tot = torch.zeros_like(x)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        adv = (x + (1 + overshoot) * r_tot).clamp(0.0, 1.0).requires_grad_(True)
        logits = model(adv)
        active &= logits.argmax(dim=1) == orig
        if not bool(active.any()):
            break
        f = logits.gather(1, cand)  # (B, k)
        grads = [torch.autograd.grad(f[:, j].sum(), adv, retain_graph=j < k - 1)[0]
                 for j in range(k)]
        with torch.no_grad():
            g = torch.stack(grads, dim=1)  # (B, k, 3, H, W)
            w_k = (g[:, 1:] - g[:, :1]).flatten(2)  # (B, k-1, D)
            f_k = (f[:, 1:] - f[:, :1]).detach()  # (B, k-1)
            w_norm = w_k.norm(dim=2).clamp_min(1e-12)
            pert = f_k.abs() / w_norm
            best = pert.argmin(dim=1)  # (B,)
            w_best = w_k[torch.arange(x.shape[0]), best].view_as(x)
            p_best = pert.gather(1, best[:, None])[:, 0]
            n_best = w_norm.gather(1, best[:, None])[:, 0]
            r_i = ((p_best + 1e-4) / n_best)[:, None, None, None] * w_best
            r_tot = r_tot + torch.where(active[:, None, None, None], r_i, torch.zeros_like(r_i))
    return (x + (1 + overshoot) * r_tot).clamp(0.0, 1.0).detach()
