"""Image sets: a folder (flat, class subfolders, or ``labels.csv``) or the NIPS-2017 CSV format.

Layouts recognised by :func:`load_image_set` (``kind="auto"``):

* ``images.csv`` with ``ImageId`` and ``TrueLabel`` columns, images in ``images/<ImageId>.png``:
  the NIPS-2017 adversarial competition format. **ImageNet-1k index = TrueLabel - 1.**
* ``labels.csv`` with ``path`` and ``label_index`` (optional ``label_name``) columns.
* class subfolders (``<class>/<file>``, CIFAR style): label = index of the folder name in the
  class-name list (or the sorted folder names when no list is given).
* a flat folder of images: no labels.

A file that fails to decode is reported in :attr:`ImageSet.problems`; the rest still load.
No path read from a CSV may leave the set's folder.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from aevis_core.data.decode import IMAGE_SUFFIXES, DecodeLimits, decode_image
from aevis_core.errors import AEVisError, ImageLoadError
from aevis_core.resources import CIFAR10_CLASSES, imagenet_classes

log = logging.getLogger(__name__)
DEMO_ROOT = Path(__file__).resolve().parent.parent / "demo"


@dataclass
class ImageSet:
    """Decoded RGB images with ids, labels (class index or None) and per-image metadata."""

    name: str
    images: list[Image.Image] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    labels: list[int | None] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    meta: list[dict[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    class_names: Sequence[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def label_name(self, i: int) -> str | None:
        """Class name of image ``i`` (None when unlabelled or no class list)."""
        lab = self.labels[i]
        if lab is None or self.class_names is None or not 0 <= lab < len(self.class_names):
            return None
        return self.class_names[lab]

    def subset(self, indices: Sequence[int], name: str | None = None) -> ImageSet:
        """A new set with the images at ``indices`` (problems are not carried over)."""
        return ImageSet(
            name=name or self.name,
            images=[self.images[i] for i in indices],
            ids=[self.ids[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            paths=[self.paths[i] for i in indices],
            meta=[self.meta[i] for i in indices],
            class_names=self.class_names,
        )


def demo_path(name: str) -> Path:
    """Folder of a demo set shipped with the package: ``"nips2017"`` or ``"cifar10"``."""
    path = DEMO_ROOT / name
    if not path.is_dir():
        raise AEVisError(f"unknown demo set {name!r}: use nips2017 or cifar10")
    return path


def _inside(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, refusing anything that escapes ``root``."""
    path = (root / rel).resolve()
    try:
        path.relative_to(root.resolve())
    except ValueError as exc:
        raise ImageLoadError(f"{rel}: path leaves the image folder") from exc
    return path


def _add(s: ImageSet, path: Path, image_id: str, label: int | None, meta: dict[str, str],
         limits: DecodeLimits | None) -> None:
    try:
        img = decode_image(path, name=path.name, limits=limits)
    except ImageLoadError as exc:
        log.warning("skipping %s", exc)
        s.problems.append((path.name, str(exc)))
        return
    s.images.append(img)
    s.ids.append(image_id)
    s.labels.append(label)
    s.paths.append(path)
    s.meta.append(meta)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: (v or "") for k, v in row.items() if k} for row in csv.DictReader(f)]


def _load_nips(root: Path, s: ImageSet, limits: DecodeLimits | None) -> None:
    for row in _read_csv(root / "images.csv"):
        image_id = row.get("ImageId", "")
        try:
            path = _inside(root, f"images/{image_id}.png")
            label = int(row["TrueLabel"]) - 1
        except (ImageLoadError, KeyError, ValueError) as exc:
            s.problems.append((image_id or "?", f"bad images.csv row: {exc}"))
            continue
        if not path.is_file():
            s.problems.append((f"{image_id}.png", f"{image_id}.png: listed in images.csv but missing"))
            continue
        meta = {k: row.get(k, "") for k in ("TargetClass", "Author", "AuthorProfileURL",
                                           "OriginalLandingURL", "License")}
        if meta["TargetClass"]:
            meta["TargetClass"] = str(int(meta["TargetClass"]) - 1)
        _add(s, path, image_id, label, meta, limits)


