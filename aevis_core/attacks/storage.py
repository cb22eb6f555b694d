"""Lossless storage of adversarial examples: 8-bit RGB PNGs plus one ``manifest.json``.

Stored images are quantised to 8 bits: a pixel value ``x`` in [0, 1] is written as
``round(x * 255)`` and reads back as ``round(x * 255) / 255`` (PNG itself is lossless). For the
L-inf attacks the quantised perturbation is clipped, relative to the quantised clean image, to
``floor(eps * 255)`` levels, so the *stored* pair still satisfies ``||adv - clean||_inf <= eps``
(an ε that is not a multiple of 1/255 is thus rounded down; ``eps < 1/255`` stores the clean
image). Rounding can still change a prediction, so every record's adversarial prediction,
probability, ``linf`` and ``l2`` are measured on the re-loaded PNG, never on the float tensor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aevis_core.attacks.config import AttackConfig, validate_config
from aevis_core.errors import AEVisError
from aevis_core.models.base import ModelEntry

Tensor = torch.Tensor
log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "aevis-adversarial"
VERSION = 1
QUANTISATION = ("8-bit RGB PNG: stored = round(x * 255), read back as stored / 255; L-inf "
                "perturbations clipped to floor(eps * 255) levels of the 8-bit clean image")
_IMAGE_EXT = re.compile(r"\.(jpe?g|png|bmp|gif|webp|tiff?|ppm)$", re.IGNORECASE)
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
             *(f"lpt{i}" for i in range(10))}


@dataclass
class AdvRecord:
    """Metadata of one stored adversarial example (one entry of ``manifest.json``).

    ``file``/``clean_file`` are bare file names inside the folder. Predictions are class
    indices (with names and softmax probabilities) of the source model on the stored clean and
    the re-loaded stored adversarial PNG; ``linf``/``l2`` are measured between those two
    (``linf_levels`` in 8-bit steps). ``eps`` is None for the L2 attacks (C&W, DeepFool), which
    have no budget. ``success``: targeted -> ``adv_pred == target``;
    untargeted -> ``adv_pred != label`` (``!= clean_pred`` when the label is unknown).
    """

    id: str
    file: str
    clean_file: str | None
    method: str
    norm: str
    eps: float | None
    steps: int
    seed: int
    targeted: bool
    target: int | None
    target_name: str | None
    label: int | None
    label_name: str | None
    model_id: str
    model_name: str
    clean_pred: int
    clean_pred_name: str
    clean_prob: float
    adv_pred: int
    adv_pred_name: str
    adv_prob: float
    linf: float
    linf_levels: int
    l2: float
    success: bool
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdvRecord:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones raise AEVisError."""
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in d and f.name != "params"]
        if missing:
            raise AEVisError(f"adversarial manifest record lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})


def safe_stem(image_id: str) -> str:
    """File-name-safe stem for an image id: ``"cat/0003.jpg"`` -> ``"cat_0003"``.

    Keeps ``[A-Za-z0-9._-]``, turns everything else (path separators included) into ``_``,
    collapses dot runs (no ``..``), never starts with a dot, caps the length at 80.
    """
    s = _IMAGE_EXT.sub("", str(image_id).strip())
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", s)
    s = re.sub(r"\.{2,}", ".", s).strip("._-")[:80].rstrip("._-")
    if not s or s.split(".")[0].lower() in _RESERVED:
        s = f"img_{s}" if s else "img"
    return s


def _unique_stems(ids: Sequence[str]) -> list[str]:
    """Safe stems, made unique (case-insensitively) with a short hash of the id, then a counter."""
    seen: set[str] = set()
    out = []
    for image_id in ids:
        base = stem = safe_stem(image_id)
        if stem.lower() in seen:
            base = stem = f"{stem}-{hashlib.sha1(str(image_id).encode()).hexdigest()[:8]}"
        k = 2
        while stem.lower() in seen:
            stem = f"{base}-{k}"
            k += 1
        seen.add(stem.lower())
        out.append(stem)
    return out


def quantise(adv: Tensor, clean: Tensor, eps: float | None) -> tuple[Tensor, Tensor]:
    """(N, 3, H, W) floats -> (adv8, clean8) uint8, with ``|adv8 - clean8| <= floor(eps*255)``."""
    clean8 = (clean.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.int16)
    adv8 = (adv.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.int16)
    if eps is not None:
        k = int(math.floor(eps * 255 + 1e-6))
        if k == 0:
            log.warning("eps=%.6f is below one 8-bit level: the stored images equal the clean ones", eps)
        adv8 = (clean8 + (adv8 - clean8).clamp(-k, k)).clamp(0, 255)
    return adv8.to(torch.uint8), clean8.to(torch.uint8)


def _write_png(arr: Tensor, path: Path) -> None:
    """(3, H, W) uint8 -> lossless RGB PNG."""
    Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy()).save(path, format="PNG")


