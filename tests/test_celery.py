"""Celery + Redis mode: the same background callbacks through a real worker; a killed worker is
reported, never silently stuck. The test starts redis-server and the workers itself."""

from __future__ import annotations

import time

import pytest

from app.config import AppConfig
from app.dash_client import DashClient
from app.jobs.celery_backend import LOST, NO_WORKER
from tests.services import POOL, Worker, redis_server, run_demo, serve, worker_env

pytestmark = pytest.mark.slow
GENERATE = [("pool-result", "data"), ("generate-error", "children")]


def generate(c: DashClient, pool_key: str, method: str, steps: int) -> dict:
    return c.call(GENERATE, [("generate", "n_clicks", 1)], [
        ("gen-method", "value", method), ("gen-eps", "value", "8/255"), ("gen-steps", "value", steps),
        ("gen-source", "value", None), ("image-set", "value", "demo")])


@pytest.fixture(scope="module")
def celery_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("celery")
    with redis_server(d) as redis_url:
        cfg = AppConfig(model="cifar-resnet20", cache_dir=d / "cache", max_images=20, job_backend="celery",
                        redis_url=redis_url, heartbeat_s=1.0)  # web side: a lost worker is noticed after ~6 s
        env = worker_env(cfg, AEVIS_HEARTBEAT_S="1")
        workers = [Worker(env, d / "worker-1.log", "w1")]
        try:
            with serve(cfg) as url:
                yield url, cfg, env, d, workers
        finally:
            for w in workers:
                w.stop()


def test_celery_results_identical_to_diskcache(celery_setup, tmp_path):
    url, _, _, d, _ = celery_setup
    celery_pool, celery_key, celery_summary = run_demo(url)
    log = (d / "worker-1.log").read_text()
    assert "succeeded" in log and "background_callback_" in log  # the worker really ran the jobs
    with serve(AppConfig(model="cifar-resnet20", cache_dir=tmp_path / "cache", max_images=20)) as local:
        disk_pool, disk_key, disk_summary = run_demo(local)
    assert (celery_pool, celery_key) == (disk_pool, disk_key)  # content keys: same inputs, same method
    assert celery_summary == disk_summary
    from aevis_core.cache import ResultCache

    a = ResultCache(d / "cache" / "results").get(celery_key)
    b = ResultCache(tmp_path / "cache" / "results").get(disk_key)
    for name in a.datapaths:
        for layer, dp in a.datapaths[name].layers.items():
            assert dp.critical == b.datapaths[name].layers[layer].critical
    assert a.divergence.to_dict() == b.divergence.to_dict()


def wait_for_heartbeat(redis_url: str, timeout: float = 60, gone: bool = False) -> None:
    """Until a job's heartbeat key exists (``gone``: until none does)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    end = time.time() + timeout
    while time.time() < end:
        if bool(r.keys("aevis-heartbeat-*")) != gone:
            return
        time.sleep(0.1)
    raise AssertionError("no job started" if not gone else "heartbeat still there")


def test_killed_worker_is_reported_and_retry_works(celery_setup):
    import concurrent.futures as cf

    url, cfg, env, d, workers = celery_setup
    c = DashClient(url, poll_s=0.25, job_timeout=120)
    c.load()
    pool_key = c.call(POOL, [("url", "pathname", "/"), ("image-set", "value", "demo")],
                      changed=[])["pool-result"]["data"]["pool_key"]
    with cf.ThreadPoolExecutor(1) as ex:
        # 1. the pool process running the job is killed: Celery marks it WorkerLostError
        job = ex.submit(generate, c, pool_key, "cw", 200)
        wait_for_heartbeat(cfg.redis_url)
        for pid in workers[0].pool_children():
            import os
            import signal

            os.kill(pid, signal.SIGKILL)
        out = job.result(timeout=90)
        assert out["generate-error"]["children"] == LOST and "pool-result" not in out
        # 2. the whole worker is killed (nothing left to report): the heartbeat expires
        workers[0].wait_for("ready", 5)
        wait_for_heartbeat(cfg.redis_url, gone=True)  # the killed job's key has expired
        job = ex.submit(generate, c, pool_key, "cw", 200)
        wait_for_heartbeat(cfg.redis_url)
        workers[0].kill()
        t = time.time()
        out = job.result(timeout=90)
        assert out["generate-error"]["children"] == LOST and time.time() - t < 30
        # 3. no worker at all: a queued job is reported, not left waiting
        out = generate(c, pool_key, "fgsm", 1)
        assert out["generate-error"]["children"] == NO_WORKER
    # 4. a new worker: the retry works
    workers.append(Worker(env, d / "worker-2.log", "w2"))
    out = generate(c, pool_key, "fgsm", 1)
    new = out["pool-result"]["data"]
    assert out["generate-error"]["children"] == "" and new["pool_key"] not in (None, pool_key)
    info = c.call([("model-info", "children"), ("filter-class", "options"), ("gen-source", "options")],
                  [("pool-result", "data", new), ("image-set", "value", "demo")])
    assert "20 FGSM twins" in info["model-info"]["children"]
