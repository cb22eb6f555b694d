"""Run an attack over a set in batches, and black-box transfer (craft on model A, test on B)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from aevis_core.attacks.config import AttackConfig, validate_config, validate_inputs
from aevis_core.attacks.l2 import cw_l2, deepfool
from aevis_core.attacks.linf import linf_attack
from aevis_core.errors import AEVisError
from aevis_core.models.base import ModelEntry

Tensor = torch.Tensor
Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextmanager
def _attack_mode(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode (BatchNorm running stats, no dropout) and deterministic cuDNN; restored after."""
    modes = [(m, m.training) for m in model.modules()]  # per module: mixed modes survive
    cudnn = torch.backends.cudnn
    flags = (cudnn.deterministic, cudnn.benchmark)
    model.eval()
    if device.type == "cuda":
        cudnn.deterministic, cudnn.benchmark = True, False
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        cudnn.deterministic, cudnn.benchmark = flags


def _attack_batch(model: nn.Module, x: Tensor, y: Tensor, cfg: AttackConfig,
                  target: Tensor | None, offset: int) -> Tensor:
    m = cfg.method
    if m in ("mifgsm", "pgd", "fgsm"):
        return linf_attack(
            model, x, y, eps=cfg.eps, alpha=cfg.step_size, steps=1 if m == "fgsm" else cfg.steps,
            decay=cfg.decay if m == "mifgsm" else None, target=target,
            random_start=m == "pgd" and cfg.random_start, seed=cfg.seed, offset=offset,
        )
    if m == "cw":
        return cw_l2(model, x, y, c=cfg.c, kappa=cfg.kappa, lr=cfg.lr, steps=cfg.steps,
                     target=target, check_8bit=cfg.check_8bit)
    if m == "deepfool":
        return deepfool(model, x, steps=cfg.steps, overshoot=cfg.overshoot,
                        candidates=cfg.candidates, check_8bit=cfg.check_8bit)
    raise AEVisError(f"unknown attack method {m!r}")  # unreachable after validate_config


