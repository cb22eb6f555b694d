"""Penultimate-layer features: the input of the model's final classifier layer.

The adversarial scores (Feinman et al. 2017; Pang et al. 2018; Ma et al. 2018) all work on the
"final hidden layer" of the network, i.e. what the last ``nn.Linear`` (the classifier head) sees.
We capture it with a forward pre-hook on that module, which works for any architecture whose
logits come straight out of one ``nn.Linear`` (CIFAR ResNets: ``net.linear`` after the global
average pool; EfficientNet-Lite0: ``net._fc`` after ``_avg_pooling`` / flatten / dropout).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from aevis_core.errors import AEVisError

log = logging.getLogger(__name__)
Tensor = torch.Tensor

#: Pixel values may leave [0, 1] by this much (float round-off of stored images) before we refuse.
PIXEL_TOLERANCE = 1e-4


def _model_of(entry: Any) -> tuple[nn.Module, int | None]:
    """(module, number of classes or None) from a ModelEntry or a bare ``nn.Module``."""
    if isinstance(entry, nn.Module):
        return entry, None
    model = getattr(entry, "model", None)
    if not isinstance(model, nn.Module):
        raise AEVisError(f"expected a loaded model (ModelEntry or nn.Module), got {type(entry).__name__}")
    k = getattr(entry, "num_classes", None)
    return model, int(k) if isinstance(k, int) else None


def find_classifier(model: nn.Module, num_classes: int | None = None,
                    layer: str | None = None) -> tuple[str, nn.Module]:
    """The classifier head of ``model`` as ``(qualified name, module)``.

    ``layer`` names the module explicitly (e.g. ``"net._fc"``); otherwise the last
    ``nn.Linear`` in registration order whose ``out_features`` equals ``num_classes`` (any last
    ``nn.Linear`` when ``num_classes`` is None). Raises :class:`AEVisError` when there is none.
    """
    modules = dict(model.named_modules())
    if layer is not None:
        if layer not in modules:
            raise AEVisError(f"the model has no layer named {layer!r} for penultimate features")
        return layer, modules[layer]
    found = [(n, m) for n, m in modules.items() if isinstance(m, nn.Linear)
             and (num_classes is None or m.out_features == num_classes)]
    if not found:
        want = f" with {num_classes} outputs" if num_classes is not None else ""
        raise AEVisError(f"cannot find the classifier layer (an nn.Linear{want}) for penultimate "
                         "features; name it with layer='...'")
    return found[-1]


def classifier_head(entry: Any, layer: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights ``W`` (K, D) and bias ``b`` (K,) of the linear classifier head (float64), or None.

    None when the head is not an ``nn.Linear`` (e.g. a named non-linear layer).
    """
    model, k = _model_of(entry)
    _, head = find_classifier(model, k, layer)
    if not isinstance(head, nn.Linear):
        return None
    w = head.weight.detach().cpu().double().numpy()
    b = (head.bias.detach().cpu().double().numpy() if head.bias is not None
         else np.zeros(w.shape[0], dtype=np.float64))
    return w, b


def check_pixels(x: object, what: str = "images") -> Tensor:
    """Validate a (N, 3, H, W) float tensor of pixels in [0, 1]; return it (AEVisError otherwise)."""
    if not isinstance(x, torch.Tensor):
        raise AEVisError(f"{what} must be a torch tensor (N, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise AEVisError(f"{what} must have shape (N, 3, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise AEVisError(f"{what}: the set is empty (no images to score)")
    if not torch.is_floating_point(x):
        raise AEVisError(f"{what} must be float pixels in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise AEVisError(f"{what} contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -PIXEL_TOLERANCE or hi > 1 + PIXEL_TOLERANCE:
        raise AEVisError(f"{what} must be pixels in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]; "
                         "pass unnormalised images, the model normalises inside)")
    return x


@torch.no_grad()
def penultimate_features(entry: Any, x: Tensor, batch_size: int = 64,
                         layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features entering the classifier head and the logits, for pixel images ``x``.

    entry: a :class:`~aevis_core.models.ModelEntry` (or a pixel-space ``nn.Module``).
    x: (N, 3, H, W) float pixels in [0, 1], N >= 1.
    Returns ``(features (N, D) float32, logits (N, K) float32)`` as NumPy arrays; for ResNet-20
    ``features = flatten(avgpool(layer3(...)))`` (D = 64), for EfficientNet-Lite0 the pooled
    1280-d vector fed to ``_fc``. Captured with a forward pre-hook on the classifier found by
    :func:`find_classifier` (``layer`` overrides it); the model runs in eval mode, batch by batch.
    Raises :class:`AEVisError` on bad input or when the classifier is not called exactly once.
    """
    x = check_pixels(x)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AEVisError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    model, k = _model_of(entry)
    _, head = find_classifier(model, k, layer)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    captured: list[Tensor] = []

    def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach())

    feats: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    handle = head.register_forward_pre_hook(hook)
    try:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device, torch.float32)
            captured.clear()
            try:
                out = model(xb)
            except Exception as exc:  # noqa: BLE001 - model code may raise anything
                raise AEVisError(f"model forward failed on images of shape {tuple(xb.shape)}: "
                                 f"{type(exc).__name__}: {str(exc)[:160]}") from exc
            if len(captured) != 1:
                raise AEVisError(f"the classifier layer ran {len(captured)} times in one forward "
                                 "pass; name the penultimate layer with layer='...'")
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise AEVisError("the model must return logits of shape (N, K)")
            feats.append(captured[0].reshape(xb.shape[0], -1).float().cpu().numpy())
            logits.append(out.float().cpu().numpy())
    finally:
        handle.remove()
        model.train(was_training)
    return np.concatenate(feats), np.concatenate(logits)
