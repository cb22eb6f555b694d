"""``aevis compare``: the diverging point of normal/adversarial image pairs, with its evidence.

Pairs are matched by file stem: ``x.png`` (or ``x.clean.png``) with ``x.adv.png``, as
``aevis attack`` writes them; ids of demo sets (``demo:cifar10:cat``) count as stems, and a
``manifest.json`` beside the adversarial files adds each record's source id as a key. Files
named ``*.adv.*`` are ignored among the normal images and ``*.clean.*`` among the adversarial
ones, so both patterns may name the same folder. Unmatched files are named in a one-line error.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aevis_core.cli.common import load_set, out, progress_bar
from aevis_core.errors import AEVisError

if TYPE_CHECKING:
    from aevis_core.data import ImageSet
    from aevis_core.datapath.control_similarity import NoiseComparison
    from aevis_core.datapath.diverge import Divergence

ADV, CLEAN = ".adv", ".clean"


def _strip(stem: str, suffix: str) -> str:
    return stem[: -len(suffix)] if stem.endswith(suffix) else stem


def _manifest_keys(paths: Sequence[Path]) -> dict[str, set[str]]:
    """Adversarial file stem -> extra keys (source id, its safe stem, clean file stem) from manifests."""
    from aevis_core.attacks import safe_stem
    from aevis_core.attacks.storage import MANIFEST

    keys: dict[str, set[str]] = {}
    for folder in sorted({p.parent for p in paths}):
        f = folder / MANIFEST
        if not f.is_file():
            continue
        try:
            records = json.loads(f.read_text(encoding="utf-8")).get("records", [])
        except (OSError, ValueError, AttributeError) as exc:
            raise AEVisError(f"cannot read {f}: {exc}") from exc
        for r in records:
            if not isinstance(r, dict) or not isinstance(r.get("file"), str):
                continue
            extra = {str(r["id"]), safe_stem(str(r["id"]))} if r.get("id") is not None else set()
            if isinstance(r.get("clean_file"), str):
                extra.add(_strip(Path(r["clean_file"]).stem, CLEAN))
            keys[Path(r["file"]).stem] = extra
    return keys


def _names(ids: Sequence[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def match_pairs(normal_ids: Sequence[str], adv_ids: Sequence[str],
                manifest: dict[str, set[str]] | None = None) -> list[tuple[int, int]]:
    """(normal index, adversarial index) pairs by stem; raise naming every unmatched file.

    Normal key: the id without ``.clean``; adversarial keys: the id without ``.adv`` plus the
    ``manifest`` keys of that stem. Ids ending in ``.adv`` (normal side) or ``.clean``
    (adversarial side) are skipped.
    """
    from aevis_core.attacks import safe_stem

    manifest = manifest or {}
    by_key: dict[str, int] = {}
    normals = [i for i, s in enumerate(normal_ids) if not s.endswith(ADV)]
    for i in normals:
        for key in {_strip(normal_ids[i], CLEAN), safe_stem(_strip(normal_ids[i], CLEAN))}:
            if key in by_key and by_key[key] != i:
                raise AEVisError(f"two normal images share the stem {key!r}: cannot pair them")
            by_key[key] = i
    pairs: list[tuple[int, int]] = []
    lone_adv: list[str] = []
    used: set[int] = set()
    for j, s in enumerate(adv_ids):
        if s.endswith(CLEAN):
            continue
        keys = {_strip(s, ADV)} | manifest.get(s, set())
        hits = {by_key[k] for k in keys if k in by_key}
        if len(hits) != 1 or next(iter(hits)) in used:
            lone_adv.append(s)
            continue
        i = hits.pop()
        used.add(i)
        pairs.append((i, j))
    lone_normal = [normal_ids[i] for i in normals if i not in used]
    if lone_adv or lone_normal:
        parts = ([f"normal {_names(lone_normal)}"] if lone_normal else []) + (
            [f"adversarial {_names(lone_adv)}"] if lone_adv else [])
        raise AEVisError("unmatched images (pairs are matched by file stem, x.png <-> x.adv.png): "
                         + "; ".join(parts))
    if not pairs:
        raise AEVisError("no normal/adversarial pairs found")
    return pairs


def _load(pattern: str, name: str, dataset: str | None) -> ImageSet:
    images = load_set(name, pattern, dataset)
    for file, why in images.problems:
        out(f"skipped {file}: {why}")
    return images


def cmd_compare(args: argparse.Namespace) -> int:
    """Diverging point of normal/adversarial pairs against R control draws; print it, optionally write JSON."""
    from aevis_core.attacks import parse_eps
    from aevis_core.datapath.control_similarity import compare_with_noise_control
    from aevis_core.datapath.diverge import DivergenceConfig, diverging_point
    from aevis_core.graph import build_graph
    from aevis_core.models import default_device, load_model

    rule = DivergenceConfig(alpha=args.alpha, min_effect=args.min_effect).validate()
    entry = load_model(args.model, device=default_device())
    normal = _load(args.normal, "normal", entry.dataset)
    adv = _load(args.adversarial, "adversarial", entry.dataset)
    pairs = match_pairs(normal.ids, adv.ids, _manifest_keys([Path(p) for p in adv.paths]))
    xn = entry.preprocess_many([normal.images[i] for i, _ in pairs])
    xa = entry.preprocess_many([adv.images[j] for _, j in pairs])
    graph = build_graph(entry.model, (3, *entry.input_size), entry.name)
    layers = args.layers.split(",") if args.layers else None
    eps = parse_eps(args.eps) if args.eps else None
    update, close = progress_bar(f"{args.draws} {args.control} control draws", len(pairs) * (args.draws + 2))
    try:
        comp = compare_with_noise_control(entry, graph, xn, xa, eps, layers, control=args.control, draws=args.draws,
                                          seed=args.seed, batch_size=args.batch_size, progress=update)
    finally:
        close()
    div = diverging_point(comp, rule)
    ids = [(normal.ids[i], adv.ids[j]) for i, j in pairs]
    _print(entry.name, comp, div, args.top)
    if args.json:
        doc = report(entry.model_id, ids, comp, div, args.top)
        try:
            Path(args.json).write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
        except OSError as exc:
            raise AEVisError(f"cannot write {args.json}: {exc}") from exc
        out(f"wrote {args.json}")
    return 0


def _fmt(v: float, spec: str = ".3f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def _print(model: str, comp: NoiseComparison, div: Divergence, top: int) -> None:
    cfg = div.config
    out(f"{model}: {div.n} pair(s), {len(comp.layers)} layers; control {comp.control} (R = {comp.draws} draws), "
        f"rms ×255: adversarial {_fmt(div.rms_adv_255, '.2f')}, control {_fmt(div.rms_control_255, '.2f')}")
    out(f"global test over all layers: p = {_fmt(div.gate_p, '.3g')} (alpha {cfg.alpha}); smallest detectable "
        f"shift {_fmt(div.detectable_z, '.2f')} control sd at this n")
    if div.layer is None:
        why = (f"a persistent run starts at {div.candidate} but the global test does not reject"
               if div.candidate else "no run of " + str(cfg.persist + 1) + " layers below the control")
        out(f"diverging point: none ({why})")
    else:
        e = div.evidence[div.layer]
        out(f"diverging point: {div.layer} (layer {(div.index or 0) + 1} of {len(div.order)} in graph order, "
            f"below for {len(div.run)} layers from there)")
        out(f"  similarity adversarial {_fmt(e.mean_adv)} vs control {_fmt(e.mean_control)}; drop {_fmt(e.effect)} "
            f"[95% CI {_fmt(e.ci_low)}, {_fmt(e.ci_high)}], {_fmt(e.effect_z, '.1f')} control sd; combined p "
            f"{_fmt(e.p_value, '.2g')}, {e.exceed}/{e.n} pairs with p <= alpha; smallest detectable drop "
            f"{_fmt(e.detectable, '.4f')}")
    out(f"most different layers (mean drop of the similarity below the control's, top {top}):")
    out(f"  {'layer':<32} {'adv':>7} {'control':>7} {'drop':>7} {'95% CI':>17} {'p':>9}")
    for e in div.most_different(top):
        out(f"  {e.layer[:32]:<32} {_fmt(e.mean_adv):>7} {_fmt(e.mean_control):>7} {_fmt(e.effect):>7} "
            f"{'[' + _fmt(e.ci_low) + ', ' + _fmt(e.ci_high) + ']':>17} {_fmt(e.p_value, '.2g'):>9}")


def report(model_id: str, pairs: Sequence[tuple[str, str]], comp: NoiseComparison, div: Divergence,
           top: int = 10) -> dict[str, Any]:
    """The JSON document of ``aevis compare``: top-level ``diverging_point`` with its evidence,
    the most different layers, the control and the full per-layer divergence."""
    full = div.to_dict()
    point = {"layer": div.layer, "index": div.index, "run": list(div.run), "candidate": div.candidate,
             "gate_p": full["gate_p"], "alpha": div.config.alpha,
             "evidence": div.evidence[div.layer].to_dict(per_image=True) if div.layer else None}
    return {"model": model_id, "pairs": [list(p) for p in pairs], "diverging_point": point,
            "control": {**full["control"], "draws": comp.draws, "seed": comp.seed},
            "most_different": [e.to_dict() for e in div.most_different(top)], "divergence": full}


def register_compare(sub: Any) -> None:
    """Add ``compare`` to the ``aevis`` sub-command parser."""
    from aevis_core.datapath.control_similarity import DEFAULT_DRAWS
    from aevis_core.datapath.controls import CONTROLS, DEFAULT_CONTROL

    s = sub.add_parser("compare", help="diverging point of normal/adversarial pairs against a noise control")
    s.add_argument("model", help="zoo name or file.py:factory")
    s.add_argument("--normal", required=True, help="normal images: folder, glob, or demo:SET[:CLASS]")
    s.add_argument("--adversarial", required=True, help="their twins, e.g. 'out/*.adv.png' from `aevis attack`")
    s.add_argument("--control", default=DEFAULT_CONTROL, choices=CONTROLS,
                   help="shuffled (default: the perturbation's values permuted per channel, same energy), "
                        "signs (random signs at its rms), uniform (U(-eps, eps)), sign (+-eps)")
    s.add_argument("--draws", type=int, default=DEFAULT_DRAWS, help=f"control draws R per image (default "
                   f"{DEFAULT_DRAWS}: (R + 1) alpha is an integer for alpha 0.05)")
    s.add_argument("--alpha", type=float, default=0.05, help="level of the per-layer and global tests (default 0.05)")
    s.add_argument("--min-effect", type=float, default=0.05,
                   help="smallest mean drop of the cosine similarity counted as below (default 0.05)")
    s.add_argument("--eps", default=None, help="L-inf budget of the uniform/sign controls (default: the largest "
                   "perturbation)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--layers", default=None, help="comma-separated layer ids (default: all)")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--top", type=int, default=5, help="number of most different layers to show (default 5)")
    s.add_argument("--json", default=None, metavar="OUT", help="also write the result as JSON")
    s.set_defaults(func=cmd_compare)
