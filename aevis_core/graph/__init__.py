"""Layer graphs of models (torch.fx), residual blocks, hierarchy and one-pass capture."""

from aevis_core.graph.blocks import find_blocks, to_networkx
from aevis_core.graph.capture import LayerCapture, capture
from aevis_core.graph.hierarchy import GroupNode, build_hierarchy
from aevis_core.graph.trace import build_graph
from aevis_core.graph.types import Block, LayerGraph, LayerNode

__all__ = [
    "Block", "GroupNode", "LayerCapture", "LayerGraph", "LayerNode", "build_graph",
    "build_hierarchy", "capture", "find_blocks", "to_networkx",
]
