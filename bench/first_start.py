"""First start: time and peak memory of preparing the demo pool (issue 10: <= 60 s, <= 1.5 GB).

    python bench/first_start.py                  # build_pool in fresh processes: new vs legacy
    python bench/first_start.py --skip-legacy    # the new pipeline only (about a minute)
    python bench/first_start.py --server         # `aevis serve` from a fresh cache until /readyz

In-process mode: each variant runs in a fresh child process (``--child VARIANT``) that loads
EfficientNet-Lite0 and the 62 NIPS-2017 demo images and builds the pool exactly as the
dashboard's first start does (MI-FGSM, eps 4/255, 10 steps, 8-bit quantisation, out-of-fold
scores). The parent samples the summed RSS of the child's process tree every 0.1 s (psutil) and
also reads ``ru_maxrss`` of its children (``resource.getrusage(RUSAGE_CHILDREN)``); the peak is
the larger of the two. The child reports its stage times:

* ``new``: :func:`aevis_core.pool.build_pool` as shipped; ``thumbnails`` = the pool without
  scores (``scores=False``, what the page needs to show thumbnails and presets), ``scores`` =
  :func:`aevis_core.pool.add_scores` on it.
* ``legacy``: the build_pool before this benchmark (attack batches of 32, separate prediction
  passes, and each fold's scorer re-running the model on its images), kept here as the baseline
  for the ratio. Both must give the same kind of pool: the bench prints how many predictions
  agree and the largest score difference.

Server mode starts ``aevis serve --cache-dir <fresh tmp dir> --port <free port>`` (the console
script of pyproject.toml, run by this interpreter),
polls ``GET /readyz`` (200 = demo pool ready; falls back to ``/healthz`` when the server has no
``/readyz``, and says so) while sampling the RSS of the server's process tree (plus any process
whose command line names the fresh cache dir, such as a detached preparation process) every
0.2 s, prints time to ready and the peak of the summed RSS (and of the summed PSS: forked
workers share pages that RSS counts once per process), then stops the server.

Threads come from the environment (``OMP_NUM_THREADS``; torch's default is one per core). On a
shared machine set ``OMP_WAIT_POLICY=PASSIVE``: with the default spinning OpenMP barriers, two
threads on two busy cores cost 5-10x the CPU time of one (measured with ``--skip-legacy``). The
header prints the load average: absolute times are only comparable on an idle machine, the
legacy/new ratios and the CPU times are the robust figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
TARGET_S, TARGET_MB = 60.0, 1536.0


# ---------------------------------------------------------------- child side
def _legacy_pool(entry, images, attack):  # type: ignore[no-untyped-def]
    """The pre-benchmark build_pool (commit fbfb4a0), verbatim but for the imports."""
    import numpy as np
    import torch

    from aevis_core.attacks import quantise, run_attack
    from aevis_core.scores import AdversarialScorer, stratified_folds

    x = entry.preprocess_many(images.images)
    x8 = quantise(x, x, None)[1].float() / 255.0
    probs, pred = entry.predict(x8)
    y = torch.tensor([int(p) if lab is None else int(lab) for lab, p in zip(images.labels, pred.tolist(), strict=True)])
    n = x.shape[0]
    adv = run_attack(entry.model, x8, y, attack)
    adv8 = quantise(adv, x8, attack.eps)[0].float() / 255.0
    aprobs, apred = entry.predict(adv8)
    labels = list(images.labels)
    s_clean, s_adv = np.zeros(n), np.zeros(n)
    fold_of = stratified_folds(labels, n, 2, seed=attack.seed)
    for f in np.unique(fold_of):
        test, train = np.flatnonzero(fold_of == f), np.flatnonzero(fold_of != f)
        scorer = AdversarialScorer().fit(entry, x8[train], [labels[i] for i in train], adv_x=adv8[train])
        s_clean[test] = scorer.score(entry, x8[test])
        s_adv[test] = scorer.score(entry, adv8[test])
    preds = np.concatenate([pred.numpy(), apred.numpy()])
    probs_all = np.concatenate([probs[np.arange(n), pred].numpy(), aprobs[np.arange(n), apred].numpy()])
    return preds, probs_all, np.concatenate([s_clean, s_adv])


def child(variant: str, out: Path) -> None:
    """Build the demo pool once with ``variant`` and write stage times and results to ``out``."""
    import numpy as np
    import torch

    from aevis_core.attacks import AttackConfig
    from aevis_core.data import demo_path, load_image_set
    from aevis_core.models import load_model
    from aevis_core.pool import add_scores, build_pool

    t0 = time.perf_counter()
    entry = load_model("efficientnet-lite0")
    images = load_image_set(demo_path("nips2017"))
    attack = AttackConfig(method="mifgsm", eps=4 / 255, steps=10)
    t_load = time.perf_counter()
    res: dict[str, object] = {"variant": variant, "threads": torch.get_num_threads(), "n": len(images),
                              "load_s": t_load - t0,
                              "load_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if variant == "new":
        pool = build_pool(entry, images, attack, scores=False)
        t_thumbs = time.perf_counter()
        res["thumbnails_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        add_scores(pool)
        t_end = time.perf_counter()
        res.update(thumbnails_s=t_thumbs - t0, scores_s=t_end - t_thumbs, total_s=t_end - t0)
        preds = np.array([it.pred for it in pool.items])
        probs = np.array([it.prob for it in pool.items])
        scores = np.array([it.score for it in pool.items])
    else:
        preds, probs, scores = _legacy_pool(entry, images, attack)
        t_end = time.perf_counter()
        res.update(thumbnails_s=t_end - t0, scores_s=0.0, total_s=t_end - t0)
    np.savez(out.with_suffix(".npz"), preds=preds, probs=probs, scores=scores)
    res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["cpu_s"] = time.process_time()
    out.write_text(json.dumps(res))


# ---------------------------------------------------------------- parent side
def tree_rss(root: psutil.Process, marker: str | None = None, pss: bool = False) -> int:
    """Summed RSS in bytes of ``root``, its descendants and processes naming ``marker``
    (``pss``: proportional set size instead, which counts pages shared by forked processes once)."""
    procs = {root.pid: root}
    try:
        procs.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.Error:
        pass
    if marker:
        for p in psutil.process_iter(["cmdline"]):
            if marker in " ".join(p.info.get("cmdline") or []):
                procs.setdefault(p.pid, p)
    total = 0
    for p in procs.values():
        try:
            total += p.memory_full_info().pss if pss else p.memory_info().rss
        except (psutil.Error, AttributeError):
            pass
    return total


def run_child(variant: str, tmp: Path) -> dict[str, object]:
    """Run one variant in a fresh process; its stage times plus the sampled peak RSS (MB)."""
    out = tmp / f"{variant}.json"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", variant, "--out", str(out)], cwd=ROOT)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{variant} child failed with exit code {proc.returncode}")
    res: dict[str, object] = json.loads(out.read_text())
    children_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    res.update(wall_s=wall, peak_mb=max(peak / 2**20, float(res["maxrss_mb"])), children_maxrss_mb=children_max)  # type: ignore[arg-type]
    return res


def in_process(skip_legacy: bool) -> None:
    """Run the variants, print the table, the ratios and the agreement of the results."""
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="aevis-first-start-"))
    try:
        rows = [run_child("new", tmp)]
        if not skip_legacy:
            rows.append(run_child("legacy", tmp))
        print(f"\nEfficientNet-Lite0, {rows[0]['n']} NIPS-2017 demo images, MI-FGSM 4/255 10 steps, "
              f"{rows[0]['threads']} torch threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (targets: thumbnails <= "
              f"{TARGET_S:.0f} s, peak <= {TARGET_MB / 1024:.1f} GB)")
        print(f"{'variant':8s} {'load':>6s} {'thumbnails':>11s} {'scores':>7s} {'total':>7s} "
              f"{'CPU time':>9s} {'RSS after load':>15s} {'peak RSS':>9s}")
        for r in rows:
            print(f"{r['variant']!s:8s} {r['load_s']:5.1f}s {r['thumbnails_s']:10.1f}s {r['scores_s']:6.2f}s "
                  f"{r['total_s']:6.1f}s {r['cpu_s']:8.1f}s {r['load_maxrss_mb']:12.0f} MB {r['peak_mb']:6.0f} MB")
        new = rows[0]
        ok = float(new["thumbnails_s"]) <= TARGET_S and float(new["peak_mb"]) <= TARGET_MB  # type: ignore[arg-type]
        print(f"new: thumbnails {new['thumbnails_s']:.1f} s, peak {new['peak_mb']:.0f} MB -> "
              f"{'within' if ok else 'OUTSIDE'} the targets")
        if len(rows) == 2:
            old = rows[1]
            print(f"ratio legacy/new: total time {float(old['total_s']) / float(new['total_s']):.1f}x, "  # type: ignore[arg-type]
                  f"CPU time {float(old['cpu_s']) / float(new['cpu_s']):.1f}x, "  # type: ignore[arg-type]
                  f"time to thumbnails {float(old['thumbnails_s']) / float(new['thumbnails_s']):.1f}x, "  # type: ignore[arg-type]
                  f"peak RSS {float(old['peak_mb']) / float(new['peak_mb']):.1f}x")  # type: ignore[arg-type]
            a, b = np.load(tmp / "new.npz"), np.load(tmp / "legacy.npz")
            agree = float((a["preds"] == b["preds"]).mean())
            print(f"same results: predictions agree on {agree:.1%} of the {a['preds'].size} items, "
                  f"max |prob diff| {np.abs(a['probs'] - b['probs']).max():.2e}, "
                  f"max |score diff| {np.abs(a['scores'] - b['scores']).max():.2e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _aevis_command() -> list[str]:
    """``aevis`` as ``make serve`` runs it: the project's console script, called through this
    interpreter from its pyproject entry point (a venv's ``bin/aevis`` goes stale when the
    entry point moves and the package is not reinstalled)."""
    import tomllib

    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["aevis"]
    module, func = entry.split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func} as m; sys.argv[0] = 'aevis'; "
            "sys.exit(m())"]


def server(timeout: float) -> None:
    """Start `aevis serve` on a fresh cache, wait for /readyz, print time and peak tree RSS."""
    cache = Path(tempfile.mkdtemp(prefix="aevis-first-start-cache-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [*_aevis_command(), "serve", "--cache-dir", str(cache), "--port", str(port)]
    t0 = time.perf_counter()
    log_path = cache.with_suffix(".log")  # a file, not a pipe: a full pipe would block the server
    log_file = log_path.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    ps = psutil.Process(proc.pid)
    peak, peak_pss, endpoint, ready_at, up_at = 0, 0, "/readyz", None, None
    try:
        while time.perf_counter() - t0 < timeout and proc.poll() is None:
            peak = max(peak, tree_rss(ps, str(cache)))
            peak_pss = max(peak_pss, tree_rss(ps, str(cache), pss=True))
            code = _status(base + endpoint)
            if code and up_at is None:
                up_at = time.perf_counter() - t0
            if code == 404 and endpoint == "/readyz":
                endpoint = "/healthz"
                print("server has no /readyz yet: falling back to /healthz (server mode pending)")
            if code == 200:
                ready_at = time.perf_counter() - t0
                break
            time.sleep(0.2)
        peak = max(peak, tree_rss(ps, str(cache)))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for p in psutil.process_iter(["cmdline"]):  # a detached preparation process of this run
            if str(cache) in " ".join(p.info.get("cmdline") or []):
                p.kill()
        log_file.close()
        err = log_path.read_text(errors="replace")
        log_path.unlink(missing_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
    if ready_at is None:
        print(err[-2000:])
        raise SystemExit(f"server not ready on {endpoint} after {timeout:.0f} s (exit code {proc.returncode})")
    print(f"aevis serve, fresh cache: HTTP up after {up_at:.1f} s, {endpoint} 200 after {ready_at:.1f} s, "
          f"peak summed RSS of the process tree {peak / 2**20:.0f} MB, peak summed PSS {peak_pss / 2**20:.0f} MB "
          f"(targets {TARGET_S:.0f} s, {TARGET_MB:.0f} MB; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')})")


def main() -> None:
    """Parse the arguments and run one mode."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", action="store_true", help="measure `aevis serve` until /readyz answers 200")
    ap.add_argument("--skip-legacy", action="store_true", help="do not run the legacy baseline (minutes)")
    ap.add_argument("--timeout", type=float, default=900.0, help="server mode: give up after this (s)")
    ap.add_argument("--child", choices=["new", "legacy"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.out)
    elif args.server:
        server(args.timeout)
    else:
        in_process(args.skip_legacy)


if __name__ == "__main__":
    main()
