"""One forward + ONE backward pass: per-image, per-feature-map contributions q (Eq. 4-5 input).

For images k, a chosen output p_k (probability or logit of the target class) and every
captured layer with activations a (N, ..., C, ...) (maps on the layer's channel axis) and
gradients g = ∂p/∂a, ``q_kj = Σ_rest a_kj · g_kj`` (gradient × activation, summed over every
other axis: space, tokens). The backward pass is the plain ``torch.autograd.grad(Σ_k p_k, x)``;
each layer's q is reduced to (B, C) by a tensor hook the moment the gradient reaches the layer
(:meth:`~aevis_core.graph.capture.LayerCapture.taps`), so no layer's gradient outlives it.
Images do not interact in eval mode, so the gradient of the sum w.r.t. image k's activation is
∂p_k/∂a_k. No parameter gradients are computed.
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
        logits, taps = capture.taps(x)
        logits = logits.float()
        probs = torch.softmax(logits, dim=1)
        out = probs if score == "prob" else logits
        if targets is None:
            targets = logits.detach().argmax(dim=1)
        p = out.gather(1, targets.view(-1, 1).to(out.device)).squeeze(1)
        if p.requires_grad:
            torch.autograd.grad(p.sum(), [x], allow_unused=True)
        del logits, out
    taps.finish()
    q = {k: taps.q[k].double().cpu() for k in capture.layer_ids}
    mean_act = {k: taps.mean[k].double().cpu() for k in capture.layer_ids}
    return BatchScores(q, mean_act, probs.detach().cpu(), p.detach().cpu(), targets.detach().cpu())
