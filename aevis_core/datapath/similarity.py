"""Similarities that compare image sets along their datapaths (Liu et al., VAST 2018, Sec. 4-5).

Liu et al., "Analyzing the Noise Robustness of Deep Neural Networks" (VAST 2018) explain a
misclassification by where the adversarial examples' datapath departs from the normal images'
datapath. This module gives the numbers behind that comparison:

* :func:`activation_similarity` -- for PAIRED images (adversarial ``x_b[i]`` of normal ``x_a[i]``)
  the per-layer cosine similarity of the two images' full activations,
  ``s_l(i) = <a_l(x_a[i]), a_l(x_b[i])> / (||a_l(x_a[i])|| ||a_l(x_b[i])||)`` with ``a_l`` the
  flattened C×H×W output of layer ``l``. :func:`set_similarity` is the unpaired, set-level
  variant: the cosine of the two sets' mean activation vectors ``m_l ∈ R^n`` (per feature map,
  averaged over space and images).
* :func:`jaccard` and :func:`layer_stats` -- overlap of the critical-map sets of several
  :class:`~aevis_core.datapath.extract.Datapath` s, each set's mean activation on its own
  datapath, per-map mean activations and the difference normal − adversarial.

The noise controls (:mod:`aevis_core.datapath.controls`) and the calibrated diverging point built
on the same cosine (:mod:`aevis_core.datapath.diverge`) live beside this module.

Cosine convention: two all-zero vectors have similarity 1 (identical), a zero and a non-zero
vector 0. Similarities are accumulated in float64 (float32 on MPS) from float32 activations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aevis_core.datapath.extract import Datapath
from aevis_core.errors import AEVisError
from aevis_core.graph.capture import LayerCapture
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry

Tensor = torch.Tensor
_EPS = 1e-30


def num(x: float | np.floating[Any] | None, sig: int = 6) -> float | None:
    """JSON-ready float rounded to ``sig`` significant digits; None for None, NaN or ±inf."""
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{sig}g}")


def nums(a: np.ndarray, sig: int = 6) -> list[float | None]:
    """:func:`num` of every element of ``a`` (flattened)."""
    return [num(v, sig) for v in np.asarray(a, dtype=np.float64).ravel()]


# ----------------------------------------------------------------------------------------------
# cosine similarity of activations
# ----------------------------------------------------------------------------------------------

def cosine_rows(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) arrays -> (N,) float64 in [-1, 1].

    ``cos(a_i, b_i) = a_i·b_i / (||a_i|| ||b_i||)``; 1 when both rows are zero, 0 when one is.
    Extra trailing axes are flattened, so (N, C, H, W) inputs compare whole activations.
    """
    ta = torch.as_tensor(a).reshape(len(a), -1).double()
    tb = torch.as_tensor(b).reshape(len(b), -1).double()
    if ta.shape != tb.shape:
        raise AEVisError(f"cannot compare activations of shapes {tuple(ta.shape)} and {tuple(tb.shape)}")
    return cosine_tensors(ta, tb).numpy()


def cosine_tensors(a: Tensor, b: Tensor) -> Tensor:
    """(B, D), (B, D) -> (B,) cosine with the zero-vector convention, on CPU float64."""
    dot = (a * b).sum(1)
    na = a.square().sum(1).sqrt()
    nb = b.square().sum(1).sqrt()
    cos = dot / (na * nb).clamp_min(_EPS)
    both_zero = (na == 0) & (nb == 0)
    cos = torch.where(both_zero, torch.ones_like(cos), cos).clamp(-1.0, 1.0)
    return cos.cpu().double()


