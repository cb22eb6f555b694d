"""Learned whole-network datapaths: one trainable gate per feature map on every analysed layer.

The journal version of AEVis (Cao et al., "Analyzing the noise robustness of deep neural
networks", IEEE TVCG 2021) finds the datapath "by constructing and training a neural network";
Wang et al. (CVPR 2018, "Interpret neural networks by identifying critical data routing
paths") put a control gate on every channel after the non-linearities and train the gates with
a distillation loss plus an L1 sparsity term. Here, for a set of N images with targets t_k and
the analysed layers l = 1..L (n_l maps each), the model is re-traced with torch.fx and every
layer's output is multiplied per map by a gate ``g_l ∈ [0, 1]^{n_l}`` (shared by the images;
Eq. 4's ``a ⊙ z`` on all layers at once):

.. math::

    \\min_{g \\in [0,1]} \\; \\frac1N \\sum_k \\mathrm{CE}\\bigl(f_{g}(x_k), t_k\\bigr)
    \\; + \\; \\beta \\, \\frac1L \\sum_l \\frac1{n_l} \\sum_j g_{lj},

with the model's weights frozen, the gates initialised at 1 (the unmodified network; a sigmoid
at 0.95 on ~200 consecutive layers already changes the prediction) and trained by projected
Adam (clipped to [0, 1] after every step, like Wang et al.'s non-negative gates), full-batch
gradients (the images in batches of ``batch_size``), at most ``max_steps`` steps and a
wall-clock budget. Two phases: soft gates (the first ``soft_share`` of the steps and budget,
or until the loss stalls), then hard gates ``[g > 0.5]`` in the forward pass with
straight-through gradients (Bengio et al. 2013) in both terms, so the kept-only network itself
is trained;
each phase stops early when the loss has not improved by ``tol`` (relative) for ``patience``
steps. The gates returned are those of the lowest hard-phase loss ``CE(f_[g>0.5]) + β·mean([g>0.5])``
(the initial all-ones gates included, for which it equals the soft loss), so training never
ends above the unmodified network's loss; ``history[-1]`` is that loss.

Critical maps: ``z = g``; the kept set is ``{z > τ}`` with τ the largest value of
``thresholds`` (0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01) for which the **kept-only** network (every
other map of every analysed layer set to 0, the kept ones passed unscaled) still predicts t_k on
every training image; if none does, every map is kept (τ = −1: the unmasked network). So the
returned datapath is, by construction, sufficient for the training images' predictions.
:func:`learn_datapath` returns the same :class:`~aevis_core.datapath.extract.Datapath` as
:func:`~aevis_core.datapath.extract.extract_datapath` (z per map, critical sets ordered by z, the
q / activation summaries of one extraction pass, connections), so every view shows it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from aevis_core.errors import AEVisError
from aevis_core.graph.mask import apply_mask
from aevis_core.graph.trace import trace
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry

if TYPE_CHECKING:
    from aevis_core.datapath.extract import Datapath, ExtractConfig

Tensor = torch.Tensor
GateProgress = Callable[[int, int, str], None]
THRESHOLDS: tuple[float, ...] = (0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)
log = logging.getLogger(__name__)

__all__ = ["GateConfig", "GateResult", "GatedModel", "learn_datapath", "learn_gates"]


@dataclass
class GateConfig:
    """Training options of :func:`learn_gates` (see the module doc for the loss)."""

    sparsity: float = 5.0
    lr: float = 0.03
    init: float = 1.0
    max_steps: int = 300
    budget_s: float = 25.0
    patience: int = 25
    tol: float = 1e-3
    batch_size: int = 32
    soft_share: float = 0.5
    thresholds: tuple[float, ...] = THRESHOLDS


class Gate(nn.Module):
    """Per-map gate of one layer: ``a · θ`` (θ ∈ [0, 1] kept by projection) or ``a · m`` with a fixed mask ``m``."""

    def __init__(self, n: int, init: float, axis: int = 1) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.full((n,), float(init)))
        self.axis = axis  # axis of the feature maps in the raw layer output (batch included)
        self.fixed: Tensor | None = None
        self.ste = False

    def forward(self, a: Tensor) -> Tensor:
        """``a`` (maps on ``axis``) scaled per map (``ste``: by [θ > 0.5] forward, ∂/∂θ straight through)."""
        return apply_mask(a, self.fixed if self.fixed is not None else self.mask(), axis=self.axis)

    def mask(self) -> Tensor:
        """(n,) the trained mask: θ, or [θ > 0.5] with a straight-through gradient when ``ste``."""
        if not self.ste:
            return self.theta
        hard = (self.theta > 0.5).to(self.theta.dtype)
        return self.theta + (hard - self.theta).detach()


class GatedModel:
    """The model re-traced with a :class:`Gate` after each of ``layer_ids`` (model left unchanged).

    ``__call__(x)`` -> logits (B, K); ``gates[layer]`` the layer's gate; :meth:`set_hard` fixes
    0/1 masks (kept-only network), :meth:`set_soft` returns to the trained gates θ.
    """

    def __init__(self, model: nn.Module, graph: LayerGraph, layer_ids: Sequence[str], init: float = 1.0) -> None:
        if not graph.traced:
            raise AEVisError("learned gates need a torch.fx-traced graph (this model uses the hook fallback)")
        unknown = [k for k in layer_ids if k not in graph.fx_names]
        if unknown:
            raise AEVisError(f"unknown or unmaskable layer(s): {', '.join(unknown[:5])}")
        gm = trace(model)
        by_name = {nd.name: nd for nd in gm.graph.nodes}
        self.layer_ids = list(layer_ids)
        self.gates: dict[str, Gate] = {}
        for i, lid in enumerate(self.layer_ids):
            node = by_name.get(graph.fx_names[lid])
            if node is None:
                raise AEVisError(f"layer {lid!r} is not in the re-traced graph")
            node_info = graph.nodes[lid]
            if node_info.channel_axis is None:
                raise AEVisError(f"layer {lid!r} has no feature-map axis; it cannot be gated")
            gate = Gate(int(node_info.channels), init, axis=node_info.channel_axis + 1)
            name = f"aevis_gate_{i}"
            gm.add_submodule(name, gate)
            self.gates[lid] = gate
            users = list(node.users)
            with gm.graph.inserting_after(node):
                gnode = gm.graph.call_module(name, (node,))
            for u in users:
                u.replace_input_with(node, gnode)
        gm.graph.lint()
        gm.recompile()
        self.module = gm
        p = next(iter(model.parameters()), None)
        self.device = p.device if p is not None else torch.device("cpu")
        for g in self.gates.values():
            g.to(self.device)

    @property
    def ste(self) -> bool:
        """Whether the gates run hard (0/1 at 0.5) with straight-through gradients."""
        return all(g.ste for g in self.gates.values())

    @ste.setter
    def ste(self, on: bool) -> None:
        for g in self.gates.values():
            g.ste = on

    def parameters(self) -> list[nn.Parameter]:
        """The gate logits θ (one (n_l,) tensor per layer)."""
        return [g.theta for g in self.gates.values()]

    def __call__(self, x: Tensor) -> Tensor:
        return self.module(x.to(self.device))

    def set_hard(self, masks: dict[str, Tensor]) -> None:
        """Fix each layer's gate to the (n_l,) 0/1 mask ``masks[layer]``."""
        for lid, g in self.gates.items():
            g.fixed = masks[lid].to(self.device, dtype=torch.float32)

    def set_soft(self) -> None:
        """Gates back to the trained θ."""
        for g in self.gates.values():
            g.fixed = None

    def z(self) -> dict[str, np.ndarray]:
        """The gates θ per layer, (n_l,) float64 in [0, 1]."""
        return {k: g.theta.detach().double().cpu().numpy() for k, g in self.gates.items()}

    def project(self) -> None:
        """Clip every gate to [0, 1] (after an optimiser step)."""
        with torch.no_grad():
            for g in self.gates.values():
                g.theta.clamp_(0.0, 1.0)


