"""CIFAR-10 ResNets (He et al. 2016, Sec. 4.2): ResNet-20 / ResNet-56 with option-A shortcuts.

Matches the parameter names of ``akamaster/pytorch_resnet_cifar10`` so its published weights
load with ``strict=True`` (after stripping the ``module.`` prefix).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad channels (option A)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C + 2 pad, H/2, W/2)."""
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, add shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_planes, H, W) -> (N, planes, H/stride, W/stride)."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 CIFAR images, 16/32/64 channels, n blocks per stage."""

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) normalised -> logits (N, num_classes)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 (n = 3): 9 residual blocks."""
    return CifarResNet(3, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 (n = 9): 27 residual blocks."""
    return CifarResNet(9, num_classes)
