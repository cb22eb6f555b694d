"""A background job whose process died reads as an error (not as idle); a cancel does not."""

from __future__ import annotations

import subprocess
import sys

import diskcache

from app.manager import DIED, ReportingDiskcacheManager, error_outputs


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
