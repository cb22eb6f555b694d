"""Small hand-written networks with other feature layouts: ConvNeXt-, DenseNet- and ViT-style.

Each forward stores chosen intermediate tensors in ``self.rec`` when it is a dict, so tests can
differentiate one layer at a time in eager mode (no torch.fx) as the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class Recorder(nn.Module):
    """Base: ``rec`` is None (no recording) or a dict name -> tensor filled during forward."""

    def __init__(self) -> None:
        super().__init__()
        self.rec: dict[str, Tensor] | None = None

    def keep(self, name: str, t: Tensor) -> Tensor:
        if self.rec is not None:
            self.rec[name] = t
        return t


class ConvNeXtBlock(nn.Module):
    """dwconv 3x3 (N, C, H, W) -> permute -> LayerNorm -> Linear 4C -> GELU -> Linear C -> γ·x ->
    permute back, + input: the middle of the block is channels-last (N, H, W, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, dim))


class ToyConvNeXt(Recorder):
    """Stem conv 3->8 (stride 2) + ConvNeXt block + LayerNorm2d-style downsample + block + head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.block1 = ConvNeXtBlock(8)
        self.down_norm = nn.LayerNorm(8)
        self.down = nn.Conv2d(8, 12, 2, stride=2)
        self.block2 = ConvNeXtBlock(12)
        self.head_norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, classes)

    def _block(self, b: ConvNeXtBlock, x: Tensor, name: str) -> Tensor:
        y = self.keep(f"{name}.dwconv", b.dwconv(x))
        y = y.permute(0, 2, 3, 1)
        y = self.keep(f"{name}.norm", b.norm(y))
        y = self.keep(f"{name}.pwconv1", b.pwconv1(y))
        y = self.keep(f"{name}.act", b.act(y))
        y = self.keep(f"{name}.pwconv2", b.pwconv2(y))
        y = self.keep(f"{name}.mul", b.gamma * y)
        y = y.permute(0, 3, 1, 2)
        return self.keep(f"{name}.add", x + y)

    def forward(self, x: Tensor) -> Tensor:
        x = self.keep("stem", self.stem(x))
        x = self._block(self.block1, x, "block1")
        # LayerNorm2d as in torchvision: permute, layer_norm over C, permute back
        y = F.layer_norm(x.permute(0, 2, 3, 1), (8,), self.down_norm.weight, self.down_norm.bias)
        y = self.keep("layer_norm", y)
        x = self.keep("down", self.down(y.permute(0, 3, 1, 2)))
        x = self._block(self.block2, x, "block2")
        x = self.keep("mean", x.mean(dim=(2, 3)))
        return self.head(self.keep("head_norm", self.head_norm(x)))


class DenseLayer(nn.Module):
    """BN -> ReLU -> conv 3x3 (growth maps)."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1)


class ToyDenseNet(Recorder):
    """Stem conv 3->6, a dense block of three layers (growth 4, each input = cat of all previous), a
    transition (BN, ReLU, 1x1 conv, avg-pool) and a linear head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.layers = nn.ModuleList([DenseLayer(6 + 4 * i, 4) for i in range(3)])
        self.norm = nn.BatchNorm2d(18)
        self.trans = nn.Conv2d(18, 8, 1)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(8, classes)
        with torch.no_grad():  # non-trivial BN statistics (eval mode)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)

    def forward(self, x: Tensor) -> Tensor:
        feats = [self.keep("stem", self.stem(x))]
        for i, layer in enumerate(self.layers):
            h = torch.cat(feats, 1)
            if i:
                self.keep(f"cat{i}", h)
            feats.append(self.keep(f"layers.{i}.conv", layer.conv(layer.relu(layer.norm(h)))))
        h = self.keep("cat3", torch.cat(feats, 1))
        h = self.keep("trans", self.trans(F.relu(self.norm(h))))
        h = self.pool(h)
        return self.head(h.mean(dim=(2, 3)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) (batch first)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * dim, dim)


class HandAttention(nn.Module):
    """Attention written out (qkv Linear, heads by reshape/permute, softmax(q kᵀ) v, projection)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        y = att.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class ToyViT(Recorder):
    """Patch embedding (conv 4x4 / 4, D = 8) -> tokens (N, T, D) + class token + position
    embedding -> an nn.MultiheadAttention block -> a hand-written attention block -> LN -> class
    token -> head. Token × dim outputs: every embedding dimension is one feature map."""

    def __init__(self, classes: int = 4, dim: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 5, dim) * 0.1)
        self.block = ViTBlock(dim, 2)
        self.norm3 = nn.LayerNorm(dim)
        self.attn2 = HandAttention(dim, 2)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        t = self.keep("patch", self.patch(x)).flatten(2).transpose(1, 2)  # (N, 4, D)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.keep("add", t + self.pos)
        b = self.block
        h = self.keep("block.norm1", b.norm1(t))
        a = self.keep("block.attn", b.attn(h, h, h, need_weights=False)[0])
        t = self.keep("block.add", t + a)
        h = self.keep("block.fc1", b.fc1(b.norm2(t)))
        t = self.keep("block.add_1", t + b.fc2(b.act(h)))
        t = self.keep("attn2.proj", t + self.attn2(self.norm3(t)))
        t = self.keep("norm", self.norm(t))
        return self.head(self.keep("cls", t[:, 0]))
