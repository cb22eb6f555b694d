"""``aevis models``, ``aevis graph`` and ``aevis attack``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from aevis_core.cli.common import add_common_attack, load_images, out, progress_bar

if TYPE_CHECKING:
    from aevis_core.attacks import AttackConfig


def cmd_models(args: argparse.Namespace) -> int:
    """List the built-in models."""
    from aevis_core.models import DEFAULT_MODEL, list_models

    for name, dataset, desc in list_models():
        mark = "*" if name == DEFAULT_MODEL else " "
        out(f"{mark} {name:<20} {dataset:<9} {desc}")
    out("  (* default; also file.py:factory, package.module:factory, torchvision:<name>)")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Print the layer graph of a model (text summary or JSON)."""
    from aevis_core.graph import build_graph
    from aevis_core.models import load_model

    entry = load_model(args.model)
    g = build_graph(entry.model, (3, *entry.input_size), entry.name)
    if args.json:
        out(json.dumps(g.to_dict(), indent=1))
        return 0
    concat = len(g.blocks_of("concat"))
    out(f"{entry.name}: {len(g.nodes)} layers, {len(g.blocks_of('residual'))} residual blocks"
        + (f", {concat} concatenations" if concat else "") + ", "
        f"{'traced with torch.fx' if g.traced else 'hook fallback'}")
    if g.warning:
        out(f"warning: {g.warning}")
    for n in g.nodes.values():
        shape = "x".join(map(str, n.shape))
        out(f"  {n.order:>4} {n.id:<40} {n.op:<7} {shape:<14} <- {', '.join(n.inputs)}")
    return 0


def _attack_config(args: argparse.Namespace) -> AttackConfig:
    from aevis_core.attacks import AttackConfig, parse_eps, validate_config

    return validate_config(AttackConfig(
        method=args.method, eps=parse_eps(args.eps), steps=args.steps,
        targeted=args.target is not None, seed=args.seed, batch_size=args.batch_size))


def cmd_attack(args: argparse.Namespace) -> int:
    """Craft adversarial images (white-box, or transfer with --source-model) and store them."""
    import torch

    from aevis_core.attacks import images_to_tensor, load_adversarial, run_attack, save_adversarial
    from aevis_core.models import default_device, load_model

    cfg = _attack_config(args)
    device = default_device()
    entry = load_model(args.model, device=device)
    source = load_model(args.source_model, device=device) if args.source_model else entry
    images = load_images(args.images, dataset=entry.dataset)
    if args.limit:
        images = images.subset(range(min(args.limit, len(images))))
    x = source.preprocess_many(images.images)
    _, src_pred = source.predict(x)
    y = torch.tensor([p if lab is None else lab for lab, p in zip(images.labels, src_pred.tolist(), strict=True)])
    target = torch.full_like(y, args.target) if args.target is not None else None
    update, close = progress_bar(f"{cfg.method} on {source.name}", len(y))
    try:
        adv = run_attack(source.model, x, y, cfg, target=target, progress=update)
    finally:
        close()
    records = save_adversarial(args.out, images.ids, adv, x, cfg, source, labels=y.tolist(), target=target)
    stored, all_records = load_adversarial(args.out)
    by_id = {r.id: im for r, im in zip(all_records, stored, strict=True)}
    xa = images_to_tensor([by_id[r.id] for r in records])
    _, clean_pred = entry.predict(entry.preprocess_many(images.images))
    _, adv_pred = entry.predict(xa if entry is source else entry.preprocess_many([by_id[r.id] for r in records]))
    names = entry.class_names
    out(f"{'image':<24} {'true':<18} {'clean':<18} {'adversarial':<18} linf*255")
    for i, r in enumerate(records):
        out(f"{images.ids[i][:24]:<24} {names[int(y[i])][:18]:<18} {names[int(clean_pred[i])][:18]:<18} "
            f"{names[int(adv_pred[i])][:18]:<18} {r.linf * 255:.1f}")
    acc_c = (clean_pred == y).float().mean().item()
    acc_a = (adv_pred == y).float().mean().item()
    where = f"transfer {source.name} -> {entry.name}" if source is not entry else f"white-box {entry.name}"
    out(f"accuracy ({where}): clean {acc_c:.1%}, adversarial {acc_a:.1%} (on the stored 8-bit PNGs in {args.out})")
    return 0


def register_basic(sub: Any) -> None:
    """Add ``models``, ``graph`` and ``attack`` to the ``aevis`` sub-command parser."""
    s = sub.add_parser("models", help="list the built-in models")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("graph", help="print a model's layer graph")
    s.add_argument("model", help="zoo name, file.py:factory or package.module:factory")
    s.add_argument("--json", action="store_true", help="print the graph as JSON")
    s.set_defaults(func=cmd_graph)

    s = sub.add_parser("attack", help="craft adversarial images and store them losslessly")
    s.add_argument("model", help="model to evaluate on (and attack, unless --source-model)")
    s.add_argument("images", help="image folder, or demo:cifar10 / demo:nips2017")
    add_common_attack(s)
    s.add_argument("--source-model", default=None, help="craft on this model instead (black-box transfer)")
    s.add_argument("--limit", type=int, default=None, help="attack only the first N images")
    s.add_argument("--out", required=True, help="output folder for PNGs + manifest.json")
    s.set_defaults(func=cmd_attack)
