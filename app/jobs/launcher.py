"""Fork server for diskcache-backend jobs: every job is forked from a single-threaded process.

Dash's DiskcacheManager forks each job from the web process. Under gunicorn's threaded workers
that process has other threads, and a fork copies whatever locks they hold at that instant:
Python locks (e.g. a lazily loaded model), torch's OpenMP thread pool, SQLite's mutexes. The
child then hangs forever (seen under ``bench/load.py``: 8 of 20 sessions had a hung job).

:class:`JobLauncher` is forked once, when the app has been built and before any request thread
or torch computation exists; it only waits on a pipe. Each job is a fork of *it*: imports are
already done (a job starts in milliseconds), nothing is half-locked, and the model loads lazily
in the job. The job's pid goes back to the manager, which polls and kills it as before (the
launcher ignores SIGCHLD, so finished jobs leave no zombies). The launcher exits when the web
process closes the pipe (exit or crash). multiprocessing's ``forkserver`` would re-import the
app per server and cannot take Dash's job closures without pickling them; this keeps both.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)
Registry = dict[str, Callable[..., Any]]


def _run_job(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """In the job process: run the Dash job function, then exit without running atexit hooks."""
    code = 0
    try:
        fn(*args)
    except BaseException:  # noqa: BLE001 - the job's own errors are stored by Dash's job_fn
        log.exception("job crashed")
        code = 1
    finally:
        os._exit(code)


def _serve(conn: Connection, registry: Registry) -> None:
    """The launcher loop: receive (registry key, args), fork a job, answer its pid."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # auto-reap finished jobs
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C goes to the web process; EOF ends us
    while True:
        try:
            key, args = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        fn = registry.get(key)
        if fn is None:
            conn.send(("error", f"unknown job function {key[:12]}"))
            continue
        pid = os.fork()
        if pid == 0:
            conn.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _run_job(fn, args)
        conn.send(("ok", pid))


class JobLauncher:
    """Client side of the fork server (thread-safe)."""

    def __init__(self, registry: Registry) -> None:
        ours, theirs = Pipe()
        box: dict[str, int] = {}

        def fork() -> None:
            pid = os.fork()
            if pid == 0:  # the launcher
                ours.close()
                try:
                    _serve(theirs, registry)
                finally:
                    os._exit(0)
            box["pid"] = pid

        # Fork from a fresh thread: OpenMP (libgomp) keeps its worker pool per calling thread, and
        # a child that inherits the stale pool of a thread that ran torch hangs in its first
        # parallel op. A thread that never ran one gives the launcher (and its jobs) a clean slate.
        t = threading.Thread(target=fork, name="aevis-launcher-fork")
        t.start()
        t.join()
        theirs.close()
        pid = box["pid"]
        self.pid = pid
        self._conn = ours
        self._lock = threading.Lock()
        log.info("job launcher %d started (%d job functions)", pid, len(registry))

    def start(self, key: str, args: tuple[Any, ...]) -> int:
        """Fork a job running ``registry[key](*args)``; its pid."""
        with self._lock:
            self._conn.send((key, args))
            status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        return int(value)

    def close(self) -> None:
        """Stop the launcher (running jobs go on)."""
        with self._lock:
            self._conn.close()