def model_device(entry: ModelEntry) -> torch.device:
    """Device of the model's parameters."""
    return next(entry.model.parameters()).device


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 for similarity sums, float32 on MPS (no float64 there)."""
    return torch.float32 if device.type == "mps" else torch.float64


def check_images(*xs: Tensor) -> None:
    """Raise :class:`AEVisError` unless every x is a non-empty (N, 3, H, W) batch of one shape."""
    for x in xs:
        if x.dim() != 4 or x.shape[0] == 0:
            raise AEVisError(f"need a non-empty (N, 3, H, W) image batch, got {tuple(x.shape)}")
    if any(x.shape != xs[0].shape for x in xs):
        raise AEVisError("paired image sets must have the same shape: "
                         + " vs ".join(str(tuple(x.shape)) for x in xs))


def resolve_layers(graph: LayerGraph, layers: Sequence[str] | None) -> list[str]:
    """``layers`` as a list, or every feature layer of ``graph``; raise if empty."""
    ids = list(layers) if layers is not None else graph.feature_layers()
    if not ids:
        raise AEVisError("no layers to compare")
    return ids


def paired_similarities(entry: ModelEntry, graph: LayerGraph, x_ref: Tensor, others: Sequence[Tensor],
                        layers: Sequence[str] | None = None,
                        batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """Per-layer cosine similarity of ``x_ref[i]`` with ``o[i]`` for every set ``o`` in ``others``.

    ``x_ref`` and each ``o``: (N, 3, H, W) pixels in [0, 1]. Returns one dict per ``o``:
    layer -> (N,) float64. Runs ``torch.no_grad()`` forwards of ``batch_size`` images (one for
    the reference batch, one per other set), so memory holds at most two batches of captured
    activations; only the (N,) similarities are kept.
    """
    check_images(x_ref, *others)
    if batch_size < 1:
        raise AEVisError("batch_size must be positive")
    ids = resolve_layers(graph, layers)
    cap = LayerCapture(entry.model, graph, ids)
    dev = model_device(entry)
    dt = accumulation_dtype(dev)
    parts: list[dict[str, list[Tensor]]] = [{k: [] for k in ids} for _ in others]
    n = x_ref.shape[0]
    with torch.no_grad():
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            _, ref = cap(x_ref[s:e].to(dev, torch.float32))
            for j, o in enumerate(others):
                _, act = cap(o[s:e].to(dev, torch.float32))
                for k in ids:  # one layer at a time in float64: no extra copy of the whole batch
                    parts[j][k].append(cosine_tensors(ref[k].reshape(e - s, -1).to(dt),
                                                      act[k].reshape(e - s, -1).to(dt)))
                del act
    return [{k: torch.cat(p[k]).numpy() for k in ids} for p in parts]


def activation_similarity(entry: ModelEntry, graph: LayerGraph, x_a: Tensor, x_b: Tensor,
                          layers: Sequence[str] | None = None,
                          batch_size: int = 32) -> dict[str, np.ndarray]:
    """Paired per-layer cosine similarity of full activations, layer -> (N,) float64.

    ``x_a``, ``x_b``: (N, 3, H, W) in [0, 1], ``x_b[i]`` the twin of ``x_a[i]`` (e.g. an
    adversarial example and its normal source). For layer ``l`` with output a_l (C, H, W)
    flattened to R^D: ``s_l(i) = <a_l(x_a[i]), a_l(x_b[i])> / (||a_l(x_a[i])|| ||a_l(x_b[i])||)``.
    ``layers`` default to every feature layer of ``graph`` (graph order). Computed in batches of
    ``batch_size`` under ``torch.no_grad()``; the result does not depend on ``batch_size`` (up to
    float32 convolution round-off).
    """
    return paired_similarities(entry, graph, x_a, [x_b], layers, batch_size)[0]


def mean_map_activation(entry: ModelEntry, graph: LayerGraph, x: Tensor, layers: Sequence[str] | None = None,
                        batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per-map mean activation of a set, layer -> (n,) float64: mean over images and space.

    ``m_l[j] = 1/(N·|Ω|) Σ_i Σ_{p∈Ω} a_l(x_i)[j, p]`` for (N, C, H, W) outputs (Ω the spatial
    positions), ``1/N Σ_i a_l(x_i)[j]`` for (N, F) outputs. Batched, ``torch.no_grad()``.
    """
    check_images(x)
    ids = resolve_layers(graph, layers)
    cap = LayerCapture(entry.model, graph, ids)
    dev = model_device(entry)
    dt = accumulation_dtype(dev)
    sums: dict[str, Tensor] = {}
    n = x.shape[0]
    with torch.no_grad():
        for s in range(0, n, max(1, batch_size)):
            _, act = cap(x[s:s + max(1, batch_size)].to(dev, torch.float32))
            for k in ids:
                a = act[k].to(dt)
                dims = tuple(range(2, a.dim()))
                v = (a.mean(dim=dims) if dims else a).sum(0).cpu().double()
                sums[k] = sums[k] + v if k in sums else v
    return {k: (sums[k] / n).numpy() for k in ids}


