"""One "Analyze" run: datapaths of 2-4 image groups of a pool, their statistics, and, when one
group holds adversarial twins of another group's normal images, the paired similarity next to
R draws of an energy-matched noise control and the calibrated diverging point
(:mod:`aevis_core.datapath.diverge`). Cached as a whole by content key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from aevis_core.cache import ResultCache, content_key
from aevis_core.datapath.control_similarity import DEFAULT_DRAWS, NoiseComparison, compare_with_noise_control
from aevis_core.datapath.controls import DEFAULT_CONTROL, check_control
from aevis_core.datapath.diverge import Divergence, DivergenceConfig, diverging_point
from aevis_core.datapath.extract import Datapath, ExtractConfig
from aevis_core.datapath.service import cached_datapath
from aevis_core.datapath.similarity import DatapathStats, layer_stats
from aevis_core.errors import AEVisError
from aevis_core.graph.types import LayerGraph
from aevis_core.models.base import ModelEntry
from aevis_core.pool import Pool

Progress = Callable[[int, int, str], None]
log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """Everything the three views read; ``pair`` = (normal group, adversarial group) or None.

    When paired: ``comparison`` holds per layer the adversarial similarities (N,) and those of R
    control draws (N, R), with ``rms_adv``/``rms_control`` (N,) of the perturbations;
    ``divergence`` the diverging point, its gate p-value, the control kind and rms ×255, and per
    layer (``evidence``) the combined p-value, effect size with 95 % interval and the smallest
    detectable effect.
    """

    key: str
    model_id: str
    groups: dict[str, list[str]]
    datapaths: dict[str, Datapath]
    stats: DatapathStats
    pair: tuple[str, str] | None = None
    pair_ids: list[tuple[str, str]] = field(default_factory=list)
    comparison: NoiseComparison | None = None
    divergence: Divergence | None = None


def find_pair(pool: Pool, groups: Mapping[str, Sequence[str]]) -> tuple[str, str, list[tuple[str, str]]] | None:
    """(normal group, adversarial group, [(normal id, adversarial id)]) with the most twins, or None."""
    items = {it.id: it for it in pool.items}
    best: tuple[str, str, list[tuple[str, str]]] | None = None
    for ga, ids_a in groups.items():
        for gb, ids_b in groups.items():
            if ga == gb:
                continue
            normal = set(ids_a)
            pairs = [(items[b].source, b) for b in ids_b
                     if items[b].kind == "adversarial" and items[b].source in normal]
            if pairs and (best is None or len(pairs) > len(best[2])):
                best = (ga, gb, pairs)
    return best


MAX_IMAGES = 400  # images in the groups of one analysis, by default


def validate_groups(pool: Pool, groups: Mapping[str, Sequence[str]], max_images: int = MAX_IMAGES) -> None:
    """Raise :class:`AEVisError` unless there are 2-4 non-empty groups of known pool images."""
    if not 2 <= len(groups) <= 4:
        raise AEVisError(f"choose 2 to 4 groups to compare (got {len(groups)})")
    known = set(pool.index())
    for name, ids in groups.items():
        if not ids:
            raise AEVisError(f"group {name!r} is empty")
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise AEVisError(f"group {name!r} has unknown images: {', '.join(unknown[:3])}")
    total = sum(len(v) for v in groups.values())
    if total > max_images:
        raise AEVisError(f"{total} images selected; the limit per analysis is {max_images}")


@dataclass(frozen=True)
class ControlConfig:
    """The noise control of the diverging point: kind (:data:`~.controls.CONTROLS`), R draws, seed, rule."""

    kind: str = DEFAULT_CONTROL
    draws: int = DEFAULT_DRAWS
    seed: int = 0
    rule: DivergenceConfig = field(default_factory=DivergenceConfig)

    def validate(self) -> ControlConfig:
        """Raise :class:`AEVisError` on a bad option; return self."""
        check_control(self.kind)
        if self.draws < 1:
            raise AEVisError("the control needs at least one draw")
        self.rule.validate()
        return self


def analysis_key(entry: ModelEntry, pool: Pool, groups: Mapping[str, Sequence[str]],
                 config: ExtractConfig | None = None, eps: float | None = None,
                 control: ControlConfig | None = None) -> str:
    """Content key of an analysis: model identity, groups, extraction config, pool attack, eps, control."""
    return content_key("analysis/v2", entry.model_id, {k: list(v) for k, v in groups.items()},
                       asdict(config or ExtractConfig()), pool.attack, eps, asdict(control or ControlConfig()))


def analyze(entry: ModelEntry, graph: LayerGraph | Callable[[], LayerGraph], pool: Pool,
            groups: Mapping[str, Sequence[str]],
            config: ExtractConfig | None = None, cache: ResultCache | None = None,
            progress: Progress | None = None, eps: float | None = None,
            control: ControlConfig | None = None, max_images: int = MAX_IMAGES) -> Analysis:
    """Run (or load) the analysis of ``groups`` (name -> pool item ids); ``graph`` may be a callable
    that builds the layer graph, so a cached analysis never builds it. ``control``: the noise
    control and rule of the diverging point (default: shuffled perturbation, R = 39, α = 0.05).
    ``max_images``: the most images the groups may hold together."""
    cfg = config or ExtractConfig()
    ctl = (control or ControlConfig()).validate()
    validate_groups(pool, groups, max_images)
    key = analysis_key(entry, pool, groups, cfg, eps, ctl)
    if cache is None:
        return _compute_analysis(key, entry, _graph(graph), pool, groups, cfg, None, progress, eps, ctl)
    hit = cache.get(key)
    if isinstance(hit, Analysis):
        log.info("analysis %s loaded from the cache", key[:32])
        return hit
    with cache.computing(key):  # a second user asking for the same analysis waits, then reads it
        hit = cache.get(key)
        if isinstance(hit, Analysis):
            log.info("analysis %s computed meanwhile by another job", key[:32])
            return hit
        log.info("computing analysis %s", key[:32])
        result = _compute_analysis(key, entry, _graph(graph), pool, groups, cfg, cache, progress, eps, ctl)
        cache.put(key, result)
    return result


def _graph(graph: LayerGraph | Callable[[], LayerGraph]) -> LayerGraph:
    """The layer graph, built only now when given as a zero-argument callable."""
    return graph if isinstance(graph, LayerGraph) else graph()


def _compute_analysis(key: str, entry: ModelEntry, graph: LayerGraph, pool: Pool,
                      groups: Mapping[str, Sequence[str]], cfg: ExtractConfig, cache: ResultCache | None,
                      progress: Progress | None, eps: float | None, ctl: ControlConfig) -> Analysis:
    """Datapaths of every group, statistics, and the normal/adversarial comparison when paired."""
    report = progress or (lambda d, t, s: None)
    total = sum(len(v) for v in groups.values())
    pair = find_pair(pool, groups)
    steps = total + (len(pair[2]) * (ctl.draws + 2) if pair else 0)
    done = 0
    dps: dict[str, Datapath] = {}
    for name, ids in groups.items():
        x = pool.tensor(list(ids))
        labels = [pool.items[pool.index()[i]].label for i in ids]

        def prog(d: int, t: int, _base: int = done, _name: str = name) -> None:
            report(_base + d, steps, f"datapath of {_name}")

        dps[name], _ = cached_datapath(entry, graph, x, cfg, cache, labels=labels, progress=prog)
        done += len(ids)
    names = list(groups)
    diff = (pair[0], pair[1]) if pair else (names[0], names[1])
    stats = layer_stats(dps, diff=diff)
    result = Analysis(key, entry.model_id, {k: list(v) for k, v in groups.items()}, dps, stats)
    if pair:
        normal, adv, pairs = pair
        report(done, steps, f"similarity vs {ctl.draws} {ctl.kind} control draws")
        xn = pool.tensor([a for a, _ in pairs])
        xa = pool.tensor([b for _, b in pairs])
        raw_eps = pool.attack.get("eps")
        attack_eps = eps if eps is not None else (float(raw_eps) if isinstance(raw_eps, int | float) else math.nan)
        base = done

        def cprog(d: int, t: int) -> None:
            report(base + d, steps, f"similarity vs {ctl.draws} {ctl.kind} control draws")

        comp = compare_with_noise_control(entry, graph, xn, xa, None if math.isnan(attack_eps) else attack_eps,
                                          control=ctl.kind, draws=ctl.draws, seed=ctl.seed, progress=cprog)
        result.pair, result.pair_ids = (normal, adv), pairs
        result.comparison = comp
        result.divergence = diverging_point(comp, ctl.rule)
    report(steps, steps, "done")
    return result
