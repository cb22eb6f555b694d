"""Neuron level (Sec. 5.3 of Liu et al. 2018): what one feature map of one layer responds to.

A "neuron" here is one feature map (``channel``) of one layer of the layer graph. The views:

* :func:`activation_maps` — the map itself, (N, H', W') per image (vector layers: (N, 1, 1));
* :func:`top_activating` — the images of a set that activate it most (mean or max);
* :func:`top_patches` — for those images, the crop of the image around the strongest
  location, about the size of the map cell's receptive field (see :func:`default_patch_size`);
* :func:`discrepancy_map` — occlusion sensitivity (Zeiler & Fergus 2014), the paper's "learned
  feature" view: which pixels of *one* image the feature map's activation depends on; and
  :func:`dim_unimportant`, which darkens everything but its most supporting pixels for display.

All forwards stop at the layer (:class:`aevis_core.graph.truncate.TruncatedModel`), run without
gradients on the model's device, and return CPU numpy arrays. Images are RGB pixels in [0, 1]
(the models normalise inside).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple, overload

import numpy as np
import torch
import torch.nn.functional as F

from aevis_core.errors import AEVisError
from aevis_core.graph.truncate import TruncatedModel, get_truncated
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry

Tensor = torch.Tensor
ImageLike = Tensor | np.ndarray
Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]
FillMode = Literal["mean", "zero", "blur"]
Reduce = Literal["sum", "max"]

__all__ = [
    "TopPatch", "activation_maps", "default_patch_size", "dim_unimportant", "discrepancy_map",
    "occluder_positions", "top_activating", "top_patches",
]


# -- helpers ---------------------------------------------------------------------------------

def _check_channel(graph: LayerGraph, layer: str, channel: int) -> None:
    if layer not in graph.nodes:
        raise AEVisError(f"unknown layer {layer!r}")
    n = graph.nodes[layer].channels
    if not 0 <= int(channel) < n:
        raise AEVisError(f"channel {channel} out of range for layer {layer!r} ({n} feature maps)")


def _as_batch(x: ImageLike) -> Tensor:
    """(N, 3, H, W) float tensor from a tensor or array (a single (3, H, W) image gets N = 1)."""
    t = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise AEVisError(f"expected images of shape (N, 3, H, W), got {tuple(t.shape)}")
    return t.float()


def _channel_map(a: Tensor, channel: int) -> Tensor:
    """(B, C, *spatial) layer output -> (B, h, w) map of one channel ((B, 1, 1) for vectors)."""
    m = a[:, channel]
    if m.dim() == 1:
        return m.reshape(-1, 1, 1)
    if m.dim() == 2:  # (B, L) sequence-like output: one row
        return m.unsqueeze(1)
    return m.reshape(m.shape[0], m.shape[1], -1) if m.dim() > 3 else m


def _maps(tm: TruncatedModel, channel: int, x: Tensor, batch_size: int) -> np.ndarray:
    if batch_size < 1:
        raise AEVisError("batch_size must be positive")
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out.append(_channel_map(tm(x[i:i + batch_size]), channel).float().cpu())
    if not out:
        h, w = (tm.shape[1:] + (1, 1))[:2] if len(tm.shape) > 1 else (1, 1)
        return np.zeros((0, h, w), np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def _to_uint8_hwc(image: ImageLike) -> np.ndarray:
    """(3, H, W) float in [0, 1] (tensor or array) or (H, W, 3) uint8 -> (H, W, 3) uint8."""
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        return arr.copy()
    if arr.ndim == 3 and arr.shape[0] == 3:
        return np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()
    raise AEVisError(f"expected a (3, H, W) float image or (H, W, 3) uint8, got {arr.shape} {arr.dtype}")


# -- activation maps ---------------------------------------------------------------------------

def activation_maps(entry: ModelEntry, graph: LayerGraph, layer: str, channel: int, x: ImageLike,
                    batch_size: int = 32) -> np.ndarray:
    """Feature map ``channel`` of ``layer`` for every image.

    Args:
        entry: the model (its ``model`` takes (N, 3, H, W) pixels in [0, 1]).
        graph: the model's layer graph.
        layer: layer id (a key of ``graph.nodes``).
        channel: feature-map index in [0, C).
        x: (N, 3, H, W) images in [0, 1] (a single (3, H, W) image is accepted).
        batch_size: images per forward pass (the pass stops at ``layer``).

    Returns:
        (N, H', W') float32 maps; (N, 1, 1) for vector layers (N, C) such as a linear layer.
    """
    _check_channel(graph, layer, channel)
    return _maps(get_truncated(entry.model, graph, layer), int(channel), _as_batch(x), batch_size)


def top_activating(entry: ModelEntry, graph: LayerGraph, layer: str, channel: int, x: ImageLike,
                   k: int, by: Literal["mean", "max"] = "mean", batch_size: int = 32) -> np.ndarray:
    """Indices (k,) int64 of the ``k`` images of ``x`` (N, 3, H, W) that activate the map most.

    ``by="mean"`` ranks by the map's spatial mean (how much of the image shows the feature),
    ``by="max"`` by its largest value (the strongest single occurrence). Sorted by decreasing
    score, ties by index; ``k`` is clipped to N.
    """
    if by not in ("mean", "max"):
        raise AEVisError(f"by must be 'mean' or 'max', got {by!r}")
    maps = activation_maps(entry, graph, layer, channel, x, batch_size)
    flat = maps.reshape(maps.shape[0], -1).astype(np.float64)
    score = flat.mean(axis=1) if by == "mean" else flat.max(axis=1, initial=-np.inf)
    order = np.argsort(-score, kind="stable")
    return order[: max(0, min(int(k), len(order)))].astype(np.int64)


# -- top patches -------------------------------------------------------------------------------

class TopPatch(NamedTuple):
    """One crop of :func:`top_patches`.

    ``image_index``: index of the image in ``x``; ``box``: (top, left, bottom, right) pixel box, bottom/right
    exclusive (``crop = image[top:bottom, left:right]``); ``crop``: (h, w, 3) uint8.
    """

    image_index: int
    box: tuple[int, int, int, int]
    crop: np.ndarray


def default_patch_size(image_hw: tuple[int, int], map_hw: tuple[int, int]) -> int:
    """Side of the square crop shown for one map cell: ``4 ×`` the layer's spatial scale.

    The scale ``s = image size / map size`` (the product of the strides before the layer) is the
    distance between neighbouring map cells in pixels. The theoretical receptive field also grows
    with every k×k convolution and quickly covers the whole image, while the *effective*
    receptive field (Luo et al. 2016) is much smaller and concentrated around the cell's centre,
    so we approximate it by ``4 s`` pixels, at least 8 pixels (stride-1 layers) and at most the
    image. Vector layers (a 1×1 "map") get the whole image.
    """
    h, w = image_hw
    mh, mw = map_hw
    side = min(h, w)
    if mh <= 1 and mw <= 1:
        return side
    scale = max(h / max(mh, 1), w / max(mw, 1))
    return int(min(side, max(min(8, side), round(4 * scale))))


def top_patches(entry: ModelEntry, graph: LayerGraph, layer: str, channel: int, x: ImageLike, k: int,
                patch_size: int | None = None, batch_size: int = 32) -> list[TopPatch]:
    """Crops around the strongest activations of the map over an image set.

    For every image the map's maximum location (i, j) is found; the ``k`` images with the
    largest maxima are kept (one crop per image, so near-duplicate crops of one image do not
    crowd the list), in decreasing order. The map cell's centre in pixels is
    ``((i + 0.5) H / H', (j + 0.5) W / W')``; the square crop of side ``patch_size`` (default
    :func:`default_patch_size`) is centred there and shifted to lie inside the image, so every
    crop has the same size.

    Args:
        x: (N, 3, H, W) images in [0, 1].
        k: number of crops (clipped to N).
        patch_size: crop side in pixels (clipped to the image), or ``None`` for the default.

    Returns:
        list of :class:`TopPatch` ``(image_index, (top, left, bottom, right), crop (h, w, 3) uint8)``.
    """
    xb = _as_batch(x)
    maps = activation_maps(entry, graph, layer, channel, xb, batch_size)
    n, h, w = xb.shape[0], int(xb.shape[2]), int(xb.shape[3])
    if n == 0 or k <= 0:
        return []
    mh, mw = maps.shape[1], maps.shape[2]
    size = default_patch_size((h, w), (mh, mw)) if patch_size is None else int(patch_size)
    if size < 1:
        raise AEVisError("patch_size must be positive")
    ph, pw = min(size, h), min(size, w)
    flat = maps.reshape(n, -1)
    loc = flat.argmax(axis=1)
    best = flat[np.arange(n), loc].astype(np.float64)
    out: list[TopPatch] = []
    for idx in np.argsort(-best, kind="stable")[: min(int(k), n)]:
        i, j = divmod(int(loc[idx]), mw)
        cy, cx = (i + 0.5) * h / mh, (j + 0.5) * w / mw
        top = int(min(max(round(cy - ph / 2), 0), h - ph))
        left = int(min(max(round(cx - pw / 2), 0), w - pw))
        crop = xb[int(idx), :, top:top + ph, left:left + pw]
        out.append(TopPatch(int(idx), (top, left, top + ph, left + pw), _to_uint8_hwc(crop)))
    return out


# -- occlusion sensitivity ---------------------------------------------------------------------

def occluder_positions(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of a ``patch``-wide occluder sliding by ``stride`` along ``size`` pixels.

    ``0, stride, 2 stride, ...`` plus a last one at ``size - patch`` when the stride does not
    land there, so the borders are always reached and, when ``stride <= patch``, every pixel is
    covered at least once (a larger stride leaves gaps).
    """
    patch = min(patch, size)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """(3, H, W) -> (3, H, W) separable Gaussian blur (replicated borders)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    c = img.shape[0]
    x = F.pad(img.unsqueeze(0), (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return x[0]


def _fill_image(img: Tensor, fill: str, patch: int, blur_sigma: float | None) -> Tensor:
    """(3, H, W) replacement values for occluded pixels."""
    if fill == "zero":
        return torch.zeros_like(img)
    if fill == "mean":
        return img.mean(dim=(1, 2), keepdim=True).expand_as(img).clone()
    if fill == "blur":
        return _gaussian_blur(img, blur_sigma if blur_sigma is not None else max(1.0, patch / 2))
    raise AEVisError(f"fill must be 'mean', 'zero' or 'blur', got {fill!r}")


@overload
def discrepancy_map(entry: ModelEntry, graph: LayerGraph, layer: str, channel: int, image: ImageLike,
                    patch: int = ..., stride: int = ..., fill: FillMode = ..., batch_size: int = ...,
                    progress: Progress | None = ..., should_stop: None = ..., reduce: Reduce = ...,
                    blur_sigma: float | None = ...) -> np.ndarray: ...


@overload
def discrepancy_map(entry: ModelEntry, graph: LayerGraph, layer: str, channel: int, image: ImageLike,
                    patch: int = ..., stride: int = ..., fill: FillMode = ..., batch_size: int = ...,
                    progress: Progress | None = ..., *, should_stop: ShouldStop, reduce: Reduce = ...,
                    blur_sigma: float | None = ...) -> np.ndarray | None: ...


def discrepancy_map(entry: ModelEntry, graph: LayerGraph, layer: str, channel: int, image: ImageLike,
                    patch: int = 8, stride: int = 4, fill: FillMode = "mean", batch_size: int = 64,
                    progress: Progress | None = None, should_stop: ShouldStop | None = None,
                    reduce: Reduce = "sum", blur_sigma: float | None = None) -> np.ndarray | None:
    """Occlusion sensitivity of one feature map on one image (Zeiler & Fergus 2014).

    A ``patch × patch`` occluder slides over the image by ``stride`` (positions from
    :func:`occluder_positions`, last row/column included). For each position ``p`` the occluded
    pixels are replaced by ``fill`` — ``"mean"``: the image's per-channel mean colour,
    ``"zero"``: black, ``"blur"``: the same pixels of a Gaussian-blurred copy (σ = ``blur_sigma``,
    default ``patch / 2``, which removes detail but keeps colour) — and the map's activation
    ``A`` is recomputed. ``A`` is the sum of the map over its spatial grid (``reduce="sum"``,
    the total response; default) or its maximum (``reduce="max"``, the strongest occurrence).
    The drop ``d_p = A(image) − A(occluded_p)`` is credited to every pixel the occluder covers,
    and each pixel gets the mean of ``d_p`` over the positions covering it::

        D[y, x] = mean_{p : (y, x) ∈ patch_p} d_p

    so ``D > 0`` marks pixels that support the feature, ``D < 0`` pixels that suppress it, and
    ``D = 0`` pixels that do not matter (in units of the activation). Pixels no occluder covers
    (only when ``stride > patch``) get 0. Occluded images go through
    the model in batches of ``batch_size``, each forward stopping at ``layer``.

    Args:
        image: (3, H, W) pixels in [0, 1] (a (1, 3, H, W) batch is accepted).
        patch, stride: occluder side and step in pixels (``patch`` is clipped to the image).
        progress: ``progress(done, total)`` after each batch; counts occluder positions.
        should_stop: polled before each batch; when it returns True the computation stops.

    Returns:
        (H, W) float32 discrepancy map, or ``None`` if ``should_stop`` cancelled it (without
        ``should_stop`` the result is never ``None``, and the overloads type it so).
    """
    _check_channel(graph, layer, channel)
    if patch < 1 or stride < 1 or batch_size < 1:
        raise AEVisError("patch, stride and batch_size must be positive")
    if reduce not in ("sum", "max"):
        raise AEVisError(f"reduce must be 'sum' or 'max', got {reduce!r}")
    xb = _as_batch(image)
    if xb.shape[0] != 1:
        raise AEVisError("discrepancy_map takes one image (3, H, W)")
    tm = get_truncated(entry.model, graph, layer)
    img = xb[0].to(tm.device)
    h, w = int(img.shape[1]), int(img.shape[2])
    ph, pw = min(patch, h), min(patch, w)
    filler = _fill_image(img, fill, patch, blur_sigma)
    positions = [(y, x) for y in occluder_positions(h, ph, stride) for x in occluder_positions(w, pw, stride)]
    total = len(positions)

    def score(batch: Tensor) -> Tensor:
        m = _channel_map(tm(batch), int(channel)).double()
        m = m.reshape(m.shape[0], -1)
        return m.sum(dim=1) if reduce == "sum" else m.max(dim=1).values

    if should_stop is not None and should_stop():
        return None
    drops = np.empty(total, np.float64)
    with torch.no_grad():
        base = score(img.unsqueeze(0))[0]
        for s in range(0, total, batch_size):
            if should_stop is not None and should_stop():
                return None
            chunk = positions[s:s + batch_size]
            batch = img.unsqueeze(0).repeat(len(chunk), 1, 1, 1)
            for b, (y, x) in enumerate(chunk):
                batch[b, :, y:y + ph, x:x + pw] = filler[:, y:y + ph, x:x + pw]
            drops[s:s + len(chunk)] = (base - score(batch)).cpu().numpy()
            if progress is not None:
                progress(s + len(chunk), total)
    acc = np.zeros((h, w), np.float64)
    cnt = np.zeros((h, w), np.float64)
    for d, (y, x) in zip(drops, positions, strict=True):
        acc[y:y + ph, x:x + pw] += d
        cnt[y:y + ph, x:x + pw] += 1
    return (acc / np.maximum(cnt, 1)).astype(np.float32)


def dim_unimportant(image: ImageLike, dmap: np.ndarray, keep_fraction: float = 0.2,
                    dim: float = 0.25) -> np.ndarray:
    """Display image (H, W, 3) uint8 with all but the most supporting pixels darkened.

    The ``ceil(keep_fraction · H · W)`` pixels with the largest discrepancy (ties broken by
    raster order) that are also > 0 keep their value; every other pixel is multiplied by ``dim``.

    Args:
        image: (3, H, W) float pixels in [0, 1] (tensor or array) or (H, W, 3) uint8.
        dmap: (H, W) discrepancy map (e.g. from :func:`discrepancy_map`).
        keep_fraction: fraction of pixels to keep, in (0, 1].
        dim: brightness factor of the other pixels, in [0, 1].
    """
    if not 0 < keep_fraction <= 1:
        raise AEVisError("keep_fraction must be in (0, 1]")
    if not 0 <= dim <= 1:
        raise AEVisError("dim must be in [0, 1]")
    rgb = _to_uint8_hwc(image)
    d = np.asarray(dmap, dtype=np.float64)
    if d.shape != rgb.shape[:2]:
        raise AEVisError(f"discrepancy map {d.shape} does not match the image {rgb.shape[:2]}")
    flat = np.nan_to_num(d.ravel(), nan=-np.inf)
    n_keep = int(math.ceil(keep_fraction * flat.size))
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:n_keep]] = True
    keep &= flat > 0
    out = np.rint(rgb.astype(np.float64) * dim).astype(np.uint8)
    k2 = keep.reshape(d.shape)
    out[k2] = rgb[k2]
    return out
