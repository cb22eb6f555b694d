"""Layer-graph data types: nodes keyed by torch.fx graph node, residual blocks, hierarchy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerNode:
    """One layer = one tensor-valued node of the traced graph (not one module).

    ``shape`` is the output shape without the batch axis, e.g. (64, 8, 8) or (10,).
    ``channels`` is the number of feature maps: C for (C, H, W) outputs, F for (F,) outputs
    (each neuron of an MLP layer is one feature map). ``groups`` is the module hierarchy the
    node sits in, outermost first, e.g. ("layer2", "layer2.3"); ``module`` is the module path
    for module calls (shared by every call of a module that is called twice).
    """

    id: str
    op: str
    target: str
    shape: tuple[int, ...]
    channels: int
    inputs: list[str] = field(default_factory=list)
    module: str | None = None
    groups: tuple[str, ...] = ()
    order: int = 0

    @property
    def spatial(self) -> tuple[int, ...]:
        """Spatial part of the output shape: (H, W) for conv maps, () for vectors."""
        return self.shape[1:]


@dataclass
class Block:
    """A building block: the sub-graph between a split and the merge that closes it.

    ``members`` are the nodes strictly after ``split`` up to and including ``merge`` that lie on
    a path from split to merge, in topological order.
    """

    id: str
    kind: str
    split: str
    merge: str
    members: list[str]


@dataclass
class LayerGraph:
    """A DAG of layers in topological order, with residual blocks and how it was built."""

    model_name: str
    nodes: dict[str, LayerNode]
    blocks: list[Block] = field(default_factory=list)
    traced: bool = True
    warning: str | None = None
    fx_names: dict[str, str] = field(default_factory=dict)

    @property
    def order(self) -> list[str]:
        """Node ids in topological (execution) order."""
        return list(self.nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) pairs."""
        return [(p, n.id) for n in self.nodes.values() for p in n.inputs]

    def children(self) -> dict[str, list[str]]:
        """Node id -> ids of the nodes that consume its output."""
        out: dict[str, list[str]] = {k: [] for k in self.nodes}
        for p, c in self.edges:
            out[p].append(c)
        return out

    def merges(self) -> list[str]:
        """Ids of residual merge nodes (adds with two or more layer inputs)."""
        return [b.merge for b in self.blocks]

    def feature_layers(self, ops: tuple[str, ...] | None = None) -> list[str]:
        """Ids of layers with feature maps (not the input), optionally only of the given ops."""
        return [k for k, n in self.nodes.items() if n.op != "input" and (ops is None or n.op in ops)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists instead of tuples)."""
        return {
            "model": self.model_name,
            "traced": self.traced,
            "warning": self.warning,
            "nodes": [
                {**asdict(n), "shape": list(n.shape), "groups": list(n.groups)} for n in self.nodes.values()
            ],
            "blocks": [asdict(b) for b in self.blocks],
            "fx_names": dict(self.fx_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerGraph:
        """Inverse of :meth:`to_dict`."""
        nodes = {}
        for nd in d["nodes"]:
            nd = dict(nd)
            nd["shape"] = tuple(nd["shape"])
            nd["groups"] = tuple(nd["groups"])
            nodes[nd["id"]] = LayerNode(**nd)
        blocks = [Block(**b) for b in d["blocks"]]
        return cls(d["model"], nodes, blocks, d["traced"], d["warning"], dict(d.get("fx_names", {})))
