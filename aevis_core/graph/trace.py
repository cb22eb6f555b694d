"""Build a :class:`LayerGraph` from ``torch.fx`` symbolic tracing (with ShapeProp shapes).

Layers are keyed by graph node, not by module: EfficientNet-Lite calls each block's ReLU6
module twice per forward, and the two calls are two different layers. Parametric modules
(``nn.Conv2d`` included, so EfficientNet's ``Conv2dStaticSamePadding`` stays one node) are
kept as leaves. When tracing fails, :func:`build_graph` falls back to a chain of leaf-module
calls recorded with forward hooks (:mod:`aevis_core.graph.fallback`) and says why.
"""

from __future__ import annotations

import logging
import threading
import warnings

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from aevis_core.errors import ModelLoadError
from aevis_core.graph.axes import AxisInference
from aevis_core.graph.blocks import find_blocks
from aevis_core.graph.ops import (
    LEAF_TYPES,
    PASS_MODULES,
    PASS_NAMES,
    function_kind,
    function_name,
    module_kind,
)
from aevis_core.graph.types import LayerGraph, LayerNode

log = logging.getLogger(__name__)


class LeafTracer(fx.Tracer):
    """fx tracer that keeps parametric modules (convs, linears, normalisers) as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Leaf when a standard torch.nn module or a conv / linear subclass."""
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, module_qualified_name)


#: torch.fx patches ``nn.Module.__call__`` process-wide while it traces, so two threads tracing at
#: once — or one tracing while another runs an eager forward — corrupt each other. Tracing holds
#: this re-entrant lock; threaded callers (dashboard callbacks) hold it around model work too.
FX_LOCK = threading.RLock()


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (eval mode) with :class:`LeafTracer` (thread-safe)."""
    with FX_LOCK:
        tracer = LeafTracer()
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _strip(path: str) -> str:
    """Drop the ``net.`` prefix of :class:`PixelModel` so paths read like the user's model."""
    return path[4:] if path.startswith("net.") else ("" if path == "net" else path)


def prefixes(path: str) -> tuple[str, ...]:
    """Dotted prefixes of a module path: ``"layer1.0.conv1"`` -> ("layer1", "layer1.0")."""
    parts = path.split(".") if path else []
    return tuple(".".join(parts[:i]) for i in range(1, len(parts)))


def _place(node: fx.Node, module: str | None) -> tuple[tuple[str, ...], str]:
    """(enclosing groups outermost first, base id) of a node.

    Module calls are named by their module path; function calls by their innermost enclosing
    module plus the op name, e.g. ``layer1.0.add``.
    """
    if module is not None:
        return prefixes(module), module
    stack = [_strip(p) for p in (node.meta.get("nn_module_stack") or {})]
    inner = next((p for p in reversed(stack) if p), "")
    name = node.name.rstrip("0123456789").rstrip("_") or node.name
    return (*prefixes(inner), inner) if inner else (), f"{inner}.{name}" if inner else name


def graph_from_fx(gm: fx.GraphModule, example: torch.Tensor, name: str) -> LayerGraph:
    """Turn a traced GraphModule into a :class:`LayerGraph` (shapes from one example forward).

    ``example`` should hold two images (B = 2), so outputs whose first axis is not the batch are
    recognised; every layer gets its feature-map axis from :class:`~aevis_core.graph.axes.AxisInference`.
    Values that do not depend on the input (parameters, constants) are not layers.
    """
    ShapeProp(gm).propagate(example)
    axes = AxisInference(gm, int(example.shape[0]))
    modules = dict(gm.named_modules())
    unmapped: dict[str, str] = {}
    alias: dict[fx.Node, list[str]] = {}  # fx node -> layer ids it stands for
    nodes: dict[str, LayerNode] = {}
    fx_names: dict[str, str] = {}  # layer id -> fx node name (for capture)

    def parents(n: fx.Node) -> list[str]:
        out: list[str] = []
        for a in n.all_input_nodes:
            for p in alias.get(a, []):
                if p not in out:
                    out.append(p)
        return out

    for n in gm.graph.nodes:
        tm = n.meta.get("tensor_meta")
        if n.op == "placeholder":
            if isinstance(tm, torch.fx.passes.shape_prop.TensorMetadata):
                shape = tuple(int(s) for s in tm.shape[1:])
                nodes["input"] = LayerNode("input", "input", "input", shape, shape[0] if shape else 1, order=0)
                alias[n] = ["input"]
            continue
        if n.op in ("output", "get_attr"):
            continue
        if n not in axes.dependent:  # constants and shape arithmetic (x.size(0)) carry no data
            alias[n] = []
            continue
        is_tensor = isinstance(tm, torch.fx.passes.shape_prop.TensorMetadata)
        mod = modules.get(n.target) if n.op == "call_module" else None
        passthrough = (not is_tensor or isinstance(mod, PASS_MODULES)
                       or (n.op != "call_module" and function_name(n.target) in PASS_NAMES))
        if passthrough or len(tm.shape) < 2:
            alias[n] = parents(n)
            continue
        shape = tuple(int(s) for s in tm.shape[1:])
        if mod is not None:
            op, target, module = module_kind(mod), type(mod).__name__, _strip(str(n.target))
        else:
            op, target, module = function_kind(n.target), function_name(n.target), None
        groups, base = _place(n, module)
        uid, k = base, 1
        while uid in nodes:  # a module called twice: second call gets "#2"
            k += 1
            uid = f"{base}#{k}"
        ax = axes.axis(n)
        cax = None if ax is None else ax - 1
        if cax is None:
            unmapped[uid] = axes.reason.get(n, "unknown layout")
        nodes[uid] = LayerNode(
            id=uid, op=op, target=target, shape=shape, channels=0 if cax is None else shape[cax],
            inputs=parents(n), module=module, groups=groups, order=len(nodes), channel_axis=cax,
        )
        alias[n] = [uid]
        fx_names[uid] = n.name
    warning = None
    if unmapped:
        first = next(iter(unmapped.items()))
        warning = (f"{len(unmapped)} layer(s) have no feature-map axis and are left out of extraction "
                   f"(e.g. {first[0]}: {first[1]})")
        log.info(warning)
    graph = LayerGraph(name, nodes, fx_names=fx_names, unmapped=unmapped, warning=warning)
    graph.blocks = find_blocks(graph)
    return graph


def build_graph(model: nn.Module, input_shape: tuple[int, ...], name: str = "model") -> LayerGraph:
    """Layer DAG of ``model`` for inputs of shape (C, H, W) (or (F,)); fx first, hooks as fallback."""
    example = torch.zeros((2, *input_shape), device=_device(model))  # B = 2: the batch axis is recognisable
    was_training = model.training
    model.eval()
    try:
        try:
            gm = trace(model)
        except Exception as exc:  # noqa: BLE001 - fx raises many types for untraceable code
            from aevis_core.graph.fallback import graph_from_hooks

            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            inner = type(getattr(model, "net", model)).__name__
            msg = (f"torch.fx cannot trace {inner} ({type(exc).__name__}: {why[:200]}); "
                   "falling back to a chain of leaf modules in call order (no branches, no residual blocks)")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
            try:
                return graph_from_hooks(model, example, name, msg)
            except Exception as exc2:  # noqa: BLE001 - the model cannot even run on a dummy input
                raise ModelLoadError(
                    f"cannot build a layer graph of {inner}: torch.fx failed ({why[:120]}) and a forward pass "
                    f"on a {tuple(example.shape)} input failed too ({type(exc2).__name__}: {str(exc2)[:120]})"
                ) from exc2
        with torch.no_grad():
            return graph_from_fx(gm, example, name)
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
