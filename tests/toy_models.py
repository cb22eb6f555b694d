"""Small hand-set models for exact-value tests."""

from __future__ import annotations

import torch
from torch import nn


class ToyResNet(nn.Module):
    """conv(1->2, 1x1, w=[1,-1], b=[0, 0.5]) -> ReLU -> conv(2->2, 1x1) + skip -> ReLU -> pool -> fc.

    Every weight is set by hand so intermediate values can be computed on paper.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv1.bias.copy_(torch.tensor([0.0, 0.5]))
            self.conv2.weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu1(self.conv1(x))
        b = self.conv2(a) + a
        c = self.pool(self.relu2(b))
        return self.fc(torch.flatten(c, 1))


class MLP(nn.Module):
    """4 -> 3 -> 2 MLP with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        if y.sum() > 0:
            y = self.act(y * 2)  # the ReLU module runs twice: two layers
        return self.fc(y.mean(dim=(2, 3)))


class InplaceNet(nn.Module):
    """ReLU(inplace=True) after a captured conv: capture must keep the pre-ReLU values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        return self.fc(y.mean(dim=(2, 3)))
