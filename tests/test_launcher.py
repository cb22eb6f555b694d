"""The job launcher (fork server): jobs fork from a process that holds no other thread's locks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from app.jobs.launcher import JobLauncher

LOCK = threading.Lock()


def write_under_lock(path: str, text: str) -> None:
    with LOCK:  # a lock another thread of the web process may hold at the moment of the fork
        Path(path).write_text(f"{text} {os.getpid()}")


def wait_file(path: Path, timeout: float = 15) -> str:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"job did not finish: {path}")


def test_job_runs_even_while_another_thread_holds_a_lock(tmp_path):
    launcher = JobLauncher({"w": write_under_lock})
    try:
        held, release = threading.Event(), threading.Event()

        def holder() -> None:
            with LOCK:
                held.set()
                release.wait(30)

        t = threading.Thread(target=holder)
        t.start()
        held.wait(5)
        pid = launcher.start("w", (str(tmp_path / "out"), "done"))  # a plain fork now would hang forever
        assert wait_file(tmp_path / "out") == f"done {pid}"
        release.set()
        t.join()
    finally:
        launcher.close()


def test_unknown_function_and_exit_on_close(tmp_path):
    launcher = JobLauncher({"w": write_under_lock})
    with pytest.raises(RuntimeError, match="unknown job function"):
        launcher.start("nope", ())
    pid = launcher.start("w", (str(tmp_path / "a"), "x"))
    wait_file(tmp_path / "a")
    end = time.time() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.time() < end:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid)  # finished jobs are reaped (no zombies left for the poller)
    launcher.close()
    proc = psutil.Process(launcher.pid)
    proc.wait(timeout=10)  # the launcher ends when the web process closes its pipe


def torch_job(path: str) -> None:
    import torch

    from aevis_core.models import load_model

    e = load_model("cifar-resnet20")
    e.model(torch.rand(8, 3, 32, 32))
    Path(path).write_text(str(torch.get_num_threads()))


def test_jobs_use_torch_after_this_thread_did(tmp_path):
    """libgomp keeps its pool per thread: a launcher forked from a thread that ran torch would hang."""
    import torch

    from aevis_core.models import load_model

    load_model("cifar-resnet20").model(torch.rand(64, 3, 32, 32))  # the OpenMP pool of this thread exists
    launcher = JobLauncher({"t": torch_job})
    try:
        launcher.start("t", (str(tmp_path / "t"),))
        assert int(wait_file(tmp_path / "t", timeout=60)) == torch.get_num_threads()
    finally:
        launcher.close()
