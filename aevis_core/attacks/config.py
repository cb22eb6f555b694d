"""Attack configuration, method table, ε parsing and validation (one-line :class:`AEVisError`).

All budgets are in [0, 1] pixel units: ``eps=4/255`` allows each RGB value to move by 4 levels
of an 8-bit image.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from aevis_core.errors import AEVisError

Tensor = torch.Tensor

#: Method name -> one-line description (paper reference). Keys are the accepted ``method`` values.
METHODS: dict[str, str] = {
    "mifgsm": "MI-FGSM, momentum iterative FGSM, L-inf (Dong et al., CVPR 2018)",
    "fgsm": "FGSM, one signed-gradient step of size eps, L-inf (Goodfellow et al., ICLR 2015)",
    "pgd": "PGD, projected gradient descent with random start, L-inf (Madry et al., ICLR 2018)",
    "cw": "C&W-L2, Adam in tanh space, fixed c, no binary search (Carlini & Wagner, S&P 2017)",
    "deepfool": "DeepFool, iterative linearised minimal L2 step, untargeted "
                "(Moosavi-Dezfooli et al., CVPR 2016)",
}

#: Methods bounded by ``||adv - x||_inf <= eps``; C&W and DeepFool are unbounded L2 attacks.
LINF_METHODS: frozenset[str] = frozenset({"mifgsm", "fgsm", "pgd"})
TARGETED_METHODS: frozenset[str] = frozenset({"mifgsm", "fgsm", "pgd", "cw"})

_ALIASES = {"mi-fgsm": "mifgsm", "mi_fgsm": "mifgsm", "pgd-linf": "pgd", "pgd_linf": "pgd",
            "c&w": "cw", "cw-l2": "cw", "cw_l2": "cw", "carlini-wagner": "cw"}


@dataclass
class AttackConfig:
    """How to craft adversarial examples; see :data:`METHODS`.

    ``eps`` (L-inf budget), ``steps``, ``alpha`` (step size, default ``eps / steps`` as in
    MI-FGSM) and ``decay`` (momentum μ) drive the L-inf attacks; FGSM always takes one step of
    size ``eps``. ``steps`` is the iteration count for PGD/MI-FGSM/C&W and the iteration cap for
    DeepFool. ``c``, ``kappa``, ``lr`` are C&W's trade-off constant, confidence margin and Adam
    learning rate; ``overshoot`` and ``candidates`` (classes examined per step) are DeepFool's.
    ``seed`` fixes PGD's random start (the only random part). ``batch_size`` never changes
    results, only memory and speed.
    """

    method: str = "mifgsm"
    eps: float = 4 / 255
    steps: int = 10
    alpha: float | None = None
    decay: float = 1.0
    targeted: bool = False
    seed: int = 0
    batch_size: int = 32
    random_start: bool = True
    c: float = 1.0
    kappa: float = 0.0
    lr: float = 0.01
    overshoot: float = 0.02
    candidates: int = 10
    check_8bit: bool = True

    @property
    def step_size(self) -> float:
        """Effective L-inf step: ``eps`` for FGSM, else ``alpha`` or ``eps / steps``."""
        if self.method == "fgsm":
            return self.eps
        return self.alpha if self.alpha is not None else self.eps / self.steps

    @property
    def norm(self) -> str:
        """``"linf"`` for the eps-bounded attacks, ``"l2"`` for C&W and DeepFool."""
        return "linf" if self.method in LINF_METHODS else "l2"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields (plus the effective step size)."""
        d = asdict(self)
        d["alpha"] = self.step_size
        return d


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AEVisError(f"attack {name} must be a finite number, got {value!r}")
    return float(value)