@dataclass
class GateResult:
    """Trained gates: ``z[layer]`` (n_l,), ``critical[layer]`` (indices by z descending), the
    threshold τ used, the loss per step (``history``; index 0 = the initial gates), the number of
    steps, wall time and why training stopped (``converged`` | ``budget`` | ``max_steps``)."""

    z: dict[str, np.ndarray]
    critical: dict[str, list[int]]
    threshold: float
    history: list[float] = field(default_factory=list)
    ce_history: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped: str = ""
    preserved: float = math.nan


def _loss(gm: GatedModel, x: Tensor, t: Tensor, sparsity: float, batch_size: int,
          train: bool) -> tuple[float, float]:
    """Full-batch loss (gradients accumulated when ``train``); returns (total, cross-entropy)."""
    n_img = x.shape[0]
    ce_total = 0.0
    with torch.set_grad_enabled(train):
        for s in range(0, n_img, batch_size):
            logits = gm(x[s:s + batch_size]).float()
            ce = torch.nn.functional.cross_entropy(logits, t[s:s + batch_size].to(logits.device), reduction="sum")
            ce = ce / n_img
            if train:
                ce.backward()
            ce_total += float(ce.detach())
        reg = sparsity * torch.stack([g.mask().mean() for g in gm.gates.values()]).mean()
        if train:
            reg.backward()
    return ce_total + float(reg.detach()), ce_total


