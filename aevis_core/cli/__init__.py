"""``aevis`` command line, one module per group of commands (no cycle: all import :mod:`.common`).

``main(argv, extra)`` runs it (``extra(subparsers)`` adds commands: the app adds ``serve``);
``out(line)`` writes one line of command output. Commands: :mod:`.basic` (models, graph,
attack), :mod:`.extract`, :mod:`.compare` (the diverging point of normal/adversarial pairs),
:mod:`.demo` (demo, score).
"""

from aevis_core.cli.common import load_images, out, progress_bar
from aevis_core.cli.main import build_parser, main

__all__ = ["build_parser", "load_images", "main", "out", "progress_bar"]
