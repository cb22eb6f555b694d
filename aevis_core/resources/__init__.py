"""Files shipped with the package: class-name lists."""

from __future__ import annotations

from functools import cache
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names; index i = class i (0 = tench)."""
    lines = (RESOURCES / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    names = tuple(line.strip() for line in lines if line.strip())
    assert len(names) == 1000, len(names)
    return names
