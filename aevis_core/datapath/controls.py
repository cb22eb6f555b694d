"""Noise controls for the diverging point: random perturbations an adversarial one is compared with.

The diverging point (:mod:`aevis_core.datapath.diverge`) asks where the adversarial twin x̃ = x + δ
of a normal image x departs from x MORE than random perturbations of x do. What "random" means
decides the answer: a control with less energy than δ disturbs every layer less, so part of the
measured gap is only energy. The controls here, per image (δ of shape (C, H, W)):

* ``shuffled`` (default, energy-matched): each channel of δ with its values randomly permuted over
  the H·W positions: exactly δ's L∞, L2 and per-channel histogram of values, its structure gone;
* ``signs``: random signs at δ's rms, d = ±rms(δ) (same L2, L∞ = rms(δ) ≤ ‖δ‖∞);
* ``uniform``: d ~ U(−ε, ε) i.i.d. (per-pixel rms ε/√3, less than an iterative attack's);
* ``sign``: d = ±ε (rms ε, more than an iterative attack's).

Box constraint: a control value d_j that would leave [0, 1] at pixel x_j is used with the opposite
sign (x_j − d_j, always inside the box when |d_j| ≤ ε ≤ 1/2), so no value is clipped and the
control keeps exactly the energy it was drawn with: ``rms(control − x) = rms(δ)`` for ``shuffled``
and ``signs`` (to float32 round-off of the pixels). Draw r of image i is seeded by (seed, i, r)
only, so a draw does not depend on batch sizes or on which other images are analysed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from aevis_core.errors import AEVisError

Tensor = torch.Tensor
CONTROLS = ("shuffled", "signs", "uniform", "sign")
DEFAULT_CONTROL = "shuffled"


def check_control(kind: str, eps: float | None = None) -> None:
    """Raise :class:`AEVisError` for an unknown control or an ε the box rule cannot take (> 1/2)."""
    if kind not in CONTROLS:
        raise AEVisError(f"unknown control {kind!r}: use one of {', '.join(CONTROLS)}")
    if eps is not None and not (math.isfinite(eps) and 0 <= eps <= 0.5):
        raise AEVisError(f"control eps must be in [0, 1/2], got {eps}")


def control_delta(x: np.ndarray, delta: np.ndarray, kind: str, eps: float,
                  rng: np.random.Generator) -> np.ndarray:
    """One control perturbation d (C, H, W) float64 for image ``x`` with adversarial ``delta``.

    ``x``, ``delta``: (C, H, W) float64, ``x`` in [0, 1]. See the module docstring for the kinds
    and the box rule (sign flipped where ``x + d`` would leave [0, 1]).
    """
    c = delta.shape[0]
    if kind == "shuffled":
        d = rng.permuted(delta.reshape(c, -1), axis=1).reshape(delta.shape)
    elif kind == "signs":
        rms = math.sqrt(float(np.mean(delta * delta)))
        d = np.where(rng.random(delta.shape) < 0.5, -rms, rms)
    elif kind == "uniform":
        d = (2.0 * rng.random(delta.shape) - 1.0) * eps
    elif kind == "sign":
        d = np.where(rng.random(delta.shape) < 0.5, -eps, eps)
    else:
        raise AEVisError(f"unknown control {kind!r}: use one of {', '.join(CONTROLS)}")
    out = x + d
    flip = (out > 1.0) | (out < 0.0)
    return np.where(flip, -d, d)


def control_draws(x_normal: Tensor, x_adv: Tensor, image_index: int, draws: range, kind: str = DEFAULT_CONTROL,
                  eps: float | None = None, seed: int = 0) -> Tensor:
    """Control images of ONE image: (len(draws), C, H, W) float32 in [0, 1].

    ``x_normal``, ``x_adv``: (C, H, W) pixels in [0, 1]; ``image_index`` and each r in ``draws``
    seed draw r as ``(seed, image_index, r)``. ``eps`` (uniform/sign): the L∞ budget, default
    ``max |x_adv − x_normal|``.
    """
    xn = x_normal.detach().cpu().double().numpy()
    delta = x_adv.detach().cpu().double().numpy() - xn
    e = float(np.abs(delta).max()) if eps is None else float(eps)
    check_control(kind, e)
    if kind in ("shuffled", "signs") and float(np.abs(delta).max(initial=0.0)) > 0.5:
        raise AEVisError("the perturbation exceeds 1/2 in L∞: no box-respecting control can match it")
    out = np.empty((len(draws), *xn.shape), dtype=np.float32)
    for j, r in enumerate(draws):
        rng = np.random.default_rng([int(seed), int(image_index), int(r)])
        out[j] = xn + control_delta(xn, delta, kind, e, rng)
    return torch.from_numpy(out).clamp_(0.0, 1.0)  # clamp only removes float round-off


def rms(x_a: Tensor, x_b: Tensor) -> np.ndarray:
    """Per-image rms of ``x_b − x_a`` over C·H·W: (N,) float64 (pixel units in [0, 1])."""
    d = (x_b.detach().cpu().double() - x_a.detach().cpu().double()).reshape(x_a.shape[0], -1)
    return d.square().mean(1).sqrt().numpy()
