"""Safe reading of user uploads (images or zips of images): never trusted, never raises for bad input.

Zip archives are read in memory member by member: unsafe paths, links, encryption, nested zips,
too many entries and members whose declared size or compression ratio look like a zip bomb are
refused before a byte is decompressed, and every read is bounded. User-given names are never
used as paths: each image gets a sanitised unique id and :func:`save_image_set` writes ``<id>.png``.
"""

from __future__ import annotations

import csv
import io
import logging
import lzma
import os
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aevis_core.data.decode import IMAGE_SUFFIXES, DecodeLimits, decode_image
from aevis_core.data.imagesets import ImageSet
from aevis_core.errors import AEVisError, ImageLoadError

log = logging.getLogger(__name__)

MAX_ID_LEN = 64
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_RATIO_MIN_BYTES = 1 << 20  # smaller members cannot hurt (reads are bounded): ratio not checked
_JUNK = frozenset({"thumbs.db", "desktop.ini"})
_BAD_DATA = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
             RuntimeError, struct.error, zlib.error, lzma.LZMAError)


def _env_num(var: str, default: float) -> float:
    raw = os.environ.get(var, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise AEVisError(f"{var}={raw!r} must be a positive number")
    return value


@dataclass(frozen=True)
class UploadLimits:
    """Limits of one upload (all its files together); ``image`` limits each decoded image."""

    max_files: int = 200  # images accepted per upload
    max_total_bytes: int = 50 * 1024 * 1024  # file bytes (uncompressed zip members) in all
    max_zip_entries: int = 1000  # members of one zip, directories included
    max_ratio: float = 100.0  # zip member compression ratio above this = bomb (members > 1 MiB)
    max_total_pixels: int = 100_000_000  # decoded pixels in all (100 MP = 300 MB of RGB)
    image: DecodeLimits = field(default_factory=DecodeLimits.from_env)

    @classmethod
    def from_env(cls) -> UploadLimits:
        """``AEVIS_MAX_UPLOAD_FILES`` (200), ``AEVIS_MAX_UPLOAD_MB`` (50), ``AEVIS_MAX_UPLOAD_MP`` (100)."""
        return cls(max_files=int(_env_num("AEVIS_MAX_UPLOAD_FILES", 200)),
                   max_total_bytes=int(_env_num("AEVIS_MAX_UPLOAD_MB", 50) * 2**20),
                   max_total_pixels=int(_env_num("AEVIS_MAX_UPLOAD_MP", 100) * 1e6))


@dataclass
class UploadResult:
    """Accepted images (RGB, safe unique ids, labels None) and ``(name given, reason)`` per refusal."""

    images: ImageSet
    rejected: list[tuple[str, str]] = field(default_factory=list)


def _size(n: float) -> str:
    return f"{int(n):,} bytes" if n < 2**20 else f"{n / 2**20:.1f} MB"


def _label(name: str) -> str:
    """``name`` fit for a one-line message/log: control characters replaced, at most 120 chars."""
    clean = "".join("?" if unicodedata.category(c)[0] == "C" else c for c in name) or "(unnamed)"
    return clean if len(clean) <= 120 else clean[:117] + "..."


def _first_line(exc: BaseException) -> str:
    return _label((str(exc).splitlines() or [type(exc).__name__])[0])[:100]


def safe_id(name: str, taken: set[str]) -> str:
    """Id from the base name of ``name`` (no folders, no suffix) made unique among ``taken``.

    Only ``[A-Za-z0-9._-]``, at most 64 characters, never empty, never starting with ``.`` or
    ``-``; uniqueness ignores case (``cat``, ``cat-2``, ...). Adds the casefolded id to ``taken``.
    """
    base = re.split(r"[/\\]", name)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_stem).lstrip(".-")[:MAX_ID_LEN].rstrip(".") or "image"
    candidate, n = clean, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{clean[:MAX_ID_LEN - len(str(n)) - 1]}-{n}"
    taken.add(candidate.casefold())
    return candidate


def _unsafe(member: str) -> bool:
    parts = re.split(r"[/\\]", member)
    return member.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", member) is not None or ".." in parts


