"""Layer-graph data types: nodes keyed by torch.fx graph node, residual blocks, hierarchy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from aevis_core.errors import AEVisError


@dataclass
class LayerNode:
    """One layer = one tensor-valued node of the traced graph (not one module).

    ``shape`` is the output shape without the batch axis, e.g. (64, 8, 8) or (10,).
    ``channel_axis`` is the axis of ``shape`` that indexes the feature maps (:mod:`.axes`): 0 for
    channels-first (C, H, W) and (F,) outputs, 2 for a channels-last (H, W, C) ConvNeXt block, 1
    for a token × dim (T, D) attention output; ``None`` when the output cannot be mapped to
    feature maps (such layers are left out of extraction). ``channels`` is the number of feature
    maps, ``shape[channel_axis]`` (0 when unmapped). ``groups`` is the module hierarchy the
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
    channel_axis: int | None = 0

    @property
    def spatial(self) -> tuple[int, ...]:
        """Output shape without the channel axis: (H, W) for conv maps, (T,) for tokens, () for vectors."""
        if self.channel_axis is None:
            return self.shape
        return self.shape[:self.channel_axis] + self.shape[self.channel_axis + 1:]


@dataclass
class Block:
    """A building block: the sub-graph between a split and the merge that closes it.

    ``kind`` is ``residual`` (the merge adds its inputs) or ``concat`` (the merge concatenates
    them, as in DenseNet / Inception: the merged maps are the union of the inputs' maps).
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
    """A DAG of layers in topological order, with residual / concat blocks and how it was built.

    ``unmapped``: layer id -> why its output has no feature-map axis (see :mod:`.axes`).
    """

    model_name: str
    nodes: dict[str, LayerNode]
    blocks: list[Block] = field(default_factory=list)
    traced: bool = True
    warning: str | None = None
    fx_names: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)

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

    def merges(self, kind: str | None = None) -> list[str]:
        """Ids of merge nodes (adds or concatenations of two or more layers), optionally of one block kind."""
        return [b.merge for b in self.blocks if kind is None or b.kind == kind]

    def blocks_of(self, kind: str) -> list[Block]:
        """Blocks of one kind (``residual`` or ``concat``)."""
        return [b for b in self.blocks if b.kind == kind]

    def feature_layers(self, ops: tuple[str, ...] | None = None) -> list[str]:
        """Ids of layers with feature maps (not the input, not unmapped), optionally only of the given ops."""
        return [k for k, n in self.nodes.items()
                if n.op != "input" and n.channel_axis is not None and (ops is None or n.op in ops)]

    def check_mapped(self, layer_ids: list[str] | tuple[str, ...]) -> None:
        """Raise a one-line :class:`AEVisError` for an unknown layer or one without feature maps."""
        unknown = [k for k in layer_ids if k not in self.nodes]
        if unknown:
            raise AEVisError(f"unknown layer(s): {', '.join(unknown[:5])}")
        for k in layer_ids:
            if self.nodes[k].channel_axis is None:
                why = self.unmapped.get(k, "unknown layout")
                raise AEVisError(f"layer {k!r} (output {self.nodes[k].shape}) has no feature-map axis: {why}")

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
            "unmapped": dict(self.unmapped),
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
        return cls(d["model"], nodes, blocks, d["traced"], d["warning"], dict(d.get("fx_names", {})),
                   dict(d.get("unmapped", {})))
