"""A background job whose process died reads as an error (not as idle); a cancel does not."""

from __future__ import annotations

import subprocess
import sys

import diskcache

from app.jobs.manager import DIED, ReportingDiskcacheManager
from app.jobs.widgets import error_outputs


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_dead_job_is_an_error_and_cancel_is_not(tmp_path):
    m = ReportingDiskcacheManager(diskcache.Cache(str(tmp_path)))
    died = m.get_result("k1", dead_pid())
    assert died["background_callback_error"]["msg"] == DIED
    cancelled = dead_pid()
    m.terminate_job(cancelled)
    assert m.get_result("k2", cancelled) is m.UNDEFINED
    m.handle.set("k3", "value")
    assert m.get_result("k3", dead_pid()) == "value"  # a finished job's result wins


def test_error_outputs_keep_other_outputs():
    from dash import no_update

    out = error_outputs(3, 2)(RuntimeError("An error occurred inside a background callback: boom\ntrace"))
    assert out[:2] == [no_update, no_update] and out[2] == "boom"


def test_result_stored_just_before_the_job_exits_is_not_a_death(tmp_path, monkeypatch):
    """Race: the first read misses, the job stores its result and exits, then the liveness check runs."""
    m = ReportingDiskcacheManager(diskcache.Cache(str(tmp_path)))
    real = diskcache.Cache.get
    calls = []

    def get(self, key, *a, **k):
        calls.append(key)
        if key == "k" and calls.count("k") == 1:  # the job finishes right after this read
            value = real(self, key, *a, **k)
            self.set("k", "late value")
            return value
        return real(self, key, *a, **k)

    monkeypatch.setattr(diskcache.Cache, "get", get)
    assert m.get_result("k", dead_pid()) == "late value"
