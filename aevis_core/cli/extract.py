"""``aevis extract``: datapaths of one or more named image sets, written as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from aevis_core.cli.common import load_set, out, parse_set, progress_bar
from aevis_core.errors import AEVisError


def cmd_extract(args: argparse.Namespace) -> int:
    """Extract each set's datapath (cached), print a summary, write JSON."""
    from aevis_core.cache import ResultCache
    from aevis_core.datapath.extract import ExtractConfig, datapath_to_dict
    from aevis_core.datapath.service import cached_datapath
    from aevis_core.graph import build_graph
    from aevis_core.models import default_device, load_model

    sets = [parse_set(s) for s in args.set]
    if len({n for n, _ in sets}) != len(sets):
        raise AEVisError("set names must be unique")
    target: str | int = int(args.target) if args.target.isdigit() else args.target
    cfg = ExtractConfig(method=args.method, score=args.score, normalize=args.normalize,
                        lam_mode=args.lam_mode, rho=args.rho,
                        threshold=args.threshold, top_k=args.top_k, target=target,
                        batch_size=args.batch_size).validate()
    entry = load_model(args.model, device=default_device())
    graph = build_graph(entry.model, (3, *entry.input_size), entry.name)
    layers = args.layers.split(",") if args.layers else None
    cache = None if args.no_cache else ResultCache(Path(args.cache_dir) / "results" if args.cache_dir else None)
    result: dict[str, Any] = {"model": entry.model_id, "graph": graph.to_dict(), "sets": {}}
    datapaths = {}
    for name, pattern in sets:
        images = load_set(name, pattern, entry.dataset)
        for file, why in images.problems:
            out(f"skipped {file}: {why}")
        x = entry.preprocess_many(images.images)
        update, close = progress_bar(f"datapath {name}", len(images))
        try:
            dp, hit = cached_datapath(entry, graph, x, cfg, cache, layers, images.labels, update)
        finally:
            close()
        datapaths[name] = dp
        sizes = [len(v.critical) for v in dp.layers.values()]
        out(f"{name}: {len(images)} images, {len(dp.layers)} layers, mean {sum(sizes) / len(sizes):.1f} "
            f"critical maps per layer{' (cached)' if hit else ''}")
        result["sets"][name] = {"ids": images.ids, **datapath_to_dict(dp)}
    if len(datapaths) > 1:
        from aevis_core.datapath.similarity import layer_stats

        result["statistics"] = layer_stats(datapaths).to_dict()
    Path(args.out).write_text(json.dumps(result))
    out(f"wrote {args.out}")
    return 0


def register_extract(sub: Any) -> None:
    """Add ``extract`` to the ``aevis`` sub-command parser."""
    from aevis_core.datapath.extract import METHODS

    s = sub.add_parser("extract", help="extract datapaths of image sets to JSON")
    s.add_argument("model", help="zoo name or file.py:factory")
    s.add_argument("--set", action="append", required=True, metavar="NAME=PATTERN",
                   help="a named image set: folder, glob of files, or demo:nips2017[:class]; repeat")
    s.add_argument("--method", default="qp", help=f"one of {', '.join(METHODS)} (default qp)")
    s.add_argument("--score", default="prob", help="prob (default) or logit")
    s.add_argument("--normalize", default="l1", help="l1 (default) or none: per-image normalisation of q")
    s.add_argument("--lam-mode", default="relative",
                   help="relative (default): lambda = rho * tr(Q) / n; paper: lambda = 0.1 / n^2")
    s.add_argument("--rho", type=float, default=0.1, help="rho of the relative lambda (default 0.1)")
    s.add_argument("--threshold", type=float, default=0.5, help="critical if z > threshold (default 0.5)")
    s.add_argument("--top-k", type=int, default=None, help="critical = the k largest z instead")
    s.add_argument("--target", default="pred", help="pred (default), true, or a class index")
    s.add_argument("--layers", default=None, help="comma-separated layer ids (default: all)")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--cache-dir", default=None, help="cache folder (default $AEVIS_CACHE_DIR or ./cache)")
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--out", required=True, help="output JSON file")
    s.set_defaults(func=cmd_extract)
