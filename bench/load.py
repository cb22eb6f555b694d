"""Load test: concurrent simulated sessions against the dashboard served by gunicorn, over HTTP.

1. Prepares (or reuses) the pool and one analysis (the first preset) in a cache folder (warm cache).
2. Starts ``gunicorn -c python:app.server.gunicorn_conf app.server.wsgi:server`` on a loopback port, configured by
   ``AEVIS_*`` variables matching that cache, and waits until ``/`` answers.
3. Runs N sessions in threads, each an :class:`app.dash_client.DashClient` (own page load, own
   signed ``end_id``): pool via the background ``pool`` callback, Analyze (background, cache hit),
   then random view changes until time is up, each followed by the callbacks the renderer chains
   after it: statistic / lambda -> layer graph (+ overview, refit); layer tap -> focus -> layer
   graph + treemap; k / colour -> treemap; cluster click -> neuron heat maps + top patches; image
   filters -> image list. ``--think-s`` is the mean pause between two user actions.
4. Prints sessions, requests, errors (first few), throughput and p50 / p95 / max latency overall and
   per view; exit code 1 on any error. gunicorn is stopped at the end (also on Ctrl+C).

Usage: python bench/load.py [--sessions 20] [--seconds 60] [--workers 2] [--threads 4]
       [--model cifar-resnet20] [--cache-dir /tmp/aevis-bench-load] [--port 0] [--think-s 0.5]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import requests

from aevis_core.cli import out
from app.dash_client import DashClient

ROOT = Path(__file__).resolve().parent.parent
MAX_SESSIONS, MAX_SECONDS = 50, 300


def warm(cfg: Any) -> tuple[str, str]:
    """Pool + analysis of the first preset in ``cfg``'s cache; returns (pool key, preset name)."""
    from app.levels.groups.presets import presets
    from app.services import Services

    services = Services.create(cfg)
    pool_key = services.pools.prepare("demo", lambda d, t, s: None)
    name, groups = next(iter(presets(services.pools.require(pool_key)).items()))
    services.analyses.run(groups, pool_key, lambda d, t, s: None)
    return pool_key, name


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_gunicorn(args: argparse.Namespace, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "gunicorn"
    cmd = [str(exe) if exe.exists() else (shutil.which("gunicorn") or "gunicorn"),
           "-c", "python:app.server.gunicorn_conf", "app.server.wsgi:server"]
    env = dict(os.environ, AEVIS_HOST=args.host, AEVIS_PORT=str(port), AEVIS_MODEL=args.model,
               AEVIS_CACHE_DIR=str(args.cache_dir), AEVIS_MAX_IMAGES=str(args.max_images),
               AEVIS_WORKERS=str(args.workers), AEVIS_THREADS=str(args.threads))
    with open(log_path, "wb") as logf:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with code {proc.returncode}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> list[int]:
    """SIGTERM to the gunicorn master we started (graceful), SIGKILL after 40 s; then SIGKILL any of
    its descendants (job processes) still alive. Returns the pids of those leftovers."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in left:
        p.kill()
    psutil.wait_procs(left, timeout=5)
    return [p.pid for p in left]


class Stats:
    """Latencies per view and errors, shared by the session threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []

    def timed(self, view: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            with self.lock:
                self.times[view].append((time.perf_counter() - t) * 1000)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


LAYER_GRAPH = [("layer-graph", "elements"), ("layer-graph", "stylesheet"), ("layer-title", "children")]
TREEMAP = [("fmap-treemap", "figure"), ("fmap-title", "children")]
NEURON = [("neuron-heatmaps", "figure"), ("neuron-title", "children")]


def session(base: str, preset: str, stats: Stats, deadline: float, think_s: float, seed: int) -> None:
    """One simulated user: page load, pool, Analyze, then random view changes until ``deadline``.

    Callbacks are fired from the client's page state (:meth:`DashClient.fire`: values from the
    layout and earlier answers), so the session follows the app's current inputs and states.
    """
    rnd = random.Random(seed)
    c = DashClient(base, job_timeout=60)

    def fire(view: str, outputs: list[tuple[str, str]], values: dict[str, Any] | None = None,
             changed: list[str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = stats.timed(view, c.fire, outputs, values, changed)
        return result

    try:
        stats.timed("page load (3 GETs)", c.load)
        o = fire("pool (background)", [("pool-result", "data"), ("pool-error", "children")], changed=[])
        if not o.get("pool-result", {}).get("data"):
            raise RuntimeError(f"pool callback returned no pool: {o}")
        o = fire("pool ready", [("model-info", "children"), ("filter-class", "options"), ("gen-source", "options")],
                 changed=["pool-result.data"])
        classes = [x["value"] for x in o["filter-class"]["options"]]
        fire("presets", [("preset", "options")], changed=["pool-result.data"])
        fire("groups (preset)", [("groups", "data"), ("groups-hint", "children")], {"preset.value": preset})
        fire("context", [("context", "data")], changed=["groups.data"])
        o = fire("analyze (background)", [("analysis-result", "data"), ("analyze-error", "children")],
                 {"analyze.n_clicks": 1})
        if not o.get("analysis-result", {}).get("data"):
            raise RuntimeError(f"Analyze returned no analysis: {o}")
        fire("context", [("context", "data")], changed=["analysis-result.data"])
        fire("cut and focus", [("cut", "data"), ("focus-layer", "data")], changed=["context.data"])
    except Exception as exc:  # noqa: BLE001 - counted and reported
        stats.error(f"session {seed} setup: {type(exc).__name__}: {exc}")
        return

    def layer_graph(values: dict[str, Any] | None = None, changed: list[str] | None = None) -> None:
        fire("layer graph", LAYER_GRAPH, values, changed)  # then what the renderer chains after it:
        fire("layer overview", [("layer-overview", "elements"), ("layer-overview", "stylesheet")],
             changed=["layer-graph.elements"])
        fire("refit", [("layer-graph", "layout")], changed=["layer-graph.elements"])

    def treemap(values: dict[str, Any] | None = None, changed: list[str] | None = None) -> None:
        fire("treemap", TREEMAP, values, changed)

    def tap() -> None:
        els = c.props["layer-graph"].get("elements") or []
        layers = [e["data"] for e in els if "source" not in e["data"] and not e["data"].get("is_group")]
        fire("layer focus (tap)", [("cut", "data"), ("focus-layer", "data")],
             {"layer-graph.tapNodeData": rnd.choice(layers)})
        layer_graph(changed=["focus-layer.data"])
        treemap(changed=["focus-layer.data"])

    def click() -> None:
        figure = c.props["fmap-treemap"].get("figure") or {}
        clusters = [cd for tr in figure.get("data", []) for cd in tr.get("customdata") or []]
        if not clusters:
            return treemap(changed=["focus-layer.data"])
        fire("focus map (click)", [("focus-map", "data")],
             {"fmap-treemap.clickData": {"points": [{"customdata": rnd.choice(clusters)}]}})
        fire("neuron heat maps", NEURON, {"overlay.value": rnd.choice([[], ["on"]])}, ["focus-map.data"])
        fire("top patches", [("top-patches", "figure"), ("top-patches", "style")], changed=["focus-map.data"])

    def image_list() -> None:
        fire("image list (filter)", [("image-list", "children")], {
            "filter-class.value": rnd.choice([None, *classes]),
            "filter-kind.value": rnd.choice(["all", "normal", "adversarial"]),
            "filter-correct.value": rnd.choice(["all", "correct", "wrong"]),
            "sort-score.value": rnd.choice([[], ["score"]])})

    def stat() -> None:
        layer_graph({"stat.value": rnd.choice(["similarity", "activation", "jaccard"])})

    def lam() -> None:
        layer_graph({"lam.value": rnd.randrange(17) / 4})

    def k_or_colour() -> None:
        if rnd.random() < 0.5:
            treemap({"fmap-k.value": rnd.randint(1, 12)})
        else:
            treemap({"fmap-color.value": rnd.choice(["importance", "activation", "difference"])})

    actions = [stat, lam, tap, k_or_colour, click, image_list]
    try:
        layer_graph(changed=["cut.data"])
        treemap(changed=["focus-layer.data"])
    except Exception as exc:  # noqa: BLE001
        stats.error(f"session {seed} first views: {type(exc).__name__}: {exc}")
        return
    while time.monotonic() < deadline:
        action = rnd.choice(actions)
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - counted, the session goes on
            stats.error(f"session {seed} {action.__name__}: {type(exc).__name__}: {exc}")
        time.sleep(rnd.uniform(0, 2 * think_s))


def pctl(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(round(q * (len(ys) - 1))))]


def server_exceptions(log_path: Path) -> list[str]:
    """The exception line closing each traceback of the gunicorn log (workers and job processes)."""
    found, inside = [], False
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            inside = True
        elif inside and line and not line.startswith((" ", "During handling", "The above exception")):
            found.append(line)
            inside = False
    return found


def report(stats: Stats, sessions: int, seconds: float, log_path: Path) -> int:
    allt = [t for ts in stats.times.values() for t in ts]
    out(f"sessions {sessions}, requests {len(allt)} (callbacks and page loads), {seconds:.1f} s, "
        f"throughput {len(allt) / seconds:.1f} req/s")
    if allt:
        out(f"  {'all':<26} n {len(allt):5d}   p50 {pctl(allt, .5):7.1f} ms   p95 {pctl(allt, .95):7.1f} ms"
            f"   max {max(allt):8.1f} ms")
    for view, ts in sorted(stats.times.items()):
        out(f"  {view:<26} n {len(ts):5d}   p50 {pctl(ts, .5):7.1f} ms   p95 {pctl(ts, .95):7.1f} ms"
            f"   max {max(ts):8.1f} ms")
    server_errors = server_exceptions(log_path)
    out(f"errors {len(stats.errors)}; server log {log_path}: {len(server_errors)} tracebacks")
    for e in stats.errors[:8]:
        out(f"  {e[:300]}")
    if len(stats.errors) > 8:
        out(f"  ... and {len(stats.errors) - 8} more")
    for e, n in Counter(server_errors).most_common(5):
        out(f"  server: {n} x {e[:250]}")
    return 1 if stats.errors else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--model", default="cifar-resnet20")
    ap.add_argument("--max-images", type=int, default=60)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/aevis-bench-load"))
    ap.add_argument("--host", default="127.0.0.1", help="loopback only")
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--think-s", type=float, default=0.5, help="mean pause between user actions")
    args = ap.parse_args()
    if not 1 <= args.sessions <= MAX_SESSIONS or not 0 < args.seconds <= MAX_SECONDS:
        ap.error(f"--sessions must be 1..{MAX_SESSIONS}, --seconds 0..{MAX_SECONDS}")
    host = "127.0.0.1" if args.host == "localhost" else args.host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        ap.error(f"refusing to serve on {args.host!r}: loopback addresses only")
    args.host, args.cache_dir = host, args.cache_dir.resolve()

    from app.config import AppConfig

    cfg = AppConfig(model=args.model, cache_dir=args.cache_dir, max_images=args.max_images)
    t = time.perf_counter()
    _, preset = warm(cfg)
    out(f"{args.model}: warm cache in {args.cache_dir} ({time.perf_counter() - t:.1f} s), preset {preset!r}")
    port = args.port or free_port(host)
    base = f"http://{host}:{port}"
    log_path = args.cache_dir / "gunicorn.log"
    proc = start_gunicorn(args, port, log_path)
    try:
        wait_ready(base + "/", proc)
        out(f"gunicorn {args.workers} workers x {args.threads} threads on {base}; {args.sessions} sessions, "
            f"{args.seconds:.0f} s, think {args.think_s} s")
        stats = Stats()
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        threads = [threading.Thread(target=session, args=(base, preset, stats, deadline, args.think_s, i),
                                    daemon=True) for i in range(args.sessions)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        code = report(stats, args.sessions, time.monotonic() - t0, log_path)
    finally:
        left = stop(proc)
    if left:
        out(f"{len(left)} job processes were still running after gunicorn stopped (killed): {left}")
    return code


if __name__ == "__main__":
    sys.exit(main())
