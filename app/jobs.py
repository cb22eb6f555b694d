"""Long work run by Dash background callbacks: preparing the pool, Analyze, discrepancy maps.

Each job validates, calls ``aevis_core`` and stores its result in the shared result cache; the
callback returns only a cache key. User errors come back as one-line messages; unexpected ones
are logged with their traceback and shown as a short message (never a traceback in the UI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aevis_core.analysis import Analysis, analyze
from aevis_core.errors import AEVisError
from aevis_core.models import default_device
from aevis_core.pool import Pool, build_pool
from app.resources import Resources

log = logging.getLogger(__name__)
SetProgress = Callable[[tuple[Any, ...]], None]


def job_resources(res: Resources) -> Resources:
    """Resources for a job: the web process's own on CPU, a CUDA copy when a GPU is present."""
    dev = default_device()
    return res if dev.type == "cpu" else Resources(res.config, device=str(dev))


def progress_reporter(set_progress: SetProgress) -> Callable[[int, int, str], None]:
    """(done, total, stage) -> set_progress((value, max, text))."""
    def report(done: int, total: int, stage: str) -> None:
        set_progress((str(done), str(max(total, 1)), f"{stage}: {done}/{total}"))

    return report


def prepare_pool(set_progress: SetProgress, res: Resources, set_id: str | None = None) -> str:
    """Key of the pool of an image set (default: demo/configured) with the default attack:
    load it from the cache, or build it (attack + predictions + scores)."""
    report = progress_reporter(set_progress)

    def build() -> Pool:
        report(0, 1, "loading model and images (or waiting for another job preparing them)")
        jr = job_resources(res)
        return build_pool(jr.entry, res.image_set(set_id), jr.attack_config(), progress=report)

    return pool_once(res, res.pool_key(set_id=set_id), build)


def pool_once(res: Resources, key: str, build: Callable[[], Pool]) -> str:
    """``key``, after building and storing its pool unless cached; one builder per key at a time
    (a second job for the same pool waits for the first, then reads its result)."""
    if res.pool(key) is None:
        with res.cache.computing(key):
            if res.pool(key) is None:
                store(res, key, build())
    return key


def store(res: Resources, key: str, value: Any) -> None:
    """Put a job's result in the shared cache, or raise a clear error if the disk refuses it."""
    if not res.cache.put(key, value):
        raise AEVisError(cache_write_message(res))


def cache_write_message(res: Resources) -> str:
    """One line: the result was computed but the cache folder refused it (full or read-only)."""
    return (f"the result was computed but could not be saved: the cache folder {res.config.results_dir} "
            f"is full or read-only ({res.cache.write_error}); free space or fix its permissions, then retry")


def generate_pool(set_progress: SetProgress, res: Resources, method: str, eps: str, steps: int | None,
                  source: str | None, set_id: str | None = None) -> str:
    """Key of a pool whose adversarial twins come from the given attack (white-box or transfer)."""
    from aevis_core.attacks import AttackConfig, parse_eps, validate_config
    from aevis_core.models import ZOO, load_model

    cfg = validate_config(AttackConfig(method=method or "mifgsm", eps=parse_eps(eps or "4/255"),
                                       steps=int(steps or 10)))
    src_name = source if source and source != res.config.model else None
    if src_name is not None and src_name not in ZOO:
        raise AEVisError(f"unknown source model {source!r}")

    def build() -> Pool:
        jr = job_resources(res)
        src = None
        if src_name is not None:
            src = load_model(src_name, device=next(jr.entry.model.parameters()).device)
            if src.input_size != jr.entry.input_size or src.num_classes != jr.entry.num_classes:
                raise AEVisError(f"{src_name} does not take the same images and classes as {res.config.model}")
        return build_pool(jr.entry, res.image_set(set_id), cfg, progress=progress_reporter(set_progress), source=src)

    return pool_once(res, res.pool_key(cfg, src_name, set_id), build)


def run_analysis(set_progress: SetProgress, res: Resources, groups: dict[str, list[str]],
                 pool_key: str | None = None) -> Analysis:
    """Analyze the groups of the prepared pool (cached)."""
    pool = res.pool(pool_key)
    if pool is None:
        raise AEVisError("the image pool is not ready yet; wait for the preparation to finish")
    total = sum(len(v) for v in groups.values())
    if total > res.config.max_analysis_images:
        raise AEVisError(f"{total} images in the groups; the limit per analysis is "
                         f"{res.config.max_analysis_images} (AEVIS_MAX_ANALYSIS_IMAGES)")
    jr = job_resources(res)
    result = analyze(jr.entry, lambda: jr.graph, pool, groups, cache=res.cache,  # graph built only on a miss
                     progress=progress_reporter(set_progress))
    if not res.cache.has(result.key):
        raise AEVisError(cache_write_message(res))
    return result


def user_message(exc: BaseException) -> str:
    """One line for the UI: the AEVisError text, or a generic note for bugs (logged in full)."""
    if isinstance(exc, AEVisError):
        return str(exc)
    log.exception("job failed")
    return f"internal error ({type(exc).__name__}); the server log has the details"