def _read_png(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AEVisError(f"cannot read stored adversarial image {path.name}: {exc}") from exc


def images_to_tensor(images: Sequence[Image.Image]) -> Tensor:
    """List of RGB PIL images (same size) -> (N, 3, H, W) float32 in [0, 1], no resizing."""
    if not images:
        return torch.zeros((0, 3, 0, 0))
    arrs = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AEVisError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("records"), list):
        raise AEVisError(f"{path} is not an AEVis adversarial manifest")
    if data.get("version") != VERSION:
        raise AEVisError(f"{path} has manifest version {data.get('version')!r}, this AEVis reads {VERSION}")
    return [r for r in data["records"] if isinstance(r, dict)]


def save_adversarial(out_dir: str | Path, ids: Sequence[str], adv: Tensor, clean: Tensor,
                     cfg: AttackConfig, entry: ModelEntry, labels: Sequence[int | None] | Tensor | None = None,
                     target: Tensor | None = None, save_clean: bool = True) -> list[AdvRecord]:
    """Write ``<stem>.adv.png`` (and ``<stem>.clean.png``) per image plus ``manifest.json``.

    ids: N source image ids (sanitised into file names); adv, clean: (N, 3, H, W) in [0, 1];
    cfg: the attack config used; entry: the source model (its predictions are recorded);
    labels: N true classes (None where unknown); target: (N,) for targeted attacks.
    Records already in the folder's manifest are kept unless their file is rewritten.
    Returns the new records, whose predictions come from the re-loaded PNGs.
    """
    cfg = validate_config(cfg)
    if adv.dim() != 4 or adv.shape != clean.shape or adv.shape[1] != 3:
        raise AEVisError(f"adversarial and clean images must both be (N, 3, H, W), got "
                         f"{tuple(adv.shape)} and {tuple(clean.shape)}")
    n = adv.shape[0]
    if len(ids) != n:
        raise AEVisError(f"{len(ids)} image ids for {n} adversarial images")
    label_list: list[int | None] = ([None] * n if labels is None else
                                    [None if v is None else int(v) for v in list(labels)])
    if len(label_list) != n:
        raise AEVisError(f"{len(label_list)} labels for {n} adversarial images")
    if cfg.targeted and (target is None or target.shape != (n,)):
        raise AEVisError("targeted attack results need their target classes (one per image)")
    if target is not None and n and (int(target.min()) < 0 or int(target.max()) >= entry.num_classes):
        raise AEVisError(f"target classes must be in [0, {entry.num_classes}) for {entry.name}")
    if n == 0:
        return []
    out = Path(out_dir)
    manifest = out / MANIFEST
    previous = _read_manifest(manifest) if manifest.exists() else []  # fail before writing anything
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AEVisError(f"cannot create output folder {out}: {exc}") from exc

    adv8, clean8 = quantise(adv, clean, cfg.eps if cfg.norm == "linf" else None)
    stems = _unique_stems(ids)
    files = [f"{s}.adv.png" for s in stems]
    clean_files: list[str | None] = [f"{s}.clean.png" if save_clean else None for s in stems]
    try:
        for i in range(n):
            _write_png(adv8[i], out / files[i])
            if save_clean:
                _write_png(clean8[i], out / f"{stems[i]}.clean.png")
    except OSError as exc:
        raise AEVisError(f"cannot write adversarial images to {out}: {exc}") from exc

    stored = images_to_tensor([_read_png(out / f) for f in files])  # re-loaded, not in-memory
    clean_q = clean8.float() / 255.0
    p_clean, y_clean = entry.predict(clean_q)
    p_adv, y_adv = entry.predict(stored)
    diff = stored - clean_q
    linf = diff.abs().flatten(1).amax(dim=1)
    l2 = diff.flatten(1).norm(dim=1)
    names = entry.class_names
    params = cfg.to_dict()
    records = []
    for i in range(n):
        lab = label_list[i]
        tgt = int(target[i]) if cfg.targeted and target is not None else None
        ap, cp = int(y_adv[i]), int(y_clean[i])
        success = ap == tgt if tgt is not None else ap != (lab if lab is not None else cp)
        records.append(AdvRecord(
            id=str(ids[i]), file=files[i], clean_file=clean_files[i], method=cfg.method,
            norm=cfg.norm, eps=float(cfg.eps) if cfg.norm == "linf" else None,
            steps=1 if cfg.method == "fgsm" else cfg.steps,
            seed=cfg.seed, targeted=cfg.targeted, target=tgt,
            target_name=names[tgt] if tgt is not None else None, label=lab,
            label_name=names[lab] if lab is not None and 0 <= lab < len(names) else None,
            model_id=entry.model_id, model_name=entry.name,
            clean_pred=cp, clean_pred_name=names[cp], clean_prob=float(p_clean[i, cp]),
            adv_pred=ap, adv_pred_name=names[ap], adv_prob=float(p_adv[i, ap]),
            linf=float(linf[i]), linf_levels=int(round(float(linf[i]) * 255)), l2=float(l2[i]),
            success=bool(success), params=dict(params),
        ))

    new_files = set(files)
    kept = [r for r in previous if r.get("file") not in new_files]
    payload = {"format": FORMAT, "version": VERSION, "quantisation": QUANTISATION,
               "records": kept + [r.to_dict() for r in records]}
    tmp = manifest.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        os.replace(tmp, manifest)
    except OSError as exc:
        raise AEVisError(f"cannot write {manifest}: {exc}") from exc
    log.info("stored %d adversarial examples in %s", n, out)
    return records