def _load_labels_csv(root: Path, s: ImageSet, limits: DecodeLimits | None) -> None:
    names: dict[int, str] = {}
    for row in _read_csv(root / "labels.csv"):
        rel = row.get("path", "")
        try:
            path = _inside(root, rel)
            label = int(row["label_index"]) if row.get("label_index", "") != "" else None
        except (ImageLoadError, KeyError, ValueError) as exc:
            s.problems.append((rel or "?", f"bad labels.csv row: {exc}"))
            continue
        if label is not None and row.get("label_name"):
            names[label] = row["label_name"]
        if not path.is_file():
            s.problems.append((rel, f"{rel}: listed in labels.csv but missing"))
            continue
        image_id = rel.replace("/", "_").rsplit(".", 1)[0]
        _add(s, path, image_id, label, {}, limits)
    if s.class_names is None and names:
        s.class_names = [names.get(i, str(i)) for i in range(max(names) + 1)]


def _load_folders(root: Path, s: ImageSet, limits: DecodeLimits | None) -> None:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if s.class_names is None:
        s.class_names = [d.name for d in dirs]
    index = {n: i for i, n in enumerate(s.class_names)}
    for d in dirs:
        label = index.get(d.name)
        if label is None:
            s.problems.append((d.name, f"{d.name}: folder is not a known class name"))
            continue
        for path in sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")):
            _add(s, path, f"{d.name}_{path.stem}", label, {}, limits)


def _known_classes(dataset: str | None) -> Sequence[str] | None:
    if dataset == "imagenet":
        return imagenet_classes()
    if dataset == "cifar10":
        return CIFAR10_CLASSES
    return None


def load_image_set(path: Path | str, name: str | None = None, kind: str = "auto",
                   class_names: Sequence[str] | None = None, dataset: str | None = None,
                   limits: DecodeLimits | None = None) -> ImageSet:
    """Load every image under ``path`` (see module docstring for layouts).

    ``kind``: ``auto`` | ``nips`` | ``labels_csv`` | ``folders`` | ``flat``. ``dataset``
    (``imagenet``/``cifar10``) picks the shipped class names when ``class_names`` is None.
    Raises :class:`AEVisError` when the folder does not exist or holds no readable image.
    """
    root = Path(path)
    if not root.is_dir():
        raise AEVisError(f"image folder not found: {root}")
    if kind == "auto":
        if (root / "images.csv").is_file():
            kind = "nips"
        elif (root / "labels.csv").is_file():
            kind = "labels_csv"
        elif any(d.is_dir() and not d.name.startswith(".") for d in root.iterdir()):
            kind = "folders"
        else:
            kind = "flat"
    if kind == "nips" and dataset is None:
        dataset = "imagenet"
    if kind == "labels_csv" and dataset is None and root.resolve() == demo_path("cifar10").resolve():
        dataset = "cifar10"
    s = ImageSet(name=name or root.name, class_names=class_names or _known_classes(dataset))
    loaders = {"nips": _load_nips, "labels_csv": _load_labels_csv, "folders": _load_folders}
    if kind in loaders:
        loaders[kind](root, s, limits)
    elif kind == "flat":
        for p in sorted(root.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | {".gif", ".svg", ".tif", ".tiff"}:
                _add(s, p, p.stem, None, {}, limits)
    else:
        raise AEVisError(f"unknown image-set kind {kind!r}: use auto, nips, labels_csv, folders or flat")
    if not s.images:
        detail = f" ({s.problems[0][1]})" if s.problems else ""
        raise AEVisError(f"no readable images in {root}{detail}")
    log.info("loaded %d images from %s (%d problems)", len(s), root, len(s.problems))
    return s
