"""Capture chosen layers' outputs (and so their gradients) in ONE forward pass.

For traced graphs the model is re-traced into a GraphModule whose output is
``(logits, a_1, ..., a_m)`` for the chosen fx nodes, so each layer is exactly one graph node
(a module called twice gives two different tensors). A captured node feeding an in-place op
(``ReLU(inplace=True)``, ``+=``) is cloned and its consumers rerouted to the clone, so the
returned tensor keeps its value and still lies on the path to the logits (its gradient is
the true ∂p/∂a). Untraceable models use forward hooks in call order (fallback graph); hooks
are removed after every call, so the model is left unchanged.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from aevis_core.errors import AEVisError
from aevis_core.graph.fallback import call_hooks
from aevis_core.graph.ops import is_inplace
from aevis_core.graph.trace import trace
from aevis_core.graph.types import LayerGraph

Tensor = torch.Tensor


def _capture_module(model: nn.Module, graph: LayerGraph, layer_ids: list[str]) -> fx.GraphModule:
    gm = trace(model)
    by_name = {n.name: n for n in gm.graph.nodes}
    modules = dict(gm.named_modules())
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    picked = []
    for lid in layer_ids:
        node = by_name[graph.fx_names[lid]] if lid != "input" else next(
            n for n in gm.graph.nodes if n.op == "placeholder")
        users = [u for u in node.users if u is not out_node]
        if any(is_inplace(u.target, modules.get(u.target) if u.op == "call_module" else None) for u in users):
            with gm.graph.inserting_after(node):
                clone = gm.graph.call_method("clone", (node,))
            for u in users:
                u.replace_input_with(node, clone)
        picked.append(node)
    orig = out_node.args[0]
    out_node.args = ((orig, *picked),)
    gm.graph.lint()
    gm.recompile()
    return gm


class LayerCapture:
    """Callable ``x -> (logits (N, K), {layer_id: activation (N, C, ...)})`` in one forward.

    ``x`` should have ``requires_grad=True`` (or the model trainable parameters) for the
    returned activations to carry gradients; use :func:`torch.autograd.grad` on them.
    """

    def __init__(self, model: nn.Module, graph: LayerGraph, layer_ids: list[str]) -> None:
        unknown = [k for k in layer_ids if k not in graph.nodes]
        if unknown:
            raise AEVisError(f"unknown layer(s): {', '.join(unknown[:5])}")
        self.model = model
        self.graph = graph
        self.layer_ids = list(layer_ids)
        self._gm = _capture_module(model, graph, self.layer_ids) if graph.traced else None

    def __call__(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One forward pass: logits and the chosen layers' outputs (batch first)."""
        if self._gm is not None:
            logits, *acts = self._gm(x)
            return logits, dict(zip(self.layer_ids, acts, strict=True))
        want = set(self.layer_ids)
        got: dict[str, Tensor] = {}

        def record(lid: str, path: str, mod: nn.Module, out: object) -> None:
            if lid in want and isinstance(out, Tensor):
                got[lid] = out

        with call_hooks(self.model, record):
            logits = self.model(x)
        if "input" in want:
            got["input"] = x
        return logits, {k: got[k] for k in self.layer_ids if k in got}


def capture(model: nn.Module, graph: LayerGraph, layer_ids: list[str], x: Tensor,
            grad: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Convenience: one forward of ``x`` (N, ...) capturing ``layer_ids``; detached unless ``grad``."""
    cap = LayerCapture(model, graph, layer_ids)
    if grad:
        return cap(x.requires_grad_(True) if not x.requires_grad else x)
    with torch.no_grad():
        logits, acts = cap(x)
    return logits, acts