def validate_config(cfg: AttackConfig) -> AttackConfig:
    """Check ``cfg``; return a copy with the method name normalised (``"MI-FGSM"`` -> ``"mifgsm"``).

    Raises a one-line :class:`AEVisError` naming the bad field.
    """
    if not isinstance(cfg.method, str):
        raise AEVisError(f"attack method must be a string, got {type(cfg.method).__name__}")
    method = cfg.method.strip().lower()
    method = _ALIASES.get(method, method)
    if method not in METHODS:
        raise AEVisError(f"unknown attack method {cfg.method!r}: use one of {', '.join(METHODS)}")
    eps = _finite("eps", cfg.eps)
    if not 0.0 < eps <= 1.0:
        hint = f" (did you mean {eps:g}/255?)" if 1.0 < eps <= 255.0 else ""
        raise AEVisError(f"attack eps must be in (0, 1] pixel units, got {eps:g}{hint}")
    if isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise AEVisError(f"attack steps must be an integer >= 1, got {cfg.steps!r}")
    if cfg.alpha is not None and not 0.0 < _finite("alpha", cfg.alpha) <= 1.0:
        raise AEVisError(f"attack alpha (step size) must be in (0, 1], got {cfg.alpha!r}")
    if _finite("decay", cfg.decay) < 0.0:
        raise AEVisError(f"attack decay (momentum) must be >= 0, got {cfg.decay!r}")
    if isinstance(cfg.batch_size, bool) or not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise AEVisError(f"attack batch_size must be an integer >= 1, got {cfg.batch_size!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise AEVisError(f"attack seed must be an integer >= 0, got {cfg.seed!r}")
    if _finite("c", cfg.c) <= 0.0:
        raise AEVisError(f"C&W c must be > 0, got {cfg.c!r}")
    if _finite("kappa", cfg.kappa) < 0.0:
        raise AEVisError(f"C&W kappa must be >= 0, got {cfg.kappa!r}")
    if _finite("lr", cfg.lr) <= 0.0:
        raise AEVisError(f"C&W lr must be > 0, got {cfg.lr!r}")
    if _finite("overshoot", cfg.overshoot) < 0.0:
        raise AEVisError(f"DeepFool overshoot must be >= 0, got {cfg.overshoot!r}")
    if isinstance(cfg.candidates, bool) or not isinstance(cfg.candidates, int) or cfg.candidates < 2:
        raise AEVisError(f"DeepFool candidates must be an integer >= 2, got {cfg.candidates!r}")
    if cfg.targeted and method not in TARGETED_METHODS:
        raise AEVisError(f"{method} has no targeted mode; targeted attacks: "
                         f"{', '.join(sorted(TARGETED_METHODS))}")
    return replace(cfg, method=method)


def validate_inputs(x: Tensor, y: Tensor, cfg: AttackConfig, target: Tensor | None,
                    num_classes: int | None) -> None:
    """Check shapes/ranges of images (N, 3, H, W) in [0, 1], labels (N,) and targets (N,)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AEVisError(f"attack images must be a (N, 3, H, W) tensor, got {shape}")
    if not torch.is_floating_point(x):
        raise AEVisError(f"attack images must be float pixels in [0, 1], got dtype {x.dtype}")
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise AEVisError("attack images must be pixels in [0, 1] (got values outside that range)")
    n = x.shape[0]
    for name, t in (("labels", y), ("targets", target)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.shape != (n,) or torch.is_floating_point(t):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise AEVisError(f"attack {name} must be an integer tensor of shape ({n},), got {shape}")
        if n and (t.min() < 0 or (num_classes is not None and t.max() >= num_classes)):
            raise AEVisError(f"attack {name} must be class indices in [0, {num_classes}), "
                             f"got {int(t.min())}..{int(t.max())}")
    if cfg.targeted and target is None:
        raise AEVisError("targeted attack needs target classes (one per image)")
    if not cfg.targeted and target is not None:
        raise AEVisError("target classes given but the attack is untargeted (set targeted=True)")


_NUMBER = r"\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*"
_EPS_RE = re.compile(rf"^{_NUMBER}(?:/{_NUMBER})?$")


def parse_eps(s: str) -> float:
    """Parse an ε in [0, 1] pixel units: ``"4/255"``, ``"0.0157"``, ``"1e-2"``; AEVisError otherwise.

    A bare number above 1 (``"8"``) is refused with a hint to write ``8/255``.
    """
    if not isinstance(s, str):
        raise AEVisError(f"eps must be text such as '4/255' or '0.0157', got {type(s).__name__}")
    m = _EPS_RE.match(s)
    if m is None:
        raise AEVisError(f"cannot parse eps {s!r}: write a fraction such as '4/255' or a number such as '0.0157'")
    num = float(m.group(1) + (f"e{m.group(2)}" if m.group(2) else ""))
    if m.group(3) is not None:
        den = float(m.group(3) + (f"e{m.group(4)}" if m.group(4) else ""))
        if den == 0:
            raise AEVisError(f"cannot parse eps {s!r}: division by zero")
        value = num / den
    else:
        value = num
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        hint = f" (did you mean {s.strip()}/255?)" if m.group(3) is None and 1 < value <= 255 else ""
        raise AEVisError(f"eps {s.strip()!r} = {value:g} is outside (0, 1] pixel units{hint}")
    return value
