"""Datapath extraction and comparison (Liu et al., VAST 2018, Sec. 4).

* :mod:`.qp` — the exact box-QP solver of Eq. 5; :mod:`.selection` — accumulation, critical sets;
* :mod:`.extract` — one forward + one backward pass per batch, per-layer QPs, critical sets;
* :mod:`.connections` — links between critical maps of adjacent layers;
* :mod:`.similarity` — activation similarity, Jaccard, activation statistics of datapaths;
* :mod:`.controls` / :mod:`.control_similarity` / :mod:`.rank_test` / :mod:`.diverge` —
  energy-matched noise controls, similarities to their draws, the Monte Carlo rank test and the
  calibrated diverging point;
* :mod:`.service` — cached extraction shared by the CLI and the dashboard.
"""

from aevis_core.datapath.control_similarity import compare_with_noise_control
from aevis_core.datapath.controls import CONTROLS, control_draws
from aevis_core.datapath.diverge import DivergenceConfig, diverging_point, find_diverging_point
from aevis_core.datapath.extract import Datapath, ExtractConfig, LayerDatapath, extract_datapath
from aevis_core.datapath.qp import QPResult, default_lambda, kkt_residual, objective, solve_box_qp
from aevis_core.datapath.selection import QPAccumulator, accumulate, brute_force_subset, critical_set
from aevis_core.datapath.similarity import activation_similarity, jaccard, layer_stats

__all__ = [
    "CONTROLS", "Datapath", "DivergenceConfig", "ExtractConfig", "LayerDatapath", "QPAccumulator", "QPResult",
    "control_draws",
    "accumulate", "activation_similarity", "brute_force_subset", "compare_with_noise_control",
    "critical_set", "default_lambda", "diverging_point", "extract_datapath", "find_diverging_point",
    "jaccard", "kkt_residual", "layer_stats", "objective", "solve_box_qp",
]
