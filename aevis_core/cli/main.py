"""``aevis`` command line: models, graph, attack, extract, compare, score, demo.

User errors (bad model, bad images, bad options) print one line ``aevis: error: ...`` and exit
with code 2, never a traceback. Long work shows a tqdm progress bar on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aevis_core.cli.basic import register_basic
from aevis_core.cli.compare import register_compare
from aevis_core.cli.demo import register_demo
from aevis_core.cli.extract import register_extract
from aevis_core.errors import AEVisError


def build_parser(extra: Callable[[Any], None] | None = None) -> argparse.ArgumentParser:
    """The argparse tree of ``aevis``; ``extra(subparsers)`` adds commands (the app adds ``serve``)."""
    p = argparse.ArgumentParser(prog="aevis", description="AEVis: why do networks misclassify adversarial examples?")
    p.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = p.add_subparsers(dest="command", required=True)
    register_basic(sub)
    register_demo(sub)
    register_extract(sub)
    register_compare(sub)
    if extra is not None:
        extra(sub)
    return p


def main(argv: Sequence[str] | None = None, extra: Callable[[Any], None] | None = None) -> int:
    """Entry point of the ``aevis`` command line; returns the exit code."""
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except AEVisError as exc:
        sys.stderr.write(f"aevis: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("aevis: interrupted\n")
        return 130
