"""Faults: restart reuses the cache, a full or unwritable cache, two users at once, time limits."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import diskcache
import pytest

from aevis_core.errors import AEVisError
from app.config import AppConfig
from app.jobs.manager import ReportingDiskcacheManager, timed_out_message

pytestmark = pytest.mark.slow


def make_services(cache_dir: Path):
    from app.services import Services

    return Services.create(AppConfig(model="cifar-resnet20", cache_dir=cache_dir, max_images=20))


def no_report(_d: int, _t: int, _s: str) -> None:
    pass


def pool_key(svc) -> str:
    return svc.pools.prepare("demo", no_report)


def cat_groups(svc) -> dict[str, list[str]]:
    from app.levels.groups.presets import presets

    found = presets(svc.pools.get(pool_key(svc)))
    return found[sorted(found)[0]]


def analyze(svc, groups):
    return svc.analyses.run(groups, pool_key(svc), no_report)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A cache folder with the pool of 20 CIFAR images and one analysis (computed once)."""
    cache_dir = tmp_path_factory.mktemp("warm")
    svc = make_services(cache_dir)
    return cache_dir, analyze(svc, cat_groups(svc))


def forbid_compute(monkeypatch):
    import aevis_core.analysis as an

    def boom(*_a, **_k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(an, "_compute_analysis", boom)
    monkeypatch.setattr("app.services.pools.build_pool", boom)


def test_restart_loads_analysis_from_cache_without_recomputing(warm, monkeypatch):
    cache_dir, first = warm
    forbid_compute(monkeypatch)
    svc = make_services(cache_dir)  # a new process's services: nothing in memory
    again = analyze(svc, cat_groups(svc))
    assert again.key == first.key and list(again.datapaths) == list(first.datapaths)
    for name, dp in first.datapaths.items():
        assert again.datapaths[name].layers.keys() == dp.layers.keys()


def test_full_cache_gives_a_clear_message_and_keeps_serving(warm, monkeypatch, tmp_path):
    cache_dir, first = warm
    svc = make_services(cache_dir)
    groups = cat_groups(svc)  # what is already cached keeps working

    def full(*_a, **_k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(svc.store.cache.cache, "set", full)
    groups = {k: v[:3] for k, v in groups.items()}  # a new analysis: must be stored
    with pytest.raises(AEVisError) as err:
        analyze(svc, groups)
    msg = str(err.value)
    assert "could not be saved" in msg and "database or disk is full" in msg and "\n" not in msg
    assert svc.analyses.get(first.key).key == first.key  # the old analysis still loads


def test_unreadable_cache_reads_as_a_miss(tmp_path, monkeypatch):
    from aevis_core.cache import ResultCache

    c = ResultCache(tmp_path / "r")
    assert c.put("k", 1) and c.get("k") == 1

    def broken(*_a, **_k):
        raise sqlite3.DatabaseError("file is not a database")

    monkeypatch.setattr(c.cache, "get", broken)
    assert c.get("k") is None


def test_unwritable_cache_folder_falls_back_with_a_banner(tmp_path):
    from app.server.factory import create_app

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    app = create_app(AppConfig(model="cifar-resnet20", cache_dir=blocker / "cache", max_images=20))
    cfg = app.server.config["AEVIS_CONFIG"]
    assert cfg.cache_dir != blocker / "cache" and cfg.results_dir.is_dir() and cfg.jobs_dir.is_dir()
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    layout = json.dumps(client.get("/_dash-layout").get_json(), ensure_ascii=False)
    assert f"The cache folder {blocker / 'cache'} is not writable (Not a directory)" in layout.replace("\\/", "/")


def _analyze_in_process(cache_dir: str, groups: dict[str, list[str]], counter: str) -> str:
    import aevis_core.analysis as an

    real = an._compute_analysis

    def counted(*a, **k):
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(1.0)  # make the two jobs overlap
        return real(*a, **k)

    an._compute_analysis = counted
    return analyze(make_services(Path(cache_dir)), groups).key


def test_two_users_same_analysis_computed_once(warm, tmp_path):
    cache_dir, _ = warm
    groups = {k: v[:4] for k, v in cat_groups(make_services(cache_dir)).items()}  # not computed yet
    counter = tmp_path / "count"
    ctx = multiprocessing.get_context("spawn")  # fork after torch threads may hang
    with ctx.Pool(2) as p:
        keys = p.starmap(_analyze_in_process, [(str(cache_dir), groups, str(counter))] * 2)
    assert keys[0] == keys[1]
    assert counter.read_text() == "x"  # the second job waited for the first and read its result
    assert make_services(cache_dir).analyses.get(keys[0]).groups == groups


def test_killed_lock_holder_does_not_block(tmp_path):
    """The per-key lock is an flock: a holder killed mid-computation releases it."""
    from aevis_core.cache import ResultCache

    code = ("import sys, time; from aevis_core.cache import ResultCache\n"
            "c = ResultCache(sys.argv[1])\n"
            "with c.computing('k'):\n    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    p.kill()
    p.wait()
    t = time.time()
    with ResultCache(tmp_path).computing("k"):
        pass
    assert time.time() - t < 5


def test_job_past_the_time_limit_is_ended_and_reported(tmp_path):
    m = ReportingDiskcacheManager(diskcache.Cache(str(tmp_path)), job_timeout=0.5)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    m.handle.set(f"aevis-started-{p.pid}", time.time())
    assert m.get_result("k", p.pid) is m.UNDEFINED  # within the limit: still running
    time.sleep(0.7)
    out = m.get_result("k", p.pid)
    assert out["background_callback_error"]["msg"] == timed_out_message(0.5)
    p.wait(timeout=10)  # ended long before its 60 s sleep (raises TimeoutExpired otherwise)
    assert m.get_result("k", p.pid)["background_callback_error"]["msg"] == timed_out_message(0.5)


def test_each_request_gets_its_own_result_key(tmp_path):
    m = ReportingDiskcacheManager(diskcache.Cache(str(tmp_path)))

    def fn(x):
        return x

    a = m.build_cache_key(fn, [1, {"g": ["a"]}], [], None)
    b = m.build_cache_key(fn, [1, {"g": ["a"]}], [], None)
    assert a != b and a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0]


def test_the_datapath_method_is_part_of_the_analysis(warm):
    cache_dir, first = warm
    svc = make_services(cache_dir)
    other = svc.analyses.run(cat_groups(svc), pool_key(svc), no_report, method="gradxact_topk")
    assert other.key != first.key
    assert {dp.config.method for dp in other.datapaths.values()} == {"gradxact_topk"}
    assert {dp.config.method for dp in first.datapaths.values()} == {"qp"}


def test_the_configured_group_size_limit_is_the_one_checked(warm):
    from app.services import Services

    cache_dir, _ = warm
    svc = Services.create(AppConfig(model="cifar-resnet20", cache_dir=cache_dir, max_images=20,
                                    max_analysis_images=5))
    with pytest.raises(AEVisError, match="the limit per analysis is 5"):
        svc.analyses.run(cat_groups(svc), pool_key(svc), no_report)