def mean_vector_similarity(mean_act_a: np.ndarray, mean_act_b: np.ndarray) -> float:
    """Unpaired set similarity of one layer: cosine of the sets' mean activation vectors.

    ``mean_act_a`` (N_a, n) and ``mean_act_b`` (N_b, n) per-image, per-map mean activations (as
    in ``Datapath.mean_act``), or already-averaged (n,) vectors. Returns
    ``cos(m_a, m_b)`` with ``m = mean over images`` (n,). Note that after a ReLU every m is
    non-negative, so values are high (≥ 0) even for unrelated sets; compare against a reference
    pair rather than reading the value alone.
    """
    ma = np.asarray(mean_act_a, dtype=np.float64)
    mb = np.asarray(mean_act_b, dtype=np.float64)
    ma = ma.mean(0) if ma.ndim == 2 else ma
    mb = mb.mean(0) if mb.ndim == 2 else mb
    return float(cosine_rows(ma[None], mb[None])[0])


def set_similarity(entry: ModelEntry, graph: LayerGraph, x_a: Tensor, x_b: Tensor,
                   layers: Sequence[str] | None = None, batch_size: int = 32) -> dict[str, float]:
    """Unpaired per-layer similarity of two image sets (any sizes N_a, N_b): layer -> cos(m_a, m_b).

    ``m`` is :func:`mean_map_activation` (n,) of each set; see :func:`mean_vector_similarity`.
    """
    ma = mean_map_activation(entry, graph, x_a, layers, batch_size)
    mb = mean_map_activation(entry, graph, x_b, layers, batch_size)
    return {k: mean_vector_similarity(ma[k], mb[k]) for k in ma}


def datapath_set_similarity(dp_a: Datapath, dp_b: Datapath) -> dict[str, float]:
    """:func:`mean_vector_similarity` of two extracted datapaths' ``mean_act``, for their common layers."""
    return {k: mean_vector_similarity(dp_a.mean_act[k], dp_b.mean_act[k])
            for k in dp_a.mean_act if k in dp_b.mean_act}


# ----------------------------------------------------------------------------------------------
# critical-set statistics
# ----------------------------------------------------------------------------------------------

def jaccard(a: set[int] | Sequence[int], b: set[int] | Sequence[int]) -> float:
    """Jaccard index ``|A ∩ B| / |A ∪ B|`` of two critical-map sets, in [0, 1].

    Defined as 1.0 when both sets are empty (two empty datapaths agree perfectly).
    """
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