class _Reader:
    """Accumulates one upload: accepted images, refusals and the running byte/pixel totals."""

    def __init__(self, limits: UploadLimits, name: str, class_names: Sequence[str] | None) -> None:
        self.lim = limits
        self.set = ImageSet(name=name, class_names=class_names)
        self.rejected: list[tuple[str, str]] = []
        self.taken: set[str] = set()
        self.bytes = 0
        self.pixels = 0

    def reject(self, raw: str, reason: str) -> None:
        log.info("upload refused: %s", reason)
        self.rejected.append((raw, reason))

    def room(self, raw: str, label: str, size: int) -> bool:
        """Whether one more image of ``size`` file bytes fits in the upload; refuses it if not."""
        if len(self.set) >= self.lim.max_files:
            self.reject(raw, f"{label}: over the {self.lim.max_files}-image limit of one upload")
        elif self.bytes + size > self.lim.max_total_bytes:
            self.reject(raw, f"{label}: {_size(size)} would take the upload over its "
                             f"{_size(self.lim.max_total_bytes)} total limit")
        else:
            return True
        return False

    def add(self, raw: str, label: str, id_source: str, data: bytes) -> None:
        """Decode ``data`` and accept it, or record why not."""
        try:
            img = decode_image(data, name=label, limits=self.lim.image)
        except ImageLoadError as exc:
            self.reject(raw, str(exc))
            return
        except Exception as exc:  # a decoder bug on hostile input must not take the app down
            log.exception("unexpected error decoding upload %s", label)
            self.reject(raw, f"{label}: could not be decoded ({type(exc).__name__})")
            return
        w, h = img.size
        if self.pixels + w * h > self.lim.max_total_pixels:
            self.reject(raw, f"{label}: {w}x{h} pixels would take the upload over its "
                             f"{self.lim.max_total_pixels / 1e6:g} MP total limit")
            return
        self.bytes += len(data)
        self.pixels += w * h
        image_id = safe_id(id_source, self.taken)
        s = self.set
        s.images.append(img)
        s.ids.append(image_id)
        s.labels.append(None)
        s.paths.append(Path(f"{image_id}.png"))
        s.meta.append({"upload_name": raw})

    def read_zip(self, raw: str, label: str, data: bytes) -> None:
        """Every image member of the zip ``data``, each checked before it is decompressed."""
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            members = zf.infolist()
        except _BAD_DATA as exc:
            self.reject(raw, f"{label}: not a readable zip ({_first_line(exc)})")
            return
        with zf:
            if len(members) > self.lim.max_zip_entries:
                self.reject(raw, f"{label}: {len(members)} entries, over the {self.lim.max_zip_entries}-entry "
                                 "limit of a zip")
                return
            before = len(self.set) + len(self.rejected)
            for m in members:
                self._member(zf, m, raw, label)
            if len(self.set) + len(self.rejected) == before:
                self.reject(raw, f"{label}: the zip holds no image files")

    def _member(self, zf: zipfile.ZipFile, m: zipfile.ZipInfo, zip_raw: str, zip_label: str) -> None:
        raw, label = f"{zip_raw}:{m.filename}", f"{zip_label}:{_label(m.filename)}"
        parts = [p for p in re.split(r"[/\\]", m.filename) if p]
        base = parts[-1] if parts else ""
        suffix = os.path.splitext(base)[1].lower()
        if _unsafe(m.filename):
            return self.reject(raw, f"{label}: unsafe path in zip (absolute, drive letter or '..')")
        if (m.is_dir() or not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)
                or base.lower() in _JUNK):
            return None  # folders and OS junk: skipped silently
        if stat.S_ISLNK(m.external_attr >> 16):
            return self.reject(raw, f"{label}: symbolic links in zips are not allowed")
        if m.flag_bits & 0x1:
            return self.reject(raw, f"{label}: encrypted zip members are not supported")
        if suffix == ".zip":
            return self.reject(raw, f"{label}: nested zip archives are not supported")
        if suffix not in IMAGE_SUFFIXES:
            allowed = ", ".join(sorted(IMAGE_SUFFIXES))
            return self.reject(raw, f"{label}: not an image file (allowed: {allowed})")
        limit = self.lim.image.max_bytes
        if m.file_size > limit:
            return self.reject(raw, f"{label}: {_size(m.file_size)} uncompressed, over the {_size(limit)} "
                                    "per-image limit (possible zip bomb)")
        ratio = m.file_size / max(m.compress_size, 1)
        if m.file_size > _RATIO_MIN_BYTES and ratio > self.lim.max_ratio:
            return self.reject(raw, f"{label}: compression ratio {ratio:.0f}:1 is over the "
                                    f"{self.lim.max_ratio:.0f}:1 limit (possible zip bomb)")
        if not self.room(raw, label, m.file_size):
            return None
        cap = min(limit, self.lim.max_total_bytes - self.bytes)
        try:
            with zf.open(m) as f:
                data = f.read(cap + 1)  # bounded: a lying header cannot blow memory
        except _BAD_DATA as exc:
            return self.reject(raw, f"{label}: corrupt zip member ({_first_line(exc)})")
        if len(data) > cap:
            return self.reject(raw, f"{label}: holds more data than its header declares (possible zip bomb)")
        return self.add(raw, label, m.filename, data)


