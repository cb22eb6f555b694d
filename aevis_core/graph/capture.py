"""Capture chosen layers in ONE forward pass: their outputs, or their per-map summaries and q.

Two ways to capture the layers ``l`` with outputs ``a_l``, whose feature maps lie along the
layer's channel axis (:mod:`aevis_core.graph.axes`):

* :meth:`LayerCapture.__call__` returns ``a_l`` itself, moved to the canonical layout
  (N, C, *rest) (a view; channels-first layers are returned as they are);
* :meth:`LayerCapture.taps` computes in the forward pass the per-map mean activation (N, C) and
  registers a tensor hook that, when the backward pass reaches ``a_l``, reduces
  ``q_lj = Σ_rest a_lj · ∂p/∂a_lj`` to (N, C) and lets go of ``a_l`` and its gradient. Memory is
  that of the plain forward + backward plus the captured outputs autograd does not keep anyway,
  plus O(N·ΣC); no gradient outlives its layer (Liu et al. 2018, Eq. 4–5 inputs).

For traced graphs the model is re-traced into a GraphModule in which each layer is exactly one
graph node (a module called twice gives two different tensors). A captured node feeding an
in-place op (``ReLU(inplace=True)``, ``+=``) is cloned and its consumers rerouted to the clone,
so the captured tensor keeps its value and still lies on the path to the logits (its gradient
is the true ∂p/∂a). Untraceable models use forward hooks in call order (fallback graph); hooks
are removed after every call, so the model is left unchanged.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from aevis_core.errors import AEVisError
from aevis_core.graph.fallback import call_hooks
from aevis_core.graph.ops import function_name, is_inplace
from aevis_core.graph.trace import trace
from aevis_core.graph.types import LayerGraph

Tensor = torch.Tensor


def map_q(a: Tensor, g: Tensor, axis: int, scratch: Scratch | None = None) -> Tensor:
    """``q_nj = Σ_rest a · g`` (N, C) for ``a``, ``g`` of any layout with the maps on ``axis`` (batch at 0).

    The product is written into ``scratch`` (one buffer reused by every layer: a fresh tensor of
    that size per layer costs more in page faults than the multiplication) and then summed.
    """
    dims = tuple(d for d in range(1, a.dim()) if d != axis)
    prod = torch.mul(a, g, out=scratch.take(a)) if scratch is not None else a * g
    return prod.sum(dim=dims) if dims else prod.clone()


class Scratch:
    """A flat buffer grown to the largest product seen; :meth:`take` returns a view shaped like ``a``."""

    def __init__(self) -> None:
        self.buf: Tensor | None = None

    def take(self, a: Tensor) -> Tensor:
        """A contiguous view of the buffer with ``a``'s shape, dtype and device (contents undefined)."""
        n = a.numel()
        b = self.buf
        if b is None or b.numel() < n or b.dtype != a.dtype or b.device != a.device:
            b = self.buf = torch.empty(n, dtype=a.dtype, device=a.device)
        return b[:n].view(a.shape)


def map_mean(a: Tensor, axis: int) -> Tensor:
    """Per-map mean (N, C) of ``a`` over every axis but the batch and ``axis``."""
    dims = tuple(d for d in range(1, a.dim()) if d != axis)
    if not dims:
        return a.clone()
    return a.mean(dim=dims)


def canonical(a: Tensor, axis: int) -> Tensor:
    """``a`` with its map axis moved to 1: (N, C, *rest) (a view; ``a`` itself when already there)."""
    return a if axis == 1 else a.movedim(axis, 1)


