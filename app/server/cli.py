"""The ``aevis`` console script: the library's commands plus ``serve`` (the dashboard)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aevis_core.cli import main as core_main
from app.server.serve import register_serve


def main(argv: Sequence[str] | None = None) -> int:
    """``aevis ...`` with ``serve`` available."""
    return core_main(argv, extra=register_serve)


if __name__ == "__main__":
    sys.exit(main())