def read_uploads(files: Sequence[tuple[str, bytes]], limits: UploadLimits | None = None,
                 class_names: Sequence[str] | None = None, name: str = "upload") -> UploadResult:
    """Decode uploaded ``(file name, file bytes)`` pairs (images or zips of images), in order.

    Returns the accepted images as an :class:`ImageSet` named ``name`` (8-bit RGB PIL images,
    safe unique ids, labels None, ``paths`` = ``<id>.png`` not yet written, ``meta`` =
    ``{"upload_name": ...}``) and one ``(name as given, one-line reason)`` per refused file or
    zip member (also copied to ``images.problems``). Raises only for programming errors.
    """
    lim = limits or UploadLimits.from_env()
    r = _Reader(lim, name, class_names)
    for raw, data in files:
        if not isinstance(raw, str) or not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("read_uploads expects (str name, bytes data) pairs")
        data = bytes(data)
        label = _label(raw)
        if len(data) > lim.max_total_bytes:
            r.reject(raw, f"{label}: {_size(len(data))}, over the {_size(lim.max_total_bytes)} limit of one upload")
        elif data[:4] in _ZIP_MAGIC or raw.lower().endswith(".zip"):
            r.read_zip(raw, label, data)
        elif r.room(raw, label, len(data)):
            r.add(raw, label, raw, data)
    r.set.problems = list(r.rejected)
    log.info("upload %s: %d images accepted, %d refused", _label(name), len(r.set), len(r.rejected))
    return UploadResult(r.set, r.rejected)


def save_image_set(images: ImageSet, folder: Path) -> Path:
    """Write ``folder/<id>.png`` per image and ``labels.csv`` (``path,label_index``, in set order).

    ``load_image_set(folder)`` reads it back with the same ids, order, labels and pixels (use a
    fresh folder: an ``images.csv`` already there would take precedence). Raises ``ValueError``
    for an id that is not a safe unique file name (a programming error). Returns ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    seen: set[str] = set()
    for image_id in images.ids:
        if not _SAFE_ID.fullmatch(image_id) or image_id.casefold() in seen:
            raise ValueError(f"image id {image_id!r} is not a safe, unique file name")
        seen.add(image_id.casefold())
    rows: list[tuple[str, str]] = []
    for img, image_id, label in zip(images.images, images.ids, images.labels, strict=True):
        path = (root / f"{image_id}.png").resolve()
        if path.parent != root:  # e.g. a symlink planted in the folder
            raise ValueError(f"{path} is outside {root}")
        (img if img.mode == "RGB" else img.convert("RGB")).save(path, format="PNG")
        rows.append((path.name, "" if label is None else str(int(label))))
    csv_path = (root / "labels.csv").resolve()
    if csv_path.parent != root:
        raise ValueError(f"{csv_path} is outside {root}")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label_index"])
        writer.writerows(rows)
    log.info("saved %d images to %s", len(rows), root)
    return folder
