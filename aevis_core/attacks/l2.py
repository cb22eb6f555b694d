"""Minimal-L2 attacks: Carlini & Wagner L2 and DeepFool, batched, per-image independent.

Why not ``torchattacks`` (3.5.1): its ``CW.f`` masks the true class by multiplying logits with
``1 - onehot``, so when all other logits are negative the "best other logit" becomes 0 (a wrong
margin), and it stops early on the *batch* total cost, so an image's result depends on its
batch; its ``DeepFool`` runs one image at a time with one backward pass per class (1000 per step
on ImageNet), where this one is batched and, like the authors' reference code, linearises only
the top ``candidates`` classes. Neither knows that stored images are 8-bit (``check_8bit``).
"""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


def _round8(x: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> the 8-bit image it is stored as, ``round(x * 255) / 255``."""
    return torch.round(x.clamp(0.0, 1.0) * 255) / 255


def _margin(logits: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K) logits -> (logit of ``cls``, best logit of any other class), each (B,)."""
    real = logits.gather(1, cls[:, None])[:, 0]
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, cls[:, None], True)
    other = logits.masked_fill(mask, float("-inf")).amax(dim=1)
    return real, other


def cw_l2(model: nn.Module, x: Tensor, y: Tensor, *, c: float, kappa: float, lr: float,
          steps: int, target: Tensor | None = None, check_8bit: bool = True) -> Tensor:
    """C&W-L2 (Carlini & Wagner, S&P 2017, Sec. V-A) with a fixed ``c`` (no binary search).

    Minimises ``||adv - x||_2^2 + c · f(adv)`` over ``adv = (tanh(w) + 1) / 2`` with Adam, where
    ``f = max(Z_y - max_{i≠y} Z_i, -κ)`` (untargeted) or ``max(max_{i≠t} Z_i - Z_t, -κ)``
    (targeted). Returns, per image, the smallest-L2 iterate that succeeded; images that never
    succeed get the last iterate. ``check_8bit``: an iterate counts as successful only if its
    8-bit rounding (what :func:`~aevis_core.attacks.save_adversarial` stores) is, at the cost of
    one extra forward pass per step. x: (B, 3, H, W) in [0, 1]; y, target: (B,) -> (B, 3, H, W).
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
            pred = (model(_round8(adv)) if check_8bit else logits).argmax(dim=1)
            ok = pred == target if target is not None else pred != y
            better = ok & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best[better] = adv[better].detach()
            found |= ok
        if step == steps:
            break
        margin = (other - real) if target is not None else (real - other)
        loss = (l2 + c * margin.clamp_min(-kappa)).sum()
        (w.grad,) = torch.autograd.grad(loss, w)  # never touches the model's parameter grads
        opt.step()
    last = adv.detach().clamp(0.0, 1.0)
    return torch.where(found[:, None, None, None], best, last).clamp(0.0, 1.0)


def _grow_until_8bit(model: nn.Module, x: Tensor, r: Tensor, orig: Tensor, scale: float,
                     factor: float = 1.25, tries: int = 40) -> Tensor:
    """Scale each perturbation ``r`` by ``scale · factor^j`` (smallest j) until the 8-bit rounded
    ``x + s·r`` leaves class ``orig``; images that never do keep ``scale · r``. (B, 3, H, W)."""
    out = (x + scale * r).clamp(0.0, 1.0)
    with torch.no_grad():
        todo = model(_round8(out)).argmax(dim=1) == orig
        todo &= r.flatten(1).abs().amax(dim=1) > 0
        for _ in range(tries):
            idx = todo.nonzero()[:, 0]
            if idx.numel() == 0:
                break
            scale *= factor
            cand = (x[idx] + scale * r[idx]).clamp(0.0, 1.0)
            ok = model(_round8(cand)).argmax(dim=1) != orig[idx]
            out[idx[ok]] = cand[ok]
            todo[idx[ok]] = False
    return out


def deepfool(model: nn.Module, x: Tensor, *, steps: int, overshoot: float,
             candidates: int = 10, check_8bit: bool = True) -> Tensor:
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016, Alg. 2), batched over images.

    Each image is pushed off its *clean predicted* class (as in the paper; true labels are not
    used) towards the nearest linearised boundary among its top ``candidates`` classes; the
    total perturbation ``r`` is scaled by ``1 + overshoot`` and the image clipped to [0, 1].
    Stops per image as soon as the prediction changes, after at most ``steps`` iterations.
    ``check_8bit``: DeepFool's perturbations are usually far below one 8-bit level, so storing
    would undo most of them; ``r`` is then scaled up by factors of 1.25 until the 8-bit
    rounded image (what gets stored) also leaves the clean class.
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
        idx = active.nonzero()[:, 0]  # only images still on their clean class are recomputed
        if idx.numel() == 0:
            break
        adv = (x[idx] + (1 + overshoot) * r_tot[idx]).clamp(0.0, 1.0).requires_grad_(True)
        logits = model(adv)
        still = logits.argmax(dim=1) == orig[idx]
        active[idx] = still
        if not bool(still.any()):
            break
        f = logits.gather(1, cand[idx])  # (b, k)
        grads = [torch.autograd.grad(f[:, j].sum(), adv, retain_graph=j < k - 1)[0]
                 for j in range(k)]
        with torch.no_grad():
            g = torch.stack(grads, dim=1)  # (b, k, 3, H, W)
            w_k = (g[:, 1:] - g[:, :1]).flatten(2)  # (b, k-1, D)
            f_k = (f[:, 1:] - f[:, :1]).detach()  # (b, k-1)
            w_norm = w_k.norm(dim=2).clamp_min(1e-12)
            pert = f_k.abs() / w_norm
            best = pert.argmin(dim=1)  # (b,)
            w_best = w_k[torch.arange(idx.numel()), best].view_as(adv)
            p_best = pert.gather(1, best[:, None])[:, 0]
            n_best = w_norm.gather(1, best[:, None])[:, 0]
            r_i = ((p_best + 1e-4) / n_best)[:, None, None, None] * w_best
            r_tot[idx[still]] += r_i[still]
    if check_8bit:
        return _grow_until_8bit(model, x, r_tot, orig, 1 + overshoot).detach()
    return (x + (1 + overshoot) * r_tot).clamp(0.0, 1.0).detach()
