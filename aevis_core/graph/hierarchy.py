"""Layer hierarchy from module names (``layer2`` -> ``layer2.3`` -> ``layer2.3.conv1``).

The tree's leaves are layers (graph nodes); inner nodes are module groups. A tree cut over it
(dashboard issue) picks which groups are shown collapsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aevis_core.graph.types import LayerGraph


@dataclass
class GroupNode:
    """A node of the hierarchy: a module group (``layers`` below it) or a single layer."""

    id: str
    children: list[GroupNode] = field(default_factory=list)
    layer: str | None = None

    @property
    def is_leaf(self) -> bool:
        """True for a single layer."""
        return self.layer is not None

    def layers(self) -> list[str]:
        """All layer ids under this node, in graph order."""
        if self.layer is not None:
            return [self.layer]
        return [k for c in self.children for k in c.layers()]

    def size(self) -> int:
        """Number of tree nodes in this subtree."""
        return 1 + sum(c.size() for c in self.children)


def build_hierarchy(graph: LayerGraph) -> GroupNode:
    """Tree ``root -> groups -> layers``; a group with a single child is kept (it names the layer)."""
    root = GroupNode("")
    index: dict[str, GroupNode] = {"": root}
    for node in graph.nodes.values():
        parent = root
        for g in node.groups:
            if g not in index:
                index[g] = GroupNode(g)
                parent.children.append(index[g])
            parent = index[g]
        parent.children.append(GroupNode(node.id, layer=node.id))
    return root