def _safe_file(folder: Path, name: object) -> Path:
    """A manifest file name must be a bare, safe name inside ``folder``."""
    if (not isinstance(name, str) or not name or name != Path(name).name or "/" in name
            or "\\" in name or name.startswith(".") or ".." in name):
        raise AEVisError(f"adversarial manifest names an unsafe file {name!r}")
    path = folder / name
    if not path.is_file():
        raise AEVisError(f"adversarial image {name} listed in the manifest is missing from {folder}")
    return path


def load_adversarial(folder: str | Path, clean: bool = False) -> tuple[list[Image.Image], list[AdvRecord]]:
    """Read a folder written by :func:`save_adversarial`.

    Returns the stored adversarial images (RGB PIL, 8-bit, at the model's input size; use
    :func:`images_to_tensor` for an (N, 3, H, W) tensor) and their records, in manifest order.
    ``clean=True`` returns the stored clean images instead (AEVisError when not saved).
    """
    root = Path(folder)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise AEVisError(f"no {MANIFEST} in {root}: not a folder of stored adversarial examples")
    records = [AdvRecord.from_dict(r) for r in _read_manifest(manifest)]
    images = []
    for r in records:
        name = r.clean_file if clean else r.file
        if name is None:
            raise AEVisError(f"clean image of {r.id!r} was not stored")
        images.append(_read_png(_safe_file(root, name)))
    return images, records
