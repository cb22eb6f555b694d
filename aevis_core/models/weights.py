"""Safe weight loading: ``torch.load(..., weights_only=True)`` only, with one-line errors."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from aevis_core.errors import ModelLoadError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict (or ``{'state_dict': ...}`` checkpoint) from ``path`` without running code.

    Raises :class:`ModelLoadError` for a missing file, a file that is not a torch checkpoint, a
    pickle that would run code, or content that holds no tensors.
    """
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"refusing to load {path.name}: not a plain weights file (weights_only load failed: {first[:160]})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise ModelLoadError(f"cannot read weights file {path.name}: {type(exc).__name__}: {str(exc)[:160]}") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path.name} holds no state dict (expected a mapping of tensors)")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_state_dict_file(net: nn.Module, path: Path, strip_prefix: str = "") -> None:
    """Load weights from ``path`` into ``net`` strictly; explain a mismatch in one line."""
    sd = read_state_dict(path)
    if strip_prefix:
        sd = {k[len(strip_prefix):] if k.startswith(strip_prefix) else k: v for k, v in sd.items()}
    fit_state_dict(net, sd, path.name)


def fit_state_dict(net: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """``net.load_state_dict(sd, strict=True)`` with a short message naming what does not fit."""
    own = net.state_dict()
    sd = dict(sd)
    for k, v in own.items():  # old checkpoints predate BatchNorm's step counter
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} wrong shape (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise ModelLoadError(f"state dict from {source} does not fit {type(net).__name__}: " + "; ".join(parts))
    net.load_state_dict(sd, strict=True)
