"""Refine a layer's datapath mask on the *true* objective (Eq. 4), warm-started from the QP (Eq. 5).

For one layer with ``n`` feature maps, images ``k = 1..N`` with target classes ``t_k`` and the
model output ``p_k(·)`` (softmax probability of ``t_k``, or its logit with ``score="logit"``) as
a function of the layer's maps, Eq. 4 is

.. math::

    F(z) \\;=\\; \\sum_{k=1}^{N} \\bigl(p_k(a_k \\odot z) - p_k(a_k)\\bigr)^2 \\;+\\; \\lambda \\lVert z \\rVert_2^2,
    \\qquad z \\in [0, 1]^n,

where ``a_k ⊙ z`` scales map ``j`` of image ``k`` by ``z_j`` (broadcast over space; with
``fill`` given, removed maps are replaced by ``fill_j`` instead: ``z_j a_kj + (1 - z_j) fill_j``)
and ``λ = 0.1 / n²`` by default. This is exactly the problem whose first-order Taylor expansion
around ``z = 1`` (``p_k(a ⊙ z) ≈ p_k(a) + q_k · (z - 1)``, ``q_kj = Σ_space a_kj ∂p_k/∂a_kj``) is
the box QP of :mod:`aevis_core.datapath.qp` (Eq. 5, ``Σ_k (s_k - q_k·z)² + λ‖z‖²``).
What is implemented: the relaxed (``z ∈ [0, 1]^n``), ℓ2-ridge form whose linearisation is the
QP of :mod:`~aevis_core.datapath.qp`, so Eq. 4 here and Eq. 5 there differ only by the Taylor
step and share λ. (The paper motivates Eq. 4 as a relaxed subset selection; the penalty form
used throughout this package is ``λ‖z‖²``. ``F(1) = λ n`` exactly, so with λ = 0.1/n² there is
almost no pressure towards sparsity: the true optimum keeps nearly every map, see
``bench/faithfulness.py``.)

``F`` is evaluated with real forward passes through :class:`~aevis_core.graph.mask.MaskedModel`
(the prefix up to the layer is computed once and cached; every evaluation runs the suffix
only) and its gradient ``∇F`` (n,) with one backward pass per batch. Two solvers:

* ``"pgd"``: projected gradient ``z ← P(z - t ∇F)`` with Barzilai-Borwein step lengths and
  Armijo backtracking along the projection arc (``F(z⁺) ≤ F(z) + σ ∇F·(z⁺ - z)``, σ = 1e-4,
  halving ``t`` up to 12 times); every accepted step strictly lowers the measured ``F``.
* ``"lbfgsb"``: :func:`scipy.optimize.minimize` (L-BFGS-B, box bounds) on ``F / F(z₀)`` with
  exact gradients from torch; the best evaluated point is returned.

Both start from ``z₀`` clipped to the box and return a point no worse than ``z₀`` (the result
stays in ``[0, 1]^n``); both are deterministic for a fixed thread count.
``F`` is non-convex, so this is a local improvement of the QP solution, not a global optimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.optimize import minimize

from aevis_core.datapath.qp import default_lambda
from aevis_core.errors import AEVisError
from aevis_core.graph.mask import MaskedModel, PrefixBatch
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry

Tensor = torch.Tensor
REFINE_METHODS = ("pgd", "lbfgsb")

__all__ = ["Eq4Objective", "REFINE_METHODS", "RefineResult", "refine_layer", "true_objective"]


@dataclass
class RefineResult:
    """Result of :func:`refine_layer`.

    Attributes:
        z: (n,) float64 refined mask in ``[0, 1]^n``.
        objective_history: true ``F`` at ``z₀`` and after every accepted step (non-increasing
            for ``pgd``; for ``lbfgsb`` the value at each L-BFGS-B iterate).
        true_objective_before: ``F(z₀)`` (``z₀`` clipped to the box).
        true_objective_after: ``F(z)`` (``≤ true_objective_before``).
        lam: the ridge weight λ used.
        method: ``"pgd"`` or ``"lbfgsb"``.
        n_evals: number of objective evaluations (suffix passes over all images).
        converged: whether the solver stopped on its tolerance rather than the step limit.
        info: ``n``, ``n_images``, ``score`` and ``natural_k`` = ``|{z > 0.5}|`` of the result.
    """

    z: np.ndarray
    objective_history: list[float]
    true_objective_before: float
    true_objective_after: float
    lam: float
    method: str
    n_evals: int = 0
    converged: bool = False
    info: dict[str, float | int | str] = field(default_factory=dict)


class Eq4Objective:
    """``F(z)`` of Eq. 4 and its gradient on cached prefix batches (see module doc).

    ``masked``: the layer's :class:`MaskedModel`; ``batches``: its :meth:`MaskedModel.cache` of
    the N images; ``targets``: (N,) class per image; ``score``: ``"prob"`` or ``"logit"``;
    ``fill``: (n,) replacement of removed maps or ``None`` (zero). The reference outputs
    ``p_k(a_k)`` are computed once with ``z = 1`` through the same suffix.
    """

    def __init__(self, masked: MaskedModel, batches: Sequence[PrefixBatch], targets: Tensor,
                 lam: float | None = None, score: str = "prob", fill: Tensor | None = None) -> None:
        if score not in ("prob", "logit"):
            raise AEVisError(f"unknown score {score!r}: use prob or logit")
        self.masked = masked
        self.batches = list(batches)
        self.n = masked.n
        self.lam = float(default_lambda(self.n) if lam is None else lam)
        self.score = score
        self.fill = fill
        n_img = sum(b.size for b in self.batches)
        if targets.shape != (n_img,):
            raise AEVisError(f"need one target per image ({n_img}), got shape {tuple(targets.shape)}")
        self.targets = targets.long().cpu()
        self.n_evals = 0
        with torch.no_grad():
            ones = torch.ones(self.n)
            self.p0 = torch.cat([self._p(b, ones, i).double().cpu() for i, b in self._iter()])

    def _iter(self) -> list[tuple[slice, PrefixBatch]]:
        out, start = [], 0
        for b in self.batches:
            out.append((slice(start, start + b.size), b))
            start += b.size
        return out

    def _p(self, b: PrefixBatch, mask: Tensor, sl: slice) -> Tensor:
        """(B,) differentiated output of one batch."""
        logits = self.masked.suffix(b, mask, self.fill).float()
        out = torch.softmax(logits, dim=1) if self.score == "prob" else logits
        t = self.targets[sl].to(out.device).view(-1, 1)
        return out.gather(1, t).squeeze(1)

    def value(self, z: ArrayLike) -> float:
        """``F(z)`` (no gradient)."""
        zz = np.asarray(z, dtype=np.float64)
        mask = torch.from_numpy(zz).float()
        total = 0.0
        with torch.no_grad():
            for sl, b in self._iter():
                d = self._p(b, mask, sl).double().cpu() - self.p0[sl]
                total += float((d * d).sum())
        self.n_evals += 1
        return total + self.lam * float(zz @ zz)

    def value_and_grad(self, z: ArrayLike) -> tuple[float, np.ndarray]:
        """``(F(z), ∇F(z))``: one forward + one backward per batch; gradient (n,) float64."""
        zz = np.asarray(z, dtype=np.float64)
        total = 0.0
        grad = np.zeros(self.n)
        for sl, b in self._iter():
            mask = torch.from_numpy(zz).float().requires_grad_(True)
            with torch.enable_grad():
                pk = self._p(b, mask, sl).double()
                d = pk - self.p0[sl].to(pk.device)
                loss = (d * d).sum()
                (g,) = torch.autograd.grad(loss, [mask])
            total += float(loss.detach())
            grad += g.double().cpu().numpy()
        self.n_evals += 1
        return total + self.lam * float(zz @ zz), grad + 2.0 * self.lam * zz


def _setup(entry: ModelEntry, graph: LayerGraph, x: Tensor, layer: str, targets: ArrayLike | Tensor | None,
           lam: float | None, score: str, fill: ArrayLike | Tensor | None, batch_size: int) -> Eq4Objective:
    masked = MaskedModel(entry.model, graph, layer)
    if x.dim() != 4 or x.shape[0] == 0:
        raise AEVisError(f"need a non-empty (N, 3, H, W) image batch, got {tuple(x.shape)}")
    if targets is None:
        t = entry.predict(x)[1]
    else:
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    f = None if fill is None else torch.as_tensor(np.asarray(fill), dtype=torch.float32)
    return Eq4Objective(masked, masked.cache(x, batch_size), t, lam, score, f)


def true_objective(entry: ModelEntry, graph: LayerGraph, x: Tensor, layer: str, z: ArrayLike,
                   targets: ArrayLike | Tensor | None = None, lam: float | None = None, score: str = "prob",
                   fill: ArrayLike | Tensor | None = None, batch_size: int = 64) -> float:
    """``F(z)`` of Eq. 4 for images ``x`` (N, 3, H, W) at ``layer`` (targets default: predictions)."""
    obj = _setup(entry, graph, x, layer, targets, lam, score, fill, batch_size)
    return obj.value(np.clip(np.asarray(z, dtype=np.float64), 0.0, 1.0))


def _pgd(obj: Eq4Objective, z0: np.ndarray, steps: int, tol: float) -> tuple[np.ndarray, list[float], bool]:
    """Projected gradient with BB steps and Armijo backtracking; returns (z, history, converged)."""
    z = z0.copy()
    f, g = obj.value_and_grad(z)
    hist = [f]
    gmax = float(np.max(np.abs(g)))
    if gmax == 0.0:
        return z, hist, True
    t = 0.5 / gmax  # first step moves the steepest coordinate by at most 0.5
    sigma = 1e-4
    for _ in range(steps):
        pg = np.clip(z - g, 0.0, 1.0) - z  # projected-gradient residual (scale of g)
        if float(np.max(np.abs(pg))) <= tol * max(1.0, abs(f)):
            return z, hist, True
        accepted = False
        for _ in range(12):
            zn = np.clip(z - t * g, 0.0, 1.0)
            step = zn - z
            if not np.any(step):
                break
            fn = obj.value(zn)
            if fn <= f + sigma * float(g @ step):
                accepted = True
                break
            t *= 0.5
        if not accepted:
            return z, hist, True  # no representable decrease along the projection arc
        fn, gn = obj.value_and_grad(zn)
        s, y = zn - z, gn - g
        sy = float(s @ y)
        t = float(s @ s) / sy if sy > 0 else 2.0 * t  # Barzilai-Borwein (BB1) step
        t = min(max(t, 1e-12 / gmax), 1e6 / gmax)
        z, f, g = zn, fn, gn
        hist.append(f)
    return z, hist, False


def _lbfgsb(obj: Eq4Objective, z0: np.ndarray, steps: int, tol: float) -> tuple[np.ndarray, list[float], bool]:
    """scipy L-BFGS-B on F / F(z0); returns the best evaluated point."""
    f0, _ = obj.value_and_grad(z0)
    scale = f0 if f0 > 0 else 1.0
    best: dict[str, object] = {"f": f0, "z": z0.copy()}
    last: dict[bytes, float] = {}
    hist = [f0]

    def fun(zv: np.ndarray) -> tuple[float, np.ndarray]:
        zc = np.clip(zv, 0.0, 1.0)
        f, g = obj.value_and_grad(zc)
        last[zc.tobytes()] = f
        if f < float(best["f"]):  # type: ignore[arg-type]
            best["f"], best["z"] = f, zc.copy()
        return f / scale, g / scale

    def callback(zk: np.ndarray) -> None:
        fk = last.get(np.clip(zk, 0.0, 1.0).tobytes())
        if fk is not None:
            hist.append(fk)

    res = minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * z0.shape[0],
                   callback=callback,
                   options={"maxiter": steps, "maxfun": 3 * steps + 10, "ftol": 1e-12, "gtol": tol})
    zb = np.asarray(best["z"], dtype=np.float64)
    return zb, hist, bool(res.success)


def refine_layer(entry: ModelEntry, graph: LayerGraph, x: Tensor, layer: str, z0: ArrayLike,
                 targets: ArrayLike | Tensor | None = None, lam: float | None = None, steps: int = 30,
                 method: str = "pgd", score: str = "prob", fill: ArrayLike | Tensor | None = None,
                 batch_size: int = 64, tol: float = 1e-8) -> RefineResult:
    """Minimise Eq. 4 on ``layer`` with true forward/backward passes, warm-started from ``z0``.

    Args:
        entry: the model (pixel-space input).
        graph: its torch.fx layer graph (``graph.traced``).
        x: (N, 3, H, W) images in [0, 1].
        layer: layer id with ``n`` feature maps.
        z0: (n,) warm start, normally the QP solution ``Datapath.layers[layer].z``; clipped to [0, 1].
        targets: (N,) class per image (``Datapath.targets``); ``None`` -> the model's predictions.
        lam: ridge weight λ (``None`` -> ``0.1 / n²``, as in the QP).
        steps: maximum number of solver iterations.
        method: ``"pgd"`` (projected gradient, BB + Armijo) or ``"lbfgsb"`` (scipy).
        score: ``"prob"`` (the paper's p) or ``"logit"``.
        fill: (n,) value of removed maps (``None``: zero, the paper's ``a ⊙ z``).
        batch_size: images per suffix pass (memory of the backward pass).
        tol: stopping tolerance on the projected gradient (relative to ``max(1, F)``).

    Returns:
        :class:`RefineResult` with ``true_objective_after ≤ true_objective_before`` and ``z`` in the box.
    """
    if method not in REFINE_METHODS:
        raise AEVisError(f"unknown refine method {method!r}: use one of {', '.join(REFINE_METHODS)}")
    if steps < 0:
        raise AEVisError("steps must be >= 0")
    obj = _setup(entry, graph, x, layer, targets, lam, score, fill, batch_size)
    zs = np.clip(np.asarray(z0, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if zs.shape[0] != obj.n:
        raise AEVisError(f"z0 has {zs.shape[0]} entries, layer {layer!r} has {obj.n} maps")
    if not np.all(np.isfinite(zs)):
        raise AEVisError("z0 must be finite")
    before = obj.value(zs)
    if method == "pgd":
        z, hist, conv = _pgd(obj, zs, steps, tol)
    else:
        z, hist, conv = _lbfgsb(obj, zs, steps, tol)
    after = obj.value(z)
    if not after <= before:  # guard (rounding): never hand back something worse than z0
        z, after = zs, before
    z = np.clip(z, 0.0, 1.0)
    return RefineResult(z=z, objective_history=hist, true_objective_before=before, true_objective_after=after,
                        lam=obj.lam, method=method, n_evals=obj.n_evals, converged=conv,
                        info={"n": obj.n, "n_images": int(obj.targets.shape[0]), "score": score,
                              "natural_k": int((z > 0.5).sum())})
