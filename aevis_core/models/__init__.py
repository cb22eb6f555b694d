"""Model zoo and user models, all wrapped to take RGB pixels in [0, 1] (N, 3, H, W).

``load_model("efficientnet-lite0")``, ``load_model("cifar-resnet20")``,
``load_model("path/to/file.py:factory")``, ``load_model("package.module:factory")`` or
``load_model("torchvision:resnet18")`` (local weights only).
"""

from __future__ import annotations

from pathlib import Path

import torch

from aevis_core.errors import ModelLoadError
from aevis_core.models.base import ModelEntry, ModelSpec, Normalize, PixelModel
from aevis_core.models.user import load_factory_model, load_torchvision_model
from aevis_core.models.zoo import DEFAULT_MODEL, ZOO

__all__ = [
    "DEFAULT_MODEL", "ZOO", "ModelEntry", "ModelSpec", "Normalize", "PixelModel",
    "list_models", "load_model", "default_device",
]


def default_device() -> torch.device:
    """CUDA when present (and not disabled by ``AEVIS_DEVICE=cpu``), else CPU."""
    import os

    want = os.environ.get("AEVIS_DEVICE", "auto").lower()
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda" if want == "auto" else want)


def list_models() -> list[tuple[str, str, str]]:
    """Built-in models as (name, dataset, description)."""
    return [(m.name, m.dataset, m.description) for m in ZOO.values()]


def load_model(spec: str = DEFAULT_MODEL, model_dir: Path | None = None,
               device: torch.device | str | None = None) -> ModelEntry:
    """Load a model by zoo name or factory spec; eval mode, gradients off for parameters.

    ``model_dir`` (when set) confines ``file.py:factory`` specs and their weights to that folder
    and forbids importing arbitrary packages. Raises :class:`ModelLoadError` with one line.
    """
    spec = spec.strip()
    if spec in ZOO:
        from aevis_core.models.zoo import load_zoo_model

        entry = load_zoo_model(spec)
    elif spec.startswith("torchvision:"):
        entry = load_torchvision_model(spec.split(":", 1)[1])
    elif ":" in spec:
        entry = load_factory_model(spec, model_dir)
    else:
        names = ", ".join(ZOO)
        raise ModelLoadError(f"unknown model {spec!r}: use one of {names}, file.py:factory or package.module:factory")
    if device is not None:
        entry.model.to(device)
    return entry