def run_attack(model: nn.Module, x: Tensor, y: Tensor, cfg: AttackConfig,
               target: Tensor | None = None, progress: Progress | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """Craft adversarial examples for ``x`` against ``model``; see :data:`~.config.METHODS`.

    model: pixel-space classifier ((N, 3, H, W) in [0, 1] -> logits (N, K)), e.g.
    ``load_model(...).model``; any model works, so a black-box transfer attack is simply
    ``run_attack(model_a, ...)`` evaluated on model B (see :func:`transfer_attack`).
    x: (N, 3, H, W) in [0, 1]; y: (N,) true classes; target: (N,) classes to reach, required
    iff ``cfg.targeted``. ``progress(done, total)`` is called after each batch.
    ``device``: where to compute, defaults to the model's device (the model must live there).

    Deterministic: the only random part (PGD's start) is drawn per image from ``cfg.seed`` and
    the image index, without touching the global RNG; every image is attacked independently
    (summed losses, eval mode), so results do not depend on ``cfg.batch_size`` (bit for bit on
    the CPU in our tests; a model's kernels may round differently per batch size elsewhere).
    Returns (N, 3, H, W) float32 on the CPU, in [0, 1]; for L-inf methods
    ``||adv - x||_inf <= eps``. Raises a one-line AEVisError on a bad config or bad inputs.
    """
    cfg = validate_config(cfg)
    validate_inputs(x, y, cfg, target, None)
    model_dev = _model_device(model)
    dev = torch.device(device) if device is not None else model_dev
    if dev != model_dev and not (dev.type == model_dev.type and dev.index is None):
        raise AEVisError(f"model is on {model_dev} but the attack was asked to run on {dev}; "
                         f"load the model with device={str(dev)!r}")
    n = x.shape[0]
    out = torch.empty(x.shape, dtype=torch.float32)
    if n == 0:
        return out
    t0 = time.perf_counter()
    with _attack_mode(model, dev):
        with torch.no_grad():
            k = model(x[:1].to(dev, torch.float32)).shape[1]
        validate_inputs(x, y, cfg, target, k)
        for start in range(0, n, cfg.batch_size):
            end = min(start + cfg.batch_size, n)
            xb = x[start:end].to(dev, torch.float32)
            yb = y[start:end].to(dev, torch.long)
            tb = target[start:end].to(dev, torch.long) if target is not None else None
            out[start:end] = _attack_batch(model, xb, yb, cfg, tb, start).float().cpu()
            if progress is not None:
                progress(end, n)
    log.info("%s on %d images (eps=%.5f, steps=%d, targeted=%s) took %.2f s", cfg.method, n,
             cfg.eps, cfg.steps, cfg.targeted, time.perf_counter() - t0)
    return out


@dataclass
class TransferResult:
    """Predictions of a source (white-box) and a target (black-box) model on clean and adversarial
    images. Tensors are (N,) class indices; ``adv`` is (N, 3, H, W)."""

    adv: Tensor
    labels: Tensor
    source_clean: Tensor
    source_adv: Tensor
    target_clean: Tensor
    target_adv: Tensor
    seconds: float = 0.0

    @staticmethod
    def _acc(pred: Tensor, labels: Tensor) -> float:
        return float((pred == labels).float().mean()) if labels.numel() else float("nan")

    def accuracies(self) -> dict[str, float]:
        """Accuracy in [0, 1]: ``source_clean``, ``source_adv``, ``target_clean``, ``target_adv``."""
        return {name: self._acc(getattr(self, name), self.labels)
                for name in ("source_clean", "source_adv", "target_clean", "target_adv")}

    def transfer_rate(self) -> float:
        """Share of images that fool the source model *and* fool the target model (y known)."""
        fooled = (self.source_adv != self.labels) & (self.source_clean == self.labels)
        if not bool(fooled.any()):
            return float("nan")
        return float(((self.target_adv != self.labels) & fooled).sum() / fooled.sum())


def compare_predictions(source: ModelEntry, target: ModelEntry, clean: Tensor, adv: Tensor,
                        labels: Tensor, batch_size: int = 64) -> TransferResult:
    """Predict ``clean`` and ``adv`` ((N, 3, H, W) in [0, 1]) with both models."""
    s_clean = source.predict(clean, batch_size)[1]
    s_adv = source.predict(adv, batch_size)[1]
    t_clean = target.predict(clean, batch_size)[1]
    t_adv = target.predict(adv, batch_size)[1]
    return TransferResult(adv, labels.cpu(), s_clean, s_adv, t_clean, t_adv)


def transfer_attack(source_entry: ModelEntry, target_entry: ModelEntry, x: Tensor, y: Tensor,
                    cfg: AttackConfig, target: Tensor | None = None,
                    progress: Progress | None = None,
                    device: torch.device | str | None = None) -> TransferResult:
    """Black-box transfer: craft on ``source_entry`` (white-box), evaluate on both models.

    Both models must take the same input size and share the label space (same class count).
    x: (N, 3, H, W) in [0, 1]; y: (N,) true classes; target: (N,) for targeted configs.
    """
    if tuple(source_entry.input_size) != tuple(target_entry.input_size):
        raise AEVisError(f"transfer needs the same input size: {source_entry.name} takes "
                         f"{source_entry.input_size}, {target_entry.name} takes {target_entry.input_size}")
    if source_entry.num_classes != target_entry.num_classes:
        raise AEVisError(f"transfer needs the same classes: {source_entry.name} has "
                         f"{source_entry.num_classes}, {target_entry.name} has {target_entry.num_classes}")
    t0 = time.perf_counter()
    adv = run_attack(source_entry.model, x, y, cfg, target=target, progress=progress, device=device)
    seconds = time.perf_counter() - t0
    result = compare_predictions(source_entry, target_entry, x, adv, y, batch_size=cfg.batch_size)
    result.seconds = seconds
    acc = result.accuracies()
    log.info("transfer %s -> %s: clean %.3f/%.3f, adversarial %.3f/%.3f", source_entry.name,
             target_entry.name, acc["source_clean"], acc["target_clean"], acc["source_adv"],
             acc["target_adv"])
    return result
