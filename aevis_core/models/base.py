"""Model wrappers: every analysed model takes RGB pixels in [0, 1] and normalises inside.

Attacks, scores and datapath views all work in pixel space, so the normalisation (mean/std or
any callable) lives in :class:`PixelModel` and the analysed graph starts at raw pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

Tensor = torch.Tensor


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on (N, C, H, W) tensors; constants kept as buffers."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) pixels in [0, 1] -> normalised (N, C, H, W)."""
        return (x - self.mean) / self.std


class CallableNormalize(nn.Module):
    """Wraps a user callable ``f(x) -> x'`` (pixels in [0, 1] to network input) as a module."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) pixels in [0, 1] -> whatever the network expects."""
        return self.fn(x)


class PixelModel(nn.Module):
    """``net(normalize(x))``: the analysed model, input (N, 3, H, W) in [0, 1], output logits (N, K)."""

    def __init__(self, net: nn.Module, normalize: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> logits (N, K)."""
        return self.net(self.normalize(x))


@dataclass
class ModelSpec:
    """What a user model factory returns: the module plus how to feed it.

    Give either ``mean``/``std`` (applied to [0, 1] pixels) or ``normalize`` (a callable on the
    (N, 3, H, W) pixel tensor). ``resize`` is the short side before the centre crop to
    ``input_size``; ``None`` resizes straight to ``input_size``. ``weights`` (optional) is a
    state-dict file, relative to the factory's file, loaded with ``weights_only=True``.
    """

    module: nn.Module
    input_size: tuple[int, int]
    class_names: list[str]
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    normalize: Callable[[Tensor], Tensor] | None = None
    resize: int | None = None
    resample: str = "bilinear"
    weights: str | None = None
    strip_prefix: str = ""


_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass
class ModelEntry:
    """A loaded, ready-to-analyse model (eval mode, pixel-space input) and its metadata."""

    name: str
    model: PixelModel
    class_names: list[str]
    input_size: tuple[int, int]
    resize: int | None = None
    resample: str = "bilinear"
    dataset: str = "custom"
    weights_hash: str = ""
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of output classes K."""
        return len(self.class_names)

    @property
    def model_id(self) -> str:
        """Stable identity for caches: name plus a hash of the weights."""
        return f"{self.name}@{self.weights_hash[:16]}"

    def preprocess(self, image: Image.Image) -> Tensor:
        """PIL RGB image -> (3, H, W) float tensor in [0, 1] at the model's input size.

        Resizes the short side to ``resize`` and centre-crops ``input_size`` (ImageNet style),
        or resizes straight to ``input_size`` when ``resize`` is None (and the size differs).
        """
        img = image.convert("RGB")
        h, w = self.input_size
        method = _RESAMPLE.get(self.resample, Image.Resampling.BILINEAR)
        if self.resize is not None:
            scale = self.resize / min(img.size)
            new = (max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale)))
            if new != img.size:
                img = img.resize(new, method)
            left = (img.size[0] - w) // 2
            top = (img.size[1] - h) // 2
            img = img.crop((left, top, left + w, top + h))
        elif img.size != (w, h):
            img = img.resize((w, h), method)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def preprocess_many(self, images: Sequence[Image.Image]) -> Tensor:
        """List of PIL images -> (N, 3, H, W) in [0, 1]."""
        if not images:
            h, w = self.input_size
            return torch.zeros((0, 3, h, w))
        return torch.stack([self.preprocess(im) for im in images])

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 64) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) pixels -> (probabilities (N, K), predicted class (N,)) on the model's device."""
        device = next(self.model.parameters()).device
        probs = []
        for i in range(0, x.shape[0], batch_size):
            logits = self.model(x[i : i + batch_size].to(device))
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
        p = torch.cat(probs) if probs else torch.zeros((0, self.num_classes))
        return p, p.argmax(dim=1)


def state_dict_hash(module: nn.Module) -> str:
    """SHA-256 over the module's state dict (names, shapes and bytes), hex string."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def wrap(spec: ModelSpec, name: str, dataset: str = "custom", description: str = "") -> ModelEntry:
    """Turn a :class:`ModelSpec` into an eval-mode :class:`ModelEntry` with pixel-space input."""
    if spec.normalize is not None:
        norm: nn.Module = CallableNormalize(spec.normalize)
    elif spec.mean is not None and spec.std is not None:
        norm = Normalize(spec.mean, spec.std)
    else:
        norm = nn.Identity()
    model = PixelModel(spec.module, norm).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return ModelEntry(
        name=name,
        model=model,
        class_names=list(spec.class_names),
        input_size=(int(spec.input_size[0]), int(spec.input_size[1])),
        resize=spec.resize,
        resample=spec.resample,
        dataset=dataset,
        weights_hash=state_dict_hash(spec.module),
        description=description,
    )
