"""One-line messages for the UI: what happened and what to do, never a traceback or raw exception text."""

from __future__ import annotations

import errno
import logging

from aevis_core.errors import AEVisError

log = logging.getLogger(__name__)


def user_message(exc: BaseException) -> str:
    """The AEVisError text, a disk message for a full/read-only disk, else a generic note (logged in full)."""
    if isinstance(exc, AEVisError):
        return str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the server's disk is full: free space in the cache folder, then retry"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the server cannot write its cache folder (read-only or no permission): fix it, then retry"
    log.error("unexpected error", exc_info=exc)
    return f"internal error ({type(exc).__name__}); the server log has the details"
