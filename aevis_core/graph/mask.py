"""Masked forward passes: scale one layer's feature maps by a per-map mask (Eq. 4 of Liu et al. 2018).

:class:`MaskedModel` re-traces the model with :func:`aevis_core.graph.trace.trace` and splits
the fx graph at the chosen layer's node into

* a **prefix** ``x -> (a, c_1, ..., c_r)``: the layer's output ``a`` (N, n, *spatial) plus every
  value computed before it that later nodes still read (skip connections that jump over the
  layer, ``x.size(0)`` used by a final ``view``, ...), and
* a **suffix** ``(a, c_1, ..., c_r, mask, fill) -> logits``: the rest of the graph, where every
  consumer of ``a`` reads the masked output instead

.. math::

    \\tilde a_{bj\\cdot} = m_j\\, a_{bj\\cdot} + (1 - m_j)\\, f_j
    \\qquad (m \\in \\mathbb{R}^n \\text{ or } \\mathbb{R}^{B \\times n},\\ f \\text{ idem, default } 0),

broadcast over the spatial positions (every axis but the batch and the layer's channel axis:
tokens of a (N, T, D) attention output, positions of a channels-last (N, H, W, C) block). With
``f = 0`` this is Eq. 4's ``a ⊙ z``; ``f`` = the
per-map dataset mean replaces removed maps by a constant ("mean ablation") instead of zero.
``m = 1`` reproduces the original output bit for bit (``a · 1 + 0 · f = a``).

The split lets callers run the prefix **once** per image batch (:meth:`MaskedModel.cache`) and
then evaluate many masks, or many optimisation steps, on the suffix only
(:meth:`MaskedModel.suffix`). The mask may require grad; gradients flow only through the
suffix. The wrapped model is never modified: the GraphModules share its (frozen) parameter
and buffer objects but not its code, hooks or graph. Untraced (hook-fallback) graphs are
refused with :class:`AEVisError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from aevis_core.errors import AEVisError
from aevis_core.graph.ops import is_inplace
from aevis_core.graph.trace import trace
from aevis_core.graph.types import LayerGraph

Tensor = torch.Tensor

__all__ = ["MaskedModel", "PrefixBatch", "apply_mask", "layer_mean"]


def _expand(v: Tensor, a: Tensor) -> Tensor:
    """(n,) or (B, n) per-map values -> (1|B, n, 1, ..., 1) broadcastable against ``a`` (B, n, ...)."""
    v = v.to(device=a.device, dtype=a.dtype)
    if v.dim() == 1:
        v = v.unsqueeze(0)
    return v.reshape(v.shape[0], v.shape[1], *([1] * (a.dim() - 2)))


def apply_mask(a: Tensor, mask: Tensor, fill: Tensor | None = None, axis: int = 1) -> Tensor:
    """``a · m + (1 − m) · f`` per feature map.

    Args:
        a: (B, n, *spatial) layer output (or (B, n) for vector layers); with ``axis`` ≠ 1 the maps
            lie on that axis of ``a`` instead (e.g. ``axis=3`` for a channels-last (B, H, W, n)).
        mask: (n,) or (B, n) mask m (any real values; [0, 1] for Eq. 4); may require grad.
        fill: (n,) or (B, n) replacement f of removed maps; ``None`` means 0 (then ``a · m``).

    Returns:
        new tensor of ``a``'s shape (``a`` is never modified in place).
    """
    if axis != 1:
        return apply_mask(a.movedim(axis, 1), mask, fill).movedim(1, axis)
    m = _expand(mask, a)
    if fill is None:
        return a * m
    return a * m + (1.0 - m) * _expand(fill, a)


@dataclass
class PrefixBatch:
    """Cached prefix outputs of one image batch: the layer's output and the crossing values.

    ``act``: (B, n, *spatial) detached layer output; ``cross``: values computed before the layer
    that the suffix still reads (tensors, or e.g. the int batch size), in suffix-input order.
    """

    act: Tensor
    cross: tuple[Any, ...]

    @property
    def size(self) -> int:
        """Number of images B in the batch."""
        return int(self.act.shape[0])


def _graph_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return list(gm.graph.nodes)


class MaskedModel:
    """``(x, mask, fill) -> logits`` with one layer's maps scaled by ``mask`` (see module doc).

    ``MaskedModel(model, graph, layer_id)``; ``n`` = number of feature maps of the layer.
    ``model`` is the analysed pixel-space model (``entry.model``); ``graph`` must have been
    traced with torch.fx (``graph.traced``), and ``layer_id`` must be one of its layers
    (``"input"`` masks the input channels).
    """

    def __init__(self, model: nn.Module, graph: LayerGraph, layer_id: str) -> None:
        if not graph.traced:
            raise AEVisError(
                f"masked forward passes need a torch.fx-traced graph; {graph.model_name} uses the "
                "hook fallback (untraceable model), so layers cannot be masked")
        if layer_id not in graph.nodes:
            raise AEVisError(f"unknown layer {layer_id!r}")
        if layer_id != "input" and layer_id not in graph.fx_names:
            raise AEVisError(f"layer {layer_id!r} has no torch.fx node to mask")
        graph.check_mapped([layer_id])
        node_info = graph.nodes[layer_id]
        if len(node_info.shape) < 1:
            raise AEVisError(f"layer {layer_id!r} has no feature-map axis")
        self.model = model
        self.graph = graph
        self.layer_id = layer_id
        self.n: int = int(node_info.channels)
        self.shape: tuple[int, ...] = tuple(node_info.shape)
        gm = trace(model)
        nodes = _graph_nodes(gm)
        if layer_id == "input":
            target = next(nd for nd in nodes if nd.op == "placeholder")
        else:
            by_name = {nd.name: nd for nd in nodes}
            fx_name = graph.fx_names[layer_id]
            if fx_name not in by_name:
                raise AEVisError(f"layer {layer_id!r} ({fx_name}) is not in the re-traced graph: "
                                 "was the graph built from another model?")
            target = by_name[fx_name]
        self.axis = int(node_info.channel_axis or 0) + 1  # map axis of the raw output (batch at 0)
        self.prefix_module, self.suffix_module, self._clone_cross = self._split(gm, nodes, target, self.axis)

    # -- graph surgery -------------------------------------------------------------------------

    @staticmethod
    def _split(gm: fx.GraphModule, nodes: list[fx.Node], target: fx.Node,
               axis: int = 1) -> tuple[fx.GraphModule, fx.GraphModule, tuple[bool, ...]]:
        """Prefix / suffix GraphModules around ``target`` (see module doc); the prefix returns the
        layer's output with its maps (on ``axis``) moved to axis 1, the suffix moves them back."""
        idx = nodes.index(target)
        prefix_nodes = nodes[: idx + 1]
        suffix_nodes = nodes[idx + 1:]
        prefix_set = set(prefix_nodes)
        if any(nd.op == "placeholder" for nd in suffix_nodes):
            raise AEVisError("models with several inputs cannot be masked")
        crossing: list[fx.Node] = []
        for nd in prefix_nodes:
            if nd is target:
                continue
            if any(u not in prefix_set for u in nd.users):
                crossing.append(nd)
        modules = dict(gm.named_modules())

        def inplace_user(nd: fx.Node) -> bool:
            return any(
                is_inplace(u.target, modules.get(str(u.target)) if u.op == "call_module" else None)
                for u in nd.users if u not in prefix_set)

        clone = tuple(inplace_user(c) for c in crossing)

        pg = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for nd in prefix_nodes:
            env[nd] = pg.node_copy(nd, lambda a: env[a])
        out = env[target] if axis == 1 else pg.call_function(torch.movedim, (env[target], axis, 1))
        pg.output((out, *[env[c] for c in crossing]))
        prefix = fx.GraphModule(gm, pg, "MaskedPrefix")

        sg = fx.Graph()
        senv: dict[fx.Node, fx.Node] = {}
        act = sg.placeholder("act")
        cross_ph = [sg.placeholder(f"cross_{i}") for i in range(len(crossing))]
        mask = sg.placeholder("mask")
        fill = sg.placeholder("fill", default_value=None)
        masked = sg.call_function(apply_mask, (act, mask, fill))
        senv[target] = masked if axis == 1 else sg.call_function(torch.movedim, (masked, 1, axis))
        for c, ph in zip(crossing, cross_ph, strict=True):
            senv[c] = ph
        for nd in suffix_nodes:
            senv[nd] = sg.node_copy(nd, lambda a: senv[a])
        suffix = fx.GraphModule(gm, sg, "MaskedSuffix")
        prefix.graph.lint()
        suffix.graph.lint()
        return prefix, suffix, clone

    # -- evaluation ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (CPU for parameter-free models)."""
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def prefix(self, x: Tensor) -> PrefixBatch:
        """Run the prefix on ``x`` (B, 3, H, W) without gradients; returns the detached cache."""
        with torch.no_grad():
            out = self.prefix_module(x.to(self.device))
        act, *cross = out
        cross_d = tuple(c.detach() if isinstance(c, Tensor) else c for c in cross)
        return PrefixBatch(act.detach(), cross_d)

    def cache(self, x: Tensor, batch_size: int = 64) -> list[PrefixBatch]:
        """:meth:`prefix` of ``x`` (N, 3, H, W) in batches of ``batch_size`` (memory: the layer's
        output for all N images plus the crossing values)."""
        if batch_size < 1:
            raise AEVisError("batch_size must be positive")
        return [self.prefix(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]

    def _check(self, v: Tensor, what: str, batch: int) -> Tensor:
        if not isinstance(v, Tensor):
            v = torch.as_tensor(v)
        ok = (v.dim() == 1 and v.shape[0] == self.n) or (v.dim() == 2 and v.shape == (batch, self.n))
        if not ok:
            raise AEVisError(f"{what} must have shape ({self.n},) or ({batch}, {self.n}), got {tuple(v.shape)}")
        return v

    def suffix(self, batch: PrefixBatch, mask: Tensor, fill: Tensor | None = None) -> Tensor:
        """Logits (B, K) of one cached batch with the layer masked.

        ``mask``: (n,) or (B, n), may require grad; ``fill``: (n,) or (B, n) or ``None`` (zero).
        Crossing tensors that an in-place op of the suffix would overwrite are cloned first, so
        the cache can be reused.
        """
        mask = self._check(mask, "mask", batch.size)
        if fill is not None:
            fill = self._check(fill, "fill", batch.size)
        cross = tuple(c.clone() if cl and isinstance(c, Tensor) else c
                      for c, cl in zip(batch.cross, self._clone_cross, strict=True))
        return self.suffix_module(batch.act, *cross, mask, fill)

    def __call__(self, x: Tensor, mask: Tensor, fill: Tensor | None = None) -> Tensor:
        """Logits (B, K) of ``x`` (B, 3, H, W) with the layer's maps masked (prefix + suffix)."""
        out = self.prefix_module(x.to(self.device))
        act, *cross = out
        return self.suffix(PrefixBatch(act, tuple(cross)), mask, fill)

    def logits(self, batches: Sequence[PrefixBatch], mask: Tensor, fill: Tensor | None = None,
               grad: bool = False) -> Tensor:
        """Concatenated logits (N, K) over cached ``batches`` for one (n,) mask (no grad unless ``grad``)."""
        with torch.set_grad_enabled(grad):
            return torch.cat([self.suffix(b, mask, fill) for b in batches])


def layer_mean(batches: Sequence[PrefixBatch]) -> Tensor:
    """(n,) per-map mean of the cached layer output over images and spatial positions (float64)."""
    total: Tensor | None = None
    count = 0
    for b in batches:
        a = b.act.double()
        dims = (0, *range(2, a.dim()))
        s = a.sum(dim=dims)
        total = s if total is None else total + s
        count += a.numel() // a.shape[1]
    if total is None:
        raise AEVisError("no images")
    return (total / count).cpu()