def _preserved(gm: GatedModel, x: Tensor, t: Tensor, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        pred = torch.cat([gm(x[s:s + batch_size]).argmax(1).cpu() for s in range(0, x.shape[0], batch_size)])
    return (pred == t.cpu()).numpy()


def learn_gates(entry: ModelEntry, graph: LayerGraph, x: Tensor, targets: Tensor, layer_ids: Sequence[str],
                config: GateConfig | None = None, progress: GateProgress | None = None) -> GateResult:
    """Train one gate per map of ``layer_ids`` for images ``x`` (N, 3, H, W) and targets (N,).

    ``progress(done, total, stage)`` with stage ``train`` (steps of ``max_steps``), then
    ``threshold`` and ``done``. The model is not modified (its weights stay frozen).
    """
    cfg = config or GateConfig()
    if x.shape[0] == 0:
        raise AEVisError("need at least one image")
    t0 = time.perf_counter()
    gm = GatedModel(entry.model, graph, layer_ids, cfg.init)
    t = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    opt = torch.optim.Adam(gm.parameters(), lr=cfg.lr)
    history: list[float] = []
    ce_hist: list[float] = []
    stopped, step, phase_start, best, since = "max_steps", 0, 0, math.inf, 0
    soft_steps, soft_budget = int(cfg.max_steps * cfg.soft_share), cfg.budget_s * cfg.soft_share
    best_hard, best_state = math.inf, [p.detach().clone() for p in gm.parameters()]
    for step in range(cfg.max_steps + 1):
        opt.zero_grad(set_to_none=True)
        total, ce = _loss(gm, x, t, cfg.sparsity, cfg.batch_size, train=step < cfg.max_steps)
        history.append(total)
        ce_hist.append(ce)
        if (gm.ste or step == 0) and total < best_hard:  # the hard network's loss (all-ones: soft = hard)
            best_hard, best_state = total, [p.detach().clone() for p in gm.parameters()]
        if total < best - cfg.tol * abs(best) or not math.isfinite(best):
            best, since = total, 0
        else:
            since += 1
        elapsed = time.perf_counter() - t0
        if step == cfg.max_steps:
            break
        if not gm.ste and (since >= cfg.patience or step >= soft_steps or elapsed > soft_budget):
            gm.ste, best, since, phase_start = True, math.inf, 0, step  # phase 2: hard forward, STE
            opt = torch.optim.Adam(gm.parameters(), lr=cfg.lr)
            continue
        if gm.ste and since >= cfg.patience:
            stopped = "converged"
            break
        if elapsed > cfg.budget_s:
            stopped = "budget"
            break
        opt.step()
        gm.project()
        if progress is not None:
            progress(step + 1, cfg.max_steps, "train")
    log.debug("gates: soft phase %d steps, hard phase %d steps", phase_start, step - phase_start)
    with torch.no_grad():  # keep the best hard-phase gates (never worse than the unmodified network)
        for p, b in zip(gm.parameters(), best_state, strict=True):
            p.copy_(b)
    history.append(best_hard)
    ce_hist.append(math.nan)
    z = gm.z()
    if progress is not None:
        progress(0, len(cfg.thresholds), "threshold")
    chosen, kept_frac = -1.0, math.nan
    for i, tau in enumerate((*cfg.thresholds, -1.0)):  # τ = -1 keeps every map (the unmasked network)
        gm.set_hard({k: torch.as_tensor(v > tau) for k, v in z.items()})
        kept = _preserved(gm, x, t, cfg.batch_size)
        if progress is not None:
            progress(i + 1, len(cfg.thresholds), "threshold")
        chosen, kept_frac = tau, float(kept.mean())
        if kept.all():
            break
    gm.set_soft()
    crit = {k: [int(j) for j in np.lexsort((np.arange(v.size), -v)) if v[j] > chosen] for k, v in z.items()}
    secs = time.perf_counter() - t0
    log.info("gates: %d steps (%s), %.1f s, loss %.4g -> %.4g, threshold %.2f",
             step, stopped, secs, history[0], history[-1], chosen)
    if progress is not None:
        progress(1, 1, "done")
    return GateResult(z, crit, chosen, history, ce_hist, step, secs, stopped, kept_frac)


def learn_datapath(entry: ModelEntry, graph: LayerGraph, x: Tensor, config: ExtractConfig,
                   layers: Sequence[str] | None = None, labels: Sequence[int | None] | None = None,
                   progress: GateProgress | None = None, gate_config: GateConfig | None = None) -> Datapath:
    """:class:`Datapath` of learned gates for images ``x`` (``config.method == "gates"``).

    One extraction pass (``gradxact_topk``) gives the targets, probabilities and the per-image
    q / activation summaries the views use; then :func:`learn_gates` with ``config.sparsity``
    and ``config.budget_s`` (other options from ``gate_config``). ``LayerDatapath.objective``
    holds the final training loss; ``lam`` the threshold τ.
    """
    from aevis_core.datapath.connections import connect
    from aevis_core.datapath.extract import LayerDatapath, extract_datapath

    base_cfg = replace(config, method="gradxact_topk", coverage=None)
    step = (lambda d, n: progress(d, n, "extract")) if progress is not None else None
    base = extract_datapath(entry, graph, x, base_cfg, layers=layers, labels=labels, progress=step)
    gcfg = replace(gate_config or GateConfig(), sparsity=config.sparsity, budget_s=config.budget_s,
                   batch_size=config.batch_size)
    res = learn_gates(entry, graph, x, torch.as_tensor(base.targets), list(base.layers), gcfg, progress)
    layers_out = {k: LayerDatapath(k, ld.n, res.z[k], res.critical[k], res.history[-1], math.nan, res.threshold)
                  for k, ld in base.layers.items()}
    dp = replace(base, config=config, layers=layers_out, connections=[])
    dp.connections = connect(entry, graph, dp)
    return dp
