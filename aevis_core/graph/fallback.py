"""Fallback layer graph for models torch.fx cannot trace: leaf-module calls in call order.

Forward hooks on every leaf module record one forward pass; each call becomes a layer (a
module called twice gives two layers, ``path`` and ``path#2``) and the layers form a chain.
Branches and residual blocks are invisible this way, which the caller is warned about.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from aevis_core.graph.axes import module_axis
from aevis_core.graph.ops import PASS_MODULES, module_kind
from aevis_core.graph.types import LayerGraph, LayerNode


def _strip(path: str) -> str:
    return path[4:] if path.startswith("net.") else path


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of modules without children, minus pass-through ones."""
    return [(n, m) for n, m in model.named_modules()
            if n and not any(True for _ in m.children()) and not isinstance(m, PASS_MODULES)]


@contextmanager
def call_hooks(model: nn.Module, on_call: Any) -> Iterator[None]:
    """Hook every leaf module; ``on_call(layer_id, path, module, output)`` per call; hooks removed after."""
    counts: dict[str, int] = {}
    handles = []

    def make(path: str) -> Any:
        def hook(mod: nn.Module, args: Any, out: Any) -> Any:
            counts[path] = counts.get(path, 0) + 1
            lid = _strip(path) if counts[path] == 1 else f"{_strip(path)}#{counts[path]}"
            return on_call(lid, path, mod, out)

        return hook

    try:
        for path, mod in leaf_modules(model):
            handles.append(mod.register_forward_hook(make(path)))
        yield
    finally:
        for h in handles:
            h.remove()
        counts.clear()


def graph_from_hooks(model: nn.Module, example: torch.Tensor, name: str, warning: str) -> LayerGraph:
    """Chain graph of leaf-module calls for ``example`` (B, ...) with the fallback ``warning``.

    Each call's feature-map axis comes from its module type and the previous call's output
    (:func:`~aevis_core.graph.axes.module_axis`); outputs whose first axis is not the batch are unmapped.
    """
    nodes: dict[str, LayerNode] = {}
    unmapped: dict[str, str] = {}
    shape = tuple(int(s) for s in example.shape[1:])
    nodes["input"] = LayerNode("input", "input", "input", shape, shape[0] if shape else 1)
    prev: list[Any] = ["input", 1, tuple(int(s) for s in example.shape)]  # id, axis (batch at 0), shape

    def record(lid: str, path: str, mod: nn.Module, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return
        full = tuple(int(s) for s in out.shape)
        ax, why = module_axis(mod, prev[1], prev[2], full)
        if full[0] != example.shape[0]:
            ax, why = None, "the batch is not its first axis"
        oshape = full[1:]
        parts = _strip(path).split(".")
        groups = tuple(".".join(parts[:i]) for i in range(1, len(parts)))
        cax = None if ax is None else ax - 1
        if cax is None:
            unmapped[lid] = why
        nodes[lid] = LayerNode(lid, module_kind(mod), type(mod).__name__, oshape,
                               0 if cax is None else oshape[cax], [prev[0]], _strip(path), groups, len(nodes),
                               channel_axis=cax)
        prev[:] = [lid, ax, full]

    with torch.no_grad(), call_hooks(model, record):
        model(example)
    return LayerGraph(name, nodes, [], traced=False, warning=warning, unmapped=unmapped)
