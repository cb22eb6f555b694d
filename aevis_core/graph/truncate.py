"""Forward passes that stop at one layer: ``x -> a_l`` without computing anything after ``l``.

Neuron-level views (activation maps, occlusion sensitivity) only need one layer's output, so
running the whole network per occluded image wastes most of the work. :class:`TruncatedModel`
re-traces the model with :func:`aevis_core.graph.trace.trace` and keeps the fx graph only up to
the layer's node (``graph.fx_names[layer_id]``), which becomes the output; nodes the output does
not depend on are eliminated (an in-place op that writes into a value still read later is
kept). A module called twice is two different fx nodes, so ``_blocks.1._swish#2`` stops after
the *second* call. The truncated value is the layer's output as the next node reads it, with its
feature maps moved to axis 1 (N, C, *rest) as :class:`~aevis_core.graph.capture.LayerCapture`
returns it (a channels-last (N, H, W, C) output comes back as (N, C, H, W)).

For untraced (hook-fallback) graphs the model itself runs with forward hooks
(:func:`aevis_core.graph.fallback.call_hooks`) and the forward pass is aborted by an internal
exception as soon as the layer's call has produced its output; hooks are removed afterwards.

The wrapped model is never modified: the GraphModule shares its (frozen) parameter and buffer
objects, not its code, hooks or graph.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import fx, nn

from aevis_core.errors import AEVisError
from aevis_core.graph.fallback import call_hooks
from aevis_core.graph.ops import is_inplace
from aevis_core.graph.trace import trace
from aevis_core.graph.types import LayerGraph

Tensor = torch.Tensor

__all__ = ["TruncatedModel", "get_truncated", "truncate_graph_module"]


class _StopForward(Exception):
    """Raised by the fallback hook to abort the forward pass right after the layer."""


def truncate_graph_module(gm: fx.GraphModule, node_name: str | None, axis: int = 1) -> fx.GraphModule:
    """New GraphModule ``x -> value of node ``node_name````; ``None`` means the input placeholder.

    With ``axis`` ≠ 1 the value's axis ``axis`` (the layer's feature maps) is moved to 1.

    Nodes after the target are dropped; nodes before it that the output does not depend on are
    eliminated too, except in-place ops (``relu_``, ``+=``, ``ReLU(inplace=True)``) whose
    mutated argument is read again later on the kept path. Submodules no longer called are
    removed from the new module (the original ``gm`` is left as it is).
    """
    nodes = list(gm.graph.nodes)
    if node_name is None:
        target = next((n for n in nodes if n.op == "placeholder"), None)
    else:
        target = next((n for n in nodes if n.name == node_name), None)
    if target is None:
        raise AEVisError(f"fx node {node_name or 'input'!r} not in the traced graph: "
                         "was the layer graph built from another model?")
    keep = nodes[: nodes.index(target) + 1]
    if any(n.op == "placeholder" for n in nodes[len(keep):]):
        raise AEVisError("models with several inputs cannot be truncated")
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in keep:
        env[n] = new.node_copy(n, lambda a: env[a])
    new.output(env[target] if axis == 1 else new.call_function(torch.movedim, (env[target], axis, 1)))
    out = fx.GraphModule(gm, new, "Truncated")
    modules = dict(out.named_modules())
    order = {n: i for i, n in enumerate(out.graph.nodes)}

    def impure(n: fx.Node) -> bool:
        if n.op in ("placeholder", "output"):
            return True
        mod = modules.get(str(n.target)) if n.op == "call_module" else None
        if n.op != "get_attr" and is_inplace(n.target, mod) and n.args and isinstance(n.args[0], fx.Node):
            # DCE walks backwards, so later users of the mutated value are already settled.
            return any(order[u] > order[n] for u in n.args[0].users if u is not n)
        return n.is_impure()

    out.graph.eliminate_dead_code(is_impure_node=impure)
    out.delete_all_unused_submodules()
    out.graph.lint()
    out.recompile()
    return out


class TruncatedModel:
    """Callable ``x (N, 3, H, W) -> layer output (N, C, H', W')`` (or (N, F) for vector layers).

    ``TruncatedModel(model, graph, layer_id)``: ``model`` is the analysed pixel-space model
    (``entry.model``), ``graph`` its layer graph, ``layer_id`` one of ``graph.nodes``
    (``"input"`` returns ``x``). Traced graphs give a GraphModule (:attr:`gm`) that computes only
    up to the layer; untraced graphs run the model with hooks and stop right after the layer
    (:attr:`gm` is ``None``). Gradients flow as usual; wrap calls in ``torch.no_grad()`` when
    they are not needed. The output is not detached or copied.
    """

    def __init__(self, model: nn.Module, graph: LayerGraph, layer_id: str) -> None:
        graph.check_mapped([layer_id])
        self.model = model
        self.axis = int(graph.nodes[layer_id].channel_axis or 0) + 1
        self.graph = graph
        self.layer_id = layer_id
        node = graph.nodes[layer_id]
        self.shape: tuple[int, ...] = (node.channels, *node.spatial)  # of one output, maps first
        self.gm: fx.GraphModule | None = None
        if graph.traced:
            if layer_id != "input" and layer_id not in graph.fx_names:
                raise AEVisError(f"layer {layer_id!r} has no torch.fx node")
            name = None if layer_id == "input" else graph.fx_names[layer_id]
            self.gm = truncate_graph_module(trace(model), name, self.axis)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (CPU for parameter-free models)."""
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def __call__(self, x: Tensor) -> Tensor:
        """The layer's output for ``x`` (N, 3, H, W) (moved to the model's device)."""
        x = x.to(self.device)
        if self.layer_id == "input":
            return x
        if self.gm is not None:
            out = self.gm(x)
            if not isinstance(out, Tensor):
                raise AEVisError(f"layer {self.layer_id!r} does not output a tensor")
            return out
        got: list[Tensor] = []

        def record(lid: str, path: str, mod: nn.Module, out: object) -> None:
            if lid == self.layer_id and isinstance(out, Tensor):
                got.append(out if self.axis == 1 else out.movedim(self.axis, 1))
                raise _StopForward

        with call_hooks(self.model, record):
            try:
                self.model(x)
            except _StopForward:
                pass
        if not got:
            raise AEVisError(f"layer {self.layer_id!r} was not called in the forward pass")
        return got[0]

    forward = __call__


_CACHE: OrderedDict[tuple[int, str, str], TruncatedModel] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


def get_truncated(model: nn.Module, graph: LayerGraph, layer_id: str) -> TruncatedModel:
    """A :class:`TruncatedModel`, reused from a small in-process cache (16 most recent).

    Keyed by the model object and the layer's fx node name (so a graph rebuilt from its dict
    still hits); entries hold a reference to their model, so identity is checked, not just ids.
    """
    if layer_id not in graph.nodes:
        raise AEVisError(f"unknown layer {layer_id!r}")
    node = graph.fx_names.get(layer_id, "") if graph.traced else f"hooks:{layer_id}"
    key = (id(model), node or layer_id, layer_id)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit.model is model and hit.graph.traced == graph.traced:
            _CACHE.move_to_end(key)
            return hit
    tm = TruncatedModel(model, graph, layer_id)
    with _CACHE_LOCK:
        _CACHE[key] = tm
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return tm