@dataclass
class LayerStats:
    """Comparison of several sets' datapaths at one layer with n feature maps.

    ``critical[s]``: set s's critical maps. ``jaccard[(s, t)]`` for every unordered pair (s before
    t in input order). ``activation[s][t]``: mean activation of set s on set t's critical maps,
    ``1/N_s Σ_i 1/|C_t| Σ_{j∈C_t} mean_act_s[i, j]`` (NaN when C_t is empty); the diagonal
    ``activation[s][s]`` is set s's activation on its own datapath (:attr:`own_activation`).
    ``map_activation[s]``: (n,) per-map mean over set s's images. ``diff``: (n,)
    ``map_activation[normal] − map_activation[adversarial]`` (None without such a pair), with the
    names in ``diff_sets``.
    """

    layer: str
    n: int
    critical: dict[str, list[int]]
    jaccard: dict[tuple[str, str], float]
    activation: dict[str, dict[str, float]]
    map_activation: dict[str, np.ndarray]
    diff: np.ndarray | None = None
    diff_sets: tuple[str, str] | None = None

    @property
    def own_activation(self) -> dict[str, float]:
        """Set -> mean activation of the set on its own datapath."""
        return {s: self.activation[s][s] for s in self.activation}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; floats to 6 significant digits, NaN as None."""
        return {
            "layer": self.layer,
            "n": self.n,
            "critical": {s: list(map(int, v)) for s, v in self.critical.items()},
            "jaccard": [{"a": a, "b": b, "jaccard": num(v)} for (a, b), v in self.jaccard.items()],
            "own_activation": {s: num(v) for s, v in self.own_activation.items()},
            "activation": {s: {t: num(v) for t, v in row.items()} for s, row in self.activation.items()},
            "map_activation": {s: nums(v) for s, v in self.map_activation.items()},
            "diff": None if self.diff is None else nums(self.diff),
            "diff_sets": None if self.diff_sets is None else list(self.diff_sets),
        }


@dataclass
class DatapathStats:
    """:class:`LayerStats` per common layer (in the first datapath's layer order)."""

    sets: list[str]
    layers: dict[str, LayerStats]
    diff_sets: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: set names, difference pair and per-layer statistics."""
        return {"sets": list(self.sets), "diff_sets": None if self.diff_sets is None else list(self.diff_sets),
                "layers": {k: v.to_dict() for k, v in self.layers.items()}}


def _activation_on(mean_act: np.ndarray, maps: Sequence[int]) -> float:
    """Mean over images of the mean over ``maps`` of an (N, n) matrix; NaN for no maps/images."""
    if len(maps) == 0 or mean_act.shape[0] == 0:
        return math.nan
    return float(np.asarray(mean_act, dtype=np.float64)[:, list(maps)].mean())


def layer_stats(dps: Mapping[str, Datapath], diff: tuple[str, str] | None = None,
                layers: Sequence[str] | None = None) -> DatapathStats:
    """Per-layer statistics of several image sets' datapaths (pure; no model needed).

    ``dps``: set name -> :class:`Datapath` (e.g. ``{"normal": ..., "adversarial": ...}``), all
    extracted on the same model. ``diff``: (normal, adversarial) names for the activation
    difference; default ``("normal", "adversarial")`` when both names are present, else none.
    ``layers`` default to the layers common to every datapath, in the first one's order.
    See :class:`LayerStats` for the quantities.
    """
    if not dps:
        raise AEVisError("layer_stats needs at least one datapath")
    names = list(dps)
    if diff is None and {"normal", "adversarial"} <= set(names):
        diff = ("normal", "adversarial")
    if diff is not None and any(s not in dps for s in diff):
        raise AEVisError(f"unknown set(s) for the activation difference: {diff}; sets are {names}")
    first = dps[names[0]]
    ids = list(layers) if layers is not None else [
        k for k in first.layers if all(k in d.layers and k in d.mean_act for d in dps.values())]
    out: dict[str, LayerStats] = {}
    for k in ids:
        missing = [s for s in names if k not in dps[s].layers or k not in dps[s].mean_act]
        if missing:
            raise AEVisError(f"layer {k!r} is missing from set(s) {missing}")
        sizes = {dps[s].layers[k].n for s in names} | {int(dps[s].mean_act[k].shape[1]) for s in names}
        if len(sizes) != 1:
            raise AEVisError(f"layer {k!r} has different map counts across sets: {sorted(sizes)}")
        n = sizes.pop()
        crit = {s: list(dps[s].layers[k].critical) for s in names}
        jac = {(a, b): jaccard(crit[a], crit[b]) for a, b in itertools.combinations(names, 2)}
        act = {s: {t: _activation_on(dps[s].mean_act[k], crit[t]) for t in names} for s in names}
        maps = {s: np.asarray(dps[s].mean_act[k], dtype=np.float64).mean(0) for s in names}
        d = maps[diff[0]] - maps[diff[1]] if diff is not None else None
        out[k] = LayerStats(k, n, crit, jac, act, maps, d, diff)
    return DatapathStats(names, out, diff)
