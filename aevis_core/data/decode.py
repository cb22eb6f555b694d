"""Defensive image decoding: restricted formats, pixel and byte limits, RGB output.

Every decode goes through :func:`decode_image`: Pillow opens only the allowed formats
(``Image.open(..., formats=...)``), the pixel count is checked from the header before any
pixel data is decoded (limit well below Pillow's 89 MP default), decompression-bomb warnings
are errors, animated files are refused, truncated data is an error, and every mode
(L, LA, P, RGBA, CMYK, I;16, I, F, ...) becomes 8-bit RGB.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aevis_core.errors import ImageLoadError

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "WEBP")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})


@dataclass(frozen=True)
class DecodeLimits:
    """Limits for one image: pixels (width x height), bytes of the file, allowed formats."""

    max_pixels: int = 16_000_000
    max_bytes: int = 20 * 1024 * 1024
    formats: tuple[str, ...] = ALLOWED_FORMATS

    @classmethod
    def from_env(cls) -> DecodeLimits:
        """Limits from ``AEVIS_MAX_PIXELS`` / ``AEVIS_MAX_IMAGE_MB`` (defaults 16 MP, 20 MB)."""
        return cls(
            max_pixels=int(os.environ.get("AEVIS_MAX_PIXELS", 16_000_000)),
            max_bytes=int(float(os.environ.get("AEVIS_MAX_IMAGE_MB", 20)) * 1024 * 1024),
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited over white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(np.rint(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _too_big(label: str, size: int, lim: DecodeLimits) -> str:
    return f"{label}: file is {size / 2**20:.1f} MB, over the {lim.max_bytes / 2**20:.0f} MB limit"


def decode_image(source: bytes | Path, name: str | None = None,
                 limits: DecodeLimits | None = None) -> Image.Image:
    """Decode ``source`` (file bytes or a path) into an 8-bit RGB PIL image, or raise.

    Raises :class:`ImageLoadError` whose message starts with ``name``: empty file, too large,
    not an allowed format, animated, too many pixels, decompression bomb, truncated/corrupt.
    """
    lim = limits or DecodeLimits.from_env()
    label = name or (source.name if isinstance(source, Path) else "image")
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise ImageLoadError(f"{label}: cannot read file ({exc.strerror})") from exc
        if size > lim.max_bytes:
            raise ImageLoadError(_too_big(label, size, lim))
        data = source.read_bytes()
    else:
        data = source
    if len(data) == 0:
        raise ImageLoadError(f"{label}: empty file")
    if len(data) > lim.max_bytes:
        raise ImageLoadError(_too_big(label, len(data), lim))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=list(lim.formats))
            w, h = img.size
            if w * h > lim.max_pixels:
                raise ImageLoadError(
                    f"{label}: {w}x{h} = {w * h / 1e6:.1f} MP is over the {lim.max_pixels / 1e6:.0f} MP limit "
                    "(possible decompression bomb)"
                )
            if getattr(img, "n_frames", 1) > 1:
                raise ImageLoadError(f"{label}: animated images are not supported")
            img.load()
            if img.format == "JPEG":
                img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        allowed = ", ".join(lim.formats)
        raise ImageLoadError(f"{label}: not a supported image (allowed: {allowed})") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{label}: refused as a decompression bomb") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageLoadError(f"{label}: corrupt or truncated image ({msg[:120]})") from exc