@dataclass
class Taps:
    """One batch's captured summaries: ``mean[l]`` (N, C) filled in the forward pass, ``q[l]`` (N, C)
    filled by the backward pass (zeros for layers the gradient never reached)."""

    axes: dict[str, int]
    mean: dict[str, Tensor] = field(default_factory=dict)
    q: dict[str, Tensor] = field(default_factory=dict)
    scratch: Scratch = field(default_factory=Scratch)
    _held: dict[str, Tensor] = field(default_factory=dict)

    def tap(self, a: Tensor, mean_lid: str | None, q_lids: tuple[str, ...] = (), axis: int = 1,
            source: tuple[str, Callable[[Tensor], Tensor]] | None = None) -> None:
        """Forward: ``mean[mean_lid]`` from ``a`` now; hook ``a``'s gradient to give ``q[l]`` for ``q_lids``,
        holding ``a`` only until the hook runs — or, with ``source = (key, f)``, holding nothing and
        recomputing ``a = f(held[key])`` in the hook (``a`` an activation of a layer held anyway)."""
        if mean_lid is not None:
            with torch.no_grad():
                self.mean[mean_lid] = map_mean(a.detach(), axis)
        if not q_lids or not a.requires_grad:
            return
        if source is not None:
            a.register_hook(lambda g: self._recomputed(source, q_lids, axis, g))
            return
        key = q_lids[0]
        self._held[key] = a
        a.register_hook(lambda g: self._grad(key, q_lids, axis, g))

    def _recomputed(self, source: tuple[str, Callable[[Tensor], Tensor]], q_lids: tuple[str, ...], axis: int,
                    g: Tensor) -> None:
        src = self._held.get(source[0])
        if src is None:  # cannot happen: the source layer's gradient needs this one's first
            raise RuntimeError(f"capture: {source[0]} released before {q_lids[0]}")
        with torch.no_grad():
            q = map_q(source[1](src.detach()), g, axis, self.scratch)
        for lid in q_lids:
            self.q[lid] = q

    def _grad(self, key: str, q_lids: tuple[str, ...], axis: int, g: Tensor) -> None:
        a = self._held.pop(key, None)
        if a is None:  # a second gradient for the same tensor cannot happen in one backward
            return
        with torch.no_grad():
            q = map_q(a.detach(), g, axis, self.scratch)
        for lid in q_lids:
            self.q[lid] = q

    def finish(self) -> None:
        """After the backward: zero q for layers not reached by the gradient; drop what is held."""
        self._held.clear()
        for lid, m in self.mean.items():
            self.q.setdefault(lid, torch.zeros_like(m))


class _Current(threading.local):
    """The :class:`Taps` a taps GraphModule records into, per thread (None outside a call)."""

    taps: Taps | None = None


class _Tap(nn.Module):
    """Identity module the taps GraphModule calls after a node: ``a -> a`` plus :meth:`Taps.tap`."""

    def __init__(self, mean_lid: str | None, q_lids: tuple[str, ...], axis: int, current: _Current,
                 source: tuple[str, Callable[[Tensor], Tensor]] | None = None) -> None:
        super().__init__()
        self.mean_lid, self.q_lids, self.axis, self.current, self.source = mean_lid, q_lids, axis, current, source

    def forward(self, a: Tensor) -> Tensor:
        taps = self.current.taps
        if taps is not None:
            taps.tap(a, self.mean_lid, self.q_lids, self.axis, self.source)
        return a


_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.Mish, nn.Softplus)
_ACT_NAMES = {"relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh",
              "leaky_relu", "elu", "celu", "selu", "mish", "softplus"}


