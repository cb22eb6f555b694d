"""``aevis demo`` and ``aevis score``: the README's main job until the dashboard exists."""

from __future__ import annotations

import argparse
import time
from typing import Any

from aevis_core.cli.common import add_common_attack, load_images, out, progress_bar


def cmd_demo(args: argparse.Namespace) -> int:
    """Load the default model and demo images, attack a few, print predictions and scores."""
    import torch

    from aevis_core.attacks import AttackConfig, parse_eps, quantise, run_attack
    from aevis_core.data import demo_path, load_image_set
    from aevis_core.models import default_device, load_model

    t0 = time.perf_counter()
    entry = load_model(args.model, device=default_device())
    demo = "cifar10" if entry.dataset == "cifar10" else "nips2017"
    images = load_image_set(demo_path(demo), name=f"demo:{demo}")
    out(f"AEVis demo: {entry.description or entry.name} on {len(images)} demo images ({demo})")
    x = entry.preprocess_many(images.images)
    probs, pred = entry.predict(x)
    y = torch.tensor([p if lab is None else lab for lab, p in zip(images.labels, pred.tolist(), strict=True)])
    out(f"clean top-1 accuracy: {(pred == y).float().mean().item():.1%}")
    pick = list(range(len(images)))[:: max(1, len(images) // args.n)][: args.n]
    cfg = AttackConfig(method=args.method, eps=parse_eps(args.eps), steps=args.steps, seed=args.seed,
                       batch_size=args.batch_size)
    update, close = progress_bar(f"{cfg.method} eps={args.eps}", len(pick))
    try:
        adv = run_attack(entry.model, x[pick], y[pick], cfg, progress=update)
    finally:
        close()
    adv8 = quantise(adv, x[pick], cfg.eps)[0].float() / 255.0  # what a stored 8-bit PNG holds
    aprobs, apred = entry.predict(adv8)
    scores = _scores(entry, images, x, y, pick, adv8, cfg)
    names = entry.class_names
    out(f"{'image':<18} {'true':<20} {'clean (p)':<28} {'adversarial (p)':<28} {'score clean/adv'}")
    for j, i in enumerate(pick):
        c = f"{names[int(pred[i])][:20]} ({probs[i, pred[i]]:.2f})"
        a = f"{names[int(apred[j])][:20]} ({aprobs[j, apred[j]]:.2f})"
        sc = f"{scores[0][j]:.2f} / {scores[1][j]:.2f}" if scores else "-"
        out(f"{images.ids[i][:18]:<18} {names[int(y[i])][:20]:<20} {c:<28} {a:<28} {sc}")
    fooled = (apred != y[pick]).float().mean().item()
    out(f"MI-FGSM fooled {fooled:.0%} of {len(pick)} images (eps {args.eps}, {args.steps} steps); "
        f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _scores(entry: Any, images: Any, x: Any, y: Any, pick: list[int], adv: Any, cfg: Any) -> Any:
    """Adversarial scores (clean, adversarial) of the picked images, fitted on the other clean images."""
    from aevis_core.scores.fitting import fit_scorer

    rest = [i for i in range(len(images)) if i not in set(pick)]
    scorer = fit_scorer(entry, x[rest], [images.labels[i] for i in rest])
    return scorer.score(entry, x[pick]), scorer.score(entry, adv)


def cmd_score(args: argparse.Namespace) -> int:
    """Score images: fit on reference clean images (demo set by default), print one line per image."""
    from aevis_core.attacks import AttackConfig, parse_eps
    from aevis_core.cache import ResultCache
    from aevis_core.data import demo_path, load_image_set
    from aevis_core.models import default_device, load_model
    from aevis_core.scores.fitting import fit_scorer

    entry = load_model(args.model, device=default_device())
    ref = (load_images(args.fit, dataset=entry.dataset) if args.fit else
           load_image_set(demo_path("cifar10" if entry.dataset == "cifar10" else "nips2017")))
    images = load_images(args.images, dataset=entry.dataset)
    for file, why in images.problems:
        out(f"skipped {file}: {why}")
    attack = None
    if args.fit_attack:
        eps = parse_eps(args.eps or ("8/255" if entry.dataset == "cifar10" else "4/255"))
        attack = AttackConfig(method=args.fit_attack, eps=eps)
    xr = entry.preprocess_many(ref.images)
    cache = None if args.no_cache else ResultCache()
    scorer = fit_scorer(entry, xr, ref.labels, attack, cache)
    x = entry.preprocess_many(images.images)
    update, close = progress_bar("scoring", len(images))
    try:
        scores = scorer.score(entry, x)
        update(len(images), len(images))
    finally:
        close()
    probs, pred = entry.predict(x)
    overlap = set(ref.ids) & set(images.ids) and ref.paths and set(ref.paths) & set(images.paths)
    out(f"{'image':<28} {'prediction (p)':<32} score  ({scorer.mode} scorer fitted on {len(ref)} images)")
    for i in range(len(images)):
        p = f"{entry.class_names[int(pred[i])][:24]} ({probs[i, pred[i]]:.2f})"
        out(f"{images.ids[i][:28]:<28} {p:<32} {scores[i]:.3f}")
    if overlap:
        out("note: some scored images were also used to fit the scorer; their scores are optimistic")
    return 0


def register_demo(sub: Any) -> None:
    """Add ``demo`` (and ``score``) to the ``aevis`` sub-command parser."""
    s = sub.add_parser("demo", help="attack a few demo images and print predictions and scores")
    s.add_argument("--model", default="efficientnet-lite0", help="model (default efficientnet-lite0)")
    s.add_argument("--n", type=int, default=6, help="number of images to attack (default 6)")
    add_common_attack(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("score", help="adversarial score per image (0 = looks clean, 1 = looks adversarial)")
    s.add_argument("model", help="zoo name or file.py:factory")
    s.add_argument("images", help="image folder, glob-free; or demo:cifar10 / demo:nips2017")
    s.add_argument("--fit", default=None, help="clean reference images (default: the demo set of the model's data)")
    s.add_argument("--fit-attack", default=None, help="also fit with this attack's examples, e.g. mifgsm")
    s.add_argument("--eps", default=None, help="eps of --fit-attack (default 4/255 ImageNet, 8/255 CIFAR)")
    s.add_argument("--no-cache", action="store_true")
    s.set_defaults(func=cmd_score)
