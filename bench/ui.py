"""Dashboard responsiveness: server time of view-change callbacks, and page load to interactive.

1. Prepares (or reuses) the pool and one analysis in a cache folder (warm cache).
2. Posts 50 view changes per callback to ``/_dash-update-component`` with Flask's test client
   (λ slider -> layer graph, statistic -> layer graph, k -> treemap, colour -> treemap,
   cluster click -> neuron heat maps) and prints p50 / p95 server time (target p95 <= 150 ms).
3. Starts the server and loads the page in headless Chromium: time until the image list is
   shown (target <= 3 s).

Usage: python bench/ui.py [--model cifar-resnet20] [--cache-dir /tmp/aevis-bench-ui] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from aevis_core.layout.treecut import tree_cut
from app.config import AppConfig
from app.levels.fmap import figures as fv
from app.levels.groups.presets import presets
from app.payloads import AnalysisContext, LayerCut, LayerFocus, MapFocus
from app.server.factory import create_app
from app.services import Services


def post(client: Any, outputs: list[tuple[str, str]], inputs: list[tuple[str, str, Any]],
         state: list[tuple[str, str, Any]], changed: str) -> float:
    """One callback request; returns the server time in ms."""
    body = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + ".." if len(outputs) > 1
        else f"{outputs[0][0]}.{outputs[0][1]}",
        "outputs": [{"id": i, "property": p} for i, p in outputs] if len(outputs) > 1
        else {"id": outputs[0][0], "property": outputs[0][1]},
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
        "changedPropIds": [changed],
    }
    t = time.perf_counter()
    r = client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
    ms = (time.perf_counter() - t) * 1000
    if r.status_code not in (200, 204):
        raise RuntimeError(f"{changed}: HTTP {r.status_code}: {r.data[:300]!r}")
    return ms


def pctl(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(round(q * (len(ys) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cifar-resnet20")
    ap.add_argument("--cache-dir", default="/tmp/aevis-bench-ui")
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    cfg = AppConfig(model=args.model, cache_dir=Path(args.cache_dir), max_images=60)
    services = Services.create(cfg)
    pool_key = services.pools.prepare("demo", lambda d, t, s: None)
    pool = services.pools.require(pool_key)
    groups = next(iter(presets(pool).values()))
    analysis = services.analyses.run(groups, pool_key, lambda d, t, s: None)
    app = create_app(cfg)
    client = app.server.test_client()
    key = analysis.key
    cut = LayerCut(key, tree_cut(services.model.hierarchy, services.analyses.doi(analysis), budget=50)).to_json()
    layer = services.analyses.initial_layer(analysis)
    focus = LayerFocus(key, layer).to_json()
    context = AnalysisContext("demo", pool_key, analysis.groups, key, " vs ".join(analysis.groups)).to_json()
    rects = fv.treemap_rects(analysis, layer, 4, "importance")
    first_map = next(r.maps[0] for r in rects if r.kind == "cluster")
    graph_out = [("layer-graph", "elements"), ("layer-graph", "stylesheet"), ("layer-title", "children")]
    tree_out = [("fmap-treemap", "figure"), ("fmap-title", "children")]
    cases = {
        "layer graph (λ slider)": lambda i: post(
            client, graph_out, [("cut", "data", cut), ("stat", "value", "similarity"), ("lam", "value", (i % 17) / 4),
                                ("focus-layer", "data", focus)], [("context", "data", context)], "lam.value"),
        "layer graph (statistic)": lambda i: post(
            client, graph_out, [("cut", "data", cut), ("stat", "value", ["similarity", "activation", "jaccard"][i % 3]),
                                ("lam", "value", 1), ("focus-layer", "data", focus)], [("context", "data", context)],
            "stat.value"),
        "treemap (k slider)": lambda i: post(
            client, tree_out, [("focus-layer", "data", focus), ("fmap-k", "value", 1 + i % 8),
                               ("fmap-color", "value", "importance"), ("pinned", "data", None),
                               ("context", "data", context)], [], "fmap-k.value"),
        "treemap (colour)": lambda i: post(
            client, tree_out, [("focus-layer", "data", focus), ("fmap-k", "value", 4),
                               ("fmap-color", "value", ["importance", "activation", "difference"][i % 3]),
                               ("pinned", "data", None), ("context", "data", context)], [], "fmap-color.value"),
        "neuron heat maps (cluster click)": lambda i: post(
            client, [("neuron-heatmaps", "figure"), ("neuron-title", "children")],
            [("focus-map", "data", MapFocus(key, layer, first_map, "c").to_json()), ("overlay", "value", []),
             ("context", "data", context)], [], "focus-map.data"),
    }
    print(f"{args.model}: warm cache, {args.calls} calls per view change (server time, Flask test client)")
    for name, fn in cases.items():
        fn(0)  # warm-up (fills the heat-map cache)
        times = [fn(i) for i in range(args.calls)]
        print(f"  {name:<34} p50 {statistics.median(times):7.1f} ms   p95 {pctl(times, 0.95):7.1f} ms"
              f"   (target p95 <= 150 ms)")
    if not args.no_browser:
        print(f"  page load to interactive (image list shown): {page_load(app):.2f} s   (target <= 3 s)")


def page_load(app: Any, port: int = 8077) -> float:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    threading.Thread(target=lambda: app.run(host="127.0.0.1", port=port, debug=False), daemon=True).start()
    time.sleep(2)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts)
    try:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            driver.get(f"http://127.0.0.1:{port}/")
            WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".thumb")))
            best = min(best, time.perf_counter() - t)
        return best
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