def _recompute_fn(node: fx.Node, modules: dict[str, nn.Module]) -> Callable[[Tensor], Tensor] | None:
    """``t -> node's value`` for an elementwise activation of one tensor (other arguments constant)."""
    if any(isinstance(a, fx.Node) for a in [*node.args[1:], *node.kwargs.values()]):
        return None
    args, kwargs = tuple(node.args[1:]), dict(node.kwargs)
    if node.op == "call_module":
        mod = modules.get(str(node.target))
        if type(mod) not in _ACT_MODULES or mod is None:
            return None
        inplace = bool(getattr(mod, "inplace", False))
        return lambda t: mod(t.clone() if inplace else t)
    name = function_name(node.target)
    if name.rstrip("_") not in _ACT_NAMES:
        return None
    inplace = name.endswith("_") or kwargs.get("inplace") is True
    if node.op == "call_method":
        meth = str(node.target)
        return lambda t: getattr(t.clone() if inplace else t, meth)(*args, **kwargs)
    fn = node.target
    if not callable(fn):
        return None
    return lambda t: fn(t.clone() if inplace else t, *args, **kwargs)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is a plain ReLU (module, function or method, in place or not)."""
    if node.op == "call_module":
        return type(modules.get(str(node.target))) is nn.ReLU
    if node.op == "call_function":
        return node.target in (torch.relu, torch.relu_, torch.nn.functional.relu)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _protect_inplace(gm: fx.GraphModule, node: fx.Node, out_node: fx.Node,
                     modules: dict[str, nn.Module]) -> list[fx.Node]:
    """Reroute consumers of ``node`` to a clone when one of them modifies it in place; return the users."""
    users = [u for u in node.users if u is not out_node]
    if any(is_inplace(u.target, modules.get(str(u.target)) if u.op == "call_module" else None)
           or u.kwargs.get("inplace") is True for u in users):
        with gm.graph.inserting_after(node):
            clone = gm.graph.call_method("clone", (node,))
        for u in users:
            u.replace_input_with(node, clone)
        return [clone]
    return users


def _find(gm: fx.GraphModule, graph: LayerGraph, lid: str) -> fx.Node:
    if lid == "input":
        return next(n for n in gm.graph.nodes if n.op == "placeholder")
    by_name = {n.name: n for n in gm.graph.nodes}
    name = graph.fx_names.get(lid)
    if name not in by_name:
        raise AEVisError(f"layer {lid!r} is not in the re-traced graph: was the graph built from another model?")
    return by_name[name]


def _outputs_module(model: nn.Module, graph: LayerGraph, layer_ids: list[str], axes: dict[str, int]) -> fx.GraphModule:
    """GraphModule ``x -> (logits, a_1, ..., a_m)`` with each ``a`` in the canonical layout (a view on the path)."""
    gm = trace(model)
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    modules = dict(gm.named_modules())
    picked = []
    for lid in layer_ids:
        node = _find(gm, graph, lid)
        users = _protect_inplace(gm, node, out_node, modules)
        ax = axes[lid]
        if ax != 1:  # canon = movedim(a, ax, 1) and consumers read movedim(canon, 1, ax): canon is on the path
            with gm.graph.inserting_after(node):
                canon = gm.graph.call_function(torch.movedim, (node, ax, 1))
            with gm.graph.inserting_after(canon):
                back = gm.graph.call_function(torch.movedim, (canon, 1, ax))
            for u in users:
                u.replace_input_with(node, back)
            node = canon
        picked.append(node)
    orig = out_node.args[0]
    out_node.args = ((orig, *picked),)
    gm.graph.lint()
    gm.recompile()
    return gm


def _taps_module(model: nn.Module, graph: LayerGraph, layer_ids: list[str], axes: dict[str, int],
                 current: _Current) -> fx.GraphModule:
    """GraphModule ``x -> logits`` calling a :class:`_Tap` right after every captured node.

    A layer ``a`` whose only consumer is a ReLU ``r`` gets its q from ``r``'s tap: elementwise
    ``a · ∂p/∂a = a · 1[a > 0] · ∂p/∂r = r · ∂p/∂r`` (the same float products, so the same sums), so
    ``a`` itself is not held — ``r`` is kept by autograd anyway — and an in-place ReLU needs no clone.
    A layer that is an activation ``f(a)`` (GELU, SiLU, ReLU6, ...) of a held layer ``a`` is not held
    either: its hook recomputes ``f(a)`` (the same op on the same values, so the same result).
    """
    gm = trace(model)
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    modules = dict(gm.named_modules())
    spec: dict[fx.Node, tuple[list[str], list[str], int]] = {}  # node -> (mean lids, q lids, axis)
    for lid in layer_ids:
        node = _find(gm, graph, lid)
        users = [u for u in node.users if u is not out_node]
        ax = axes[lid]
        spec.setdefault(node, ([], [], ax))[0].append(lid)
        via_relu = len(users) == 1 and out_node not in node.users and _is_relu(users[0], modules)
        spec.setdefault(users[0] if via_relu else node, ([], [], ax))[1].append(lid)
    sources: dict[fx.Node, tuple[str, Callable[[Tensor], Tensor]]] = {}
    for node, (_, q_lids, _) in spec.items():
        src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        fn = _recompute_fn(node, modules) if q_lids and src is not None else None
        if fn is not None and src in spec and spec[src][1] and src not in sources:
            sources[node] = (spec[src][1][0], fn)
    for node, (_, q_lids, _) in spec.items():
        if q_lids and node not in sources:  # held until its gradient comes: keep it from in-place ops
            _protect_inplace(gm, node, out_node, modules)
    for i, (node, (mean_lids, q_lids, ax)) in enumerate(spec.items()):
        name = f"aevis_tap_{i}"
        gm.add_submodule(name, _Tap(mean_lids[0] if mean_lids else None, tuple(q_lids), ax, current,
                                    sources.get(node)))
        with gm.graph.inserting_after(node):
            gm.graph.call_module(name, (node,))
    gm.graph.lint()
    gm.recompile()
    return gm


_CACHE: OrderedDict[tuple[int, tuple[str, ...], tuple[str, ...]], tuple[nn.Module, fx.GraphModule, _Current]] = (
    OrderedDict())
_CACHE_LOCK = threading.Lock()


def _cached_taps_module(model: nn.Module, graph: LayerGraph, layer_ids: list[str],
                        axes: dict[str, int]) -> tuple[fx.GraphModule, _Current]:
    """:func:`_taps_module`, reused for the same model object and layers (4 most recent)."""
    key = (id(model), tuple(layer_ids), tuple(graph.fx_names.get(k, "") for k in layer_ids))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] is model:
            _CACHE.move_to_end(key)
            return hit[1], hit[2]
    current = _Current()
    gm = _taps_module(model, graph, layer_ids, axes, current)
    with _CACHE_LOCK:
        _CACHE[key] = (model, gm, current)
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return gm, current


class LayerCapture:
    """Capture of ``layer_ids`` of ``graph`` in one forward pass (see the module doc).

    ``cap(x) -> (logits (N, K), {layer: a (N, C, *rest)})``; ``cap.taps(x) -> (logits, Taps)``
    followed by the caller's backward pass (e.g. ``torch.autograd.grad(p.sum(), x)``), then
    ``taps.finish()``. ``x`` should have ``requires_grad=True`` (the model's parameters are frozen)
    for gradients to flow. Unknown layers and layers without a feature-map axis are refused.
    One capture serves one thread at a time (its q products share a scratch buffer).
    """

    def __init__(self, model: nn.Module, graph: LayerGraph, layer_ids: list[str]) -> None:
        graph.check_mapped(list(layer_ids))
        self.model = model
        self.graph = graph
        self.layer_ids = list(layer_ids)
        self.axes: dict[str, int] = {k: int(graph.nodes[k].channel_axis or 0) + 1 for k in self.layer_ids}
        self._out_gm: fx.GraphModule | None = None
        self._scratch = Scratch()  # reused by every batch of this capture

    def __call__(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One forward pass: logits and the chosen layers' outputs, maps on axis 1 (batch first)."""
        if self.graph.traced:
            if self._out_gm is None:
                self._out_gm = _outputs_module(self.model, self.graph, self.layer_ids, self.axes)
            logits, *acts = self._out_gm(x)
            return logits, dict(zip(self.layer_ids, acts, strict=True))
        got: dict[str, Tensor] = {}

        def record(lid: str, path: str, mod: nn.Module, out: object) -> Any:
            if lid in self.axes and isinstance(out, Tensor):
                ax = self.axes[lid]
                if ax == 1:
                    got[lid] = out
                    return None
                got[lid] = canon = out.movedim(ax, 1)
                return canon.movedim(1, ax)  # the model continues from the view, so canon is on the path
            return None

        logits = self._hooked(x, record)
        if "input" in self.axes:
            got["input"] = x
        return logits, {k: got[k] for k in self.layer_ids if k in got}

    def taps(self, x: Tensor) -> tuple[Tensor, Taps]:
        """One forward pass recording per-map means and hooking q into the next backward pass."""
        taps = Taps(dict(self.axes), scratch=self._scratch)
        if "input" in self.axes:
            taps.tap(x, "input", ("input",), self.axes["input"])
        if not self.graph.traced:
            def record(lid: str, path: str, mod: nn.Module, out: object) -> None:
                if lid in self.axes and lid != "input" and isinstance(out, Tensor):
                    taps.tap(out, lid, (lid,), self.axes[lid])

            return self._hooked(x, record), taps
        gm, current = _cached_taps_module(self.model, self.graph, [k for k in self.layer_ids if k != "input"],
                                          self.axes)
        current.taps = taps
        try:
            logits = gm(x)
        finally:
            current.taps = None
        return logits, taps

    def _hooked(self, x: Tensor, record: Callable[[str, str, nn.Module, object], Any]) -> Tensor:
        with call_hooks(self.model, record):
            out = self.model(x)
        if not isinstance(out, Tensor):
            raise AEVisError(f"the model returned {type(out).__name__}, expected a logits tensor")
        return out


def capture(model: nn.Module, graph: LayerGraph, layer_ids: list[str], x: Tensor,
            grad: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Convenience: one forward of ``x`` (N, ...) capturing ``layer_ids``; detached unless ``grad``."""
    cap = LayerCapture(model, graph, layer_ids)
    if grad:
        return cap(x.requires_grad_(True) if not x.requires_grad else x)
    with torch.no_grad():
        logits, acts = cap(x)
    return logits, acts
