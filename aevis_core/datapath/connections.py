"""Links between critical maps of adjacent layers (Liu et al. 2018, Sec. 4.1, last step).

A parent map i and a child map o are linked when both are critical. The weight is the
strength of the connection in the model: Σ|W[o, i]| over the kernel for convolutions (grouped
and depthwise convs included), |W[o, i]| for linear layers, and 1 for channel-wise layers
(BN, activations, pooling, residual adds: map i feeds map i), and 1 from map i of the k-th input
of a concatenation to map offset_k + i. Only the ``keep`` strongest incoming links per child map
are kept. Layers whose channel mapping is unknown (e.g. channel padding) get no links.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry


class LayerResult(Protocol):
    """What :func:`connect` reads of one layer's result (e.g. ``LayerDatapath``)."""

    @property
    def n(self) -> int: ...
    @property
    def critical(self) -> Sequence[int]: ...


class LayersResult(Protocol):
    """What :func:`connect` reads of an extraction (e.g. ``Datapath``): critical maps per layer."""

    @property
    def layers(self) -> Mapping[str, LayerResult]: ...

CHANNELWISE = {"bn", "act", "pool", "add", "sub", "mul", "slice"}


def _weight_matrix(mod: nn.Module) -> torch.Tensor | None:
    """|W| reduced to (out, in) for conv / linear modules; None for others."""
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor):
        return None
    if isinstance(mod, nn.Linear):
        return w.detach().abs().cpu()
    if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        per = w.detach().abs().flatten(2).sum(2).cpu()  # (out, in / groups)
        groups = mod.groups
        if groups == 1:
            return per
        out_c, in_g = per.shape
        full = torch.zeros(out_c, in_g * groups)
        og = out_c // groups
        for g in range(groups):
            full[g * og:(g + 1) * og, g * in_g:(g + 1) * in_g] = per[g * og:(g + 1) * og]
        return full
    return None


def concat_offsets(graph: LayerGraph, inputs: Sequence[str], n: int) -> dict[str, int]:
    """Offset of each input's maps in a concatenation of ``n`` maps (empty when the sizes do not add up)."""
    sizes = [graph.nodes[p].channels for p in inputs]
    if sum(sizes) != n:
        return {}
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    return dict(zip(inputs, offs, strict=True))


def connect(entry: ModelEntry, graph: LayerGraph, dp: LayersResult,
            keep: int = 3) -> list[tuple[str, int, str, int, float]]:
    """(parent, i, child, o, weight) links between critical maps of adjacent chosen layers."""
    net = getattr(entry.model, "net", entry.model)
    links: list[tuple[str, int, str, int, float]] = []
    for child, res in dp.layers.items():
        node = graph.nodes[child]
        mod = net.get_submodule(node.module) if node.module else None
        wmat = _weight_matrix(mod) if mod is not None else None
        child_crit = np.asarray(res.critical, dtype=np.int64)
        for parent in node.inputs:
            if parent not in dp.layers or child_crit.size == 0:
                continue
            par = dp.layers[parent]
            pcrit = np.asarray(sorted(par.critical), dtype=np.int64)
            if pcrit.size == 0:
                continue
            if wmat is not None and wmat.shape[1] == par.n and wmat.shape[0] == res.n:
                w = wmat.numpy()[np.ix_(child_crit, pcrit)]          # (|C_child|, |C_parent|)
                top = min(keep, pcrit.size)
                best = np.argsort(-w, axis=1, kind="stable")[:, :top]
                for r, o in enumerate(child_crit.tolist()):
                    for col in best[r]:
                        if w[r, col] > 0:
                            links.append((parent, int(pcrit[col]), child, o, float(w[r, col])))
            elif node.op == "cat" and par.n < res.n and parent in concat_offsets(graph, node.inputs, res.n):
                off = concat_offsets(graph, node.inputs, res.n)[parent]
                for o in np.intersect1d(child_crit, pcrit + off).tolist():
                    links.append((parent, int(o) - off, child, int(o), 1.0))
            elif node.op in CHANNELWISE and par.n == res.n:
                for o in np.intersect1d(child_crit, pcrit).tolist():
                    links.append((parent, int(o), child, int(o), 1.0))
    return links
