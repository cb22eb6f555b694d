"""Building blocks: sub-graphs between a split and its merge (residual blocks).

For each merge (an ``add`` with two or more layer inputs) the split is the merge's immediate
dominator in the DAG rooted at the input (Cooper-Harvey-Kennedy, via networkx): the last node
every path to the merge goes through. Members are the nodes on split->merge paths.
"""

from __future__ import annotations

import networkx as nx

from aevis_core.graph.types import Block, LayerGraph


def to_networkx(graph: LayerGraph) -> nx.DiGraph:
    """The layer DAG as a networkx DiGraph (node ids, parent -> child edges)."""
    g = nx.DiGraph()
    g.add_nodes_from(graph.nodes)
    g.add_edges_from(graph.edges)
    return g


def find_blocks(graph: LayerGraph) -> list[Block]:
    """Residual blocks of ``graph`` in topological order of their merges."""
    merges = [n.id for n in graph.nodes.values() if n.op in ("add", "cat") and len(n.inputs) >= 2]
    if not merges:
        return []
    g = to_networkx(graph)
    roots = [n for n in g.nodes if g.in_degree(n) == 0]
    root = "input" if "input" in graph.nodes else roots[0]
    if len(roots) > 1:  # several sources (e.g. constants): add a virtual root
        root = "__root__"
        g.add_edges_from((root, r) for r in roots)
    idom = nx.immediate_dominators(g, root)
    blocks = []
    for i, m in enumerate(merges):
        split = idom[m]
        inside = (nx.descendants(g, split) & nx.ancestors(g, m)) | {m}
        members = [k for k in graph.nodes if k in inside]
        kind = "residual" if graph.nodes[m].op == "add" else "concat"
        blocks.append(Block(f"block{i}", kind, split, m, members))
    return blocks
