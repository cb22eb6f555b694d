"""Datapath extraction: the critical-feature-map box QP (:mod:`aevis_core.datapath.qp`)."""

from aevis_core.datapath.qp import (
    QPAccumulator,
    QPResult,
    accumulate,
    brute_force_subset,
    critical_set,
    default_lambda,
    kkt_residual,
    objective,
    solve_box_qp,
)

__all__ = [
    "QPAccumulator", "QPResult", "accumulate", "brute_force_subset", "critical_set",
    "default_lambda", "kkt_residual", "objective", "solve_box_qp",
]
