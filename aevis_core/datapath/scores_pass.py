"""One forward + ONE backward pass: per-image, per-feature-map contributions q (Eq. 4-5 input).

For images k, a chosen output p_k (probability or logit of the target class) and every
captured layer with activations a (N, C, ...) and gradients g = ∂p/∂a,
``q_kj = Σ_space a_kj · g_kj`` (gradient × activation, summed over space). All layers' gradients
come from a single ``torch.autograd.grad(Σ_k p_k, [a_1, ..., a_L])`` call: images do not
interact in eval mode, so the gradient of the sum w.r.t. image k's activation is ∂p_k/∂a_k.
No parameter gradients are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aevis_core.graph.capture import LayerCapture

Tensor = torch.Tensor
SCORES = ("prob", "logit")


@dataclass
class BatchScores:
    """Per-batch results: q and mean activation per layer (B, C) float64 CPU, plus outputs."""

    q: dict[str, Tensor]
    mean_act: dict[str, Tensor]
    probs: Tensor       # (B, K)
    p: Tensor           # (B,) the differentiated output per image
    targets: Tensor     # (B,) the class differentiated per image


def batch_scores(capture: LayerCapture, x: Tensor, targets: Tensor | None, score: str = "prob") -> BatchScores:
    """q (B, C) and mean activation (B, C) for every layer of ``capture`` on one batch.

    ``x``: (B, 3, H, W) pixels on the model's device; ``targets``: (B,) class per image, or None
    for each image's predicted class (taken from this very forward pass, no extra one);
    ``score``: ``"prob"`` (softmax probability, the paper's p) or ``"logit"``.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}")
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits, acts = capture(x)
        logits = logits.float()
        probs = torch.softmax(logits, dim=1)
        out = probs if score == "prob" else logits
        if targets is None:
            targets = logits.detach().argmax(dim=1)
        p = out.gather(1, targets.view(-1, 1).to(out.device)).squeeze(1)
        names = list(acts)
        grads = torch.autograd.grad(p.sum(), [acts[k] for k in names], allow_unused=True)
    q: dict[str, Tensor] = {}
    mean_act: dict[str, Tensor] = {}
    for k, g in zip(names, grads, strict=True):
        a = acts[k].detach()
        gg = torch.zeros_like(a) if g is None else g
        dims = tuple(range(2, a.dim()))
        qa = (a * gg).sum(dim=dims) if dims else a * gg
        ma = a.mean(dim=dims) if dims else a
        q[k] = qa.double().cpu()
        mean_act[k] = ma.double().cpu()
    return BatchScores(q, mean_act, probs.detach().cpu(), p.detach().cpu(), targets.detach().cpu())
