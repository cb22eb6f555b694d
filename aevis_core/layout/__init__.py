"""Pure layout helpers for the dashboard (never imports dash).

* :mod:`.segment` — layer-level calendar layout: longest-path columns and lanes, rows cut by an
  exact DP over Eq. 6 (empty space + λ · cut blocks) of Liu et al. (VAST 2018, Sec. 5.1).
* :mod:`.treecut` — initial visible nodes: greedy Furnas-DOI tree cut of the layer hierarchy,
  expand/collapse for clicks.
* :mod:`.euler` — Euler regions of 1–4 datapaths per layer, K-means clusters of maps.
* :mod:`.treemap` — squarified treemap of regions → clusters → ⌊log10 N_C⌋ + 1 stacks.
"""

from aevis_core.layout.euler import Region, euler_regions, kmeans_clusters, map_features, region_patterns
from aevis_core.layout.segment import (
    CalendarLayout,
    calendar_layout,
    edges_between_visible,
    layer_columns,
    segment_rows,
    segment_rows_brute,
    segmentation_cost,
)
from aevis_core.layout.treecut import collapse, cut_mapping, datapath_doi, expand, group_doi, tree_cut
from aevis_core.layout.treemap import Rect, feature_treemap, layer_treemap, n_stack, squarify

__all__ = [
    "CalendarLayout", "Rect", "Region", "calendar_layout", "collapse", "cut_mapping", "datapath_doi",
    "edges_between_visible", "euler_regions", "expand", "feature_treemap", "group_doi", "kmeans_clusters",
    "layer_columns", "layer_treemap", "map_features", "n_stack", "region_patterns", "segment_rows",
    "segment_rows_brute", "segmentation_cost", "squarify", "tree_cut",
]
