"""``aevis serve``: run the dashboard with Dash's server (use gunicorn + app.wsgi for a team)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from app.config import AppConfig

log = logging.getLogger(__name__)


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the dashboard; binds 127.0.0.1 unless --host says otherwise."""
    from aevis_core.cli import out
    from aevis_core.models import ZOO

    if args.model and args.model not in ZOO and ":" not in args.model:
        from aevis_core.errors import AEVisError

        raise AEVisError(f"unknown model {args.model!r}: use one of {', '.join(ZOO)} or file.py:factory")
    cfg = AppConfig.from_env(model=args.model, images=args.images, host=args.host, port=args.port,
                             cache_dir=None if args.cache_dir is None else Path(args.cache_dir))
    from app.server.factory import create_app

    app = create_app(cfg)
    out(f"AEVis dashboard on http://{cfg.host}:{cfg.port}/  (model {cfg.model}; Ctrl+C to stop)")
    app.run(host=cfg.host, port=cfg.port, debug=False)
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print ``user:hash`` for AEVIS_USERS_FILE (password read from stdin or a prompt, never argv)."""
    import getpass
    import sys

    from werkzeug.security import generate_password_hash

    from aevis_core.cli import out

    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
    if not password:
        from aevis_core.errors import AEVisError

        raise AEVisError("empty password")
    out(f"{args.user}:{generate_password_hash(password)}")
    return 0


def register_serve(sub: Any) -> None:
    """Add ``serve`` to the ``aevis`` sub-command parser."""
    s = sub.add_parser("serve", help="start the dashboard on the demo (or your model and images)")
    s.add_argument("--model", default=None,
                   help="zoo name or file.py:factory (default $AEVIS_MODEL or efficientnet-lite0)")
    s.add_argument("--images", default=None, help="image folder (default: the demo set of the model's data)")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8050)")
    s.add_argument("--cache-dir", default=None, help="cache folder (default $AEVIS_CACHE_DIR or ./cache)")
    s.set_defaults(func=cmd_serve)
    h = sub.add_parser("hash-password", help="print a user:hash line for AEVIS_USERS_FILE (password on stdin)")
    h.add_argument("user")
    h.set_defaults(func=cmd_hash_password)
