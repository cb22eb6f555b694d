"""Typed payloads of the stores and click events, with strict decoding of what a browser sends.

Every store holds the ``to_json()`` of one of these dataclasses; callbacks read it back with
``from_json`` which returns ``None`` for an absent value and raises :class:`PayloadError` for a
malformed one (a hostile or stale client), which the callbacks turn into a message, never a 500.
Every payload that belongs to an analysis carries its ``analysis_key``: a panel shows it only
while the page's :class:`AnalysisContext` has the same key, so nothing outlives its analysis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

MAX_GROUPS = 4
MAX_NAME = 80
MAX_ID = 200
KEY = re.compile(r"^[a-z0-9_/.-]{1,40}:[0-9a-f]{64}$")  # aevis_core.cache.content_key
SET_ID = re.compile(r"^(demo|[0-9a-f]{16})$")

T = TypeVar("T")


class PayloadError(ValueError):
    """A store value or event payload that is not what this server writes."""


def _str(value: Any, what: str, max_len: int = MAX_ID) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise PayloadError(f"{what} must be a non-empty string of at most {max_len} characters")
    return value


def _opt_key(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not KEY.match(value):
        raise PayloadError(f"{what} is not a result key")
    return value


def _key(value: Any, what: str) -> str:
    """A required result key, or PayloadError."""
    key = _opt_key(value, what)
    if key is None:
        raise PayloadError(f"{what} missing")
    return key


def _int(value: Any, what: str, lo: int = 0, hi: int = 1 << 20) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PayloadError(f"{what} must be an integer in [{lo}, {hi}]")
    return value


def check_set_id(value: Any) -> str:
    """An image-set id (``demo`` or 16 hex digits) or PayloadError."""
    if not isinstance(value, str) or not SET_ID.match(value):
        raise PayloadError("unknown image set")
    return value


def set_id_or_demo(value: Any) -> str:
    """An image-set id from a request: ``None`` means the demo set; anything else must be a valid id."""
    return check_set_id("demo" if value is None else value)


def check_groups(value: Any, max_images: int = 10_000) -> dict[str, list[str]]:
    """``{name: [item id, ...]}`` with at most 4 groups of bounded names/ids, or PayloadError."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_GROUPS:
        raise PayloadError(f"groups must be a mapping of at most {MAX_GROUPS} named groups")
    out: dict[str, list[str]] = {}
    total = 0
    for name, ids in value.items():
        _str(name, "a group name", MAX_NAME)
        if not isinstance(ids, list):
            raise PayloadError("each group must be a list of image ids")
        total += len(ids)
        if total > max_images:
            raise PayloadError(f"more than {max_images} images in the groups")
        out[name] = [_str(i, "an image id") for i in ids]
    return out


class Payload:
    """Mixin: JSON round trip of a dataclass."""

    def to_json(self) -> dict[str, Any]:
        """The store value."""
        return asdict(self)  # type: ignore[call-overload, no-any-return]


def _mapping(value: Any, what: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PayloadError(f"{what} must be an object")
    return value


@dataclass(frozen=True)
class PoolResult(Payload):
    """The pool an image set was prepared into (written by the pool and Generate jobs)."""

    set_id: str
    pool_key: str

    @classmethod
    def from_json(cls, value: Any) -> PoolResult | None:
        """Decode (None when absent)."""
        m = _mapping(value, "pool result")
        if m is None:
            return None
        return cls(check_set_id(m.get("set_id")), _key(m.get("pool_key"), "pool key"))


@dataclass(frozen=True)
class AnalysisResult(Payload):
    """A finished Analyze: its key, and the pool and groups it was computed for."""

    analysis_key: str
    pool_key: str
    groups: dict[str, list[str]]

    @classmethod
    def from_json(cls, value: Any) -> AnalysisResult | None:
        """Decode (None when absent)."""
        m = _mapping(value, "analysis result")
        if m is None:
            return None
        return cls(_key(m.get("analysis_key"), "analysis key"), _key(m.get("pool_key"), "pool key"),
                   check_groups(m.get("groups")))


@dataclass(frozen=True)
class AnalysisContext(Payload):
    """The one context every panel follows: image set, its pool, the groups, and the analysis of
    exactly these groups on exactly this pool (``None`` until Analyze, or once any of them changes)."""

    set_id: str = "demo"
    pool_key: str | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)
    analysis_key: str | None = None
    title: str = ""  # human name of the analysis ("cat: normal vs cat: adversarial")

    @classmethod
    def from_json(cls, value: Any) -> AnalysisContext:
        """Decode (the empty context when absent)."""
        m = _mapping(value, "context")
        if m is None:
            return cls()
        return cls(check_set_id(m.get("set_id", "demo")), _opt_key(m.get("pool_key"), "pool key"),
                   check_groups(m.get("groups")), _opt_key(m.get("analysis_key"), "analysis key"),
                   str(m.get("title") or "")[:300])


@dataclass(frozen=True)
class LayerFocus(Payload):
    """The selected layer of an analysis."""

    analysis_key: str
    layer: str

    @classmethod
    def from_json(cls, value: Any) -> LayerFocus | None:
        """Decode (None when absent)."""
        m = _mapping(value, "layer focus")
        if m is None:
            return None
        return cls(_key(m.get("analysis_key"), "analysis key"), _str(m.get("layer"), "layer name", 300))


@dataclass(frozen=True)
class LayerCut(Payload):
    """Visible nodes of the layer DAG (a tree cut) for an analysis."""

    analysis_key: str
    nodes: list[str]

    @classmethod
    def from_json(cls, value: Any) -> LayerCut | None:
        """Decode (None when absent)."""
        m = _mapping(value, "layer cut")
        if m is None:
            return None
        key = _key(m.get("analysis_key"), "analysis key")
        nodes = m.get("nodes")
        if not isinstance(nodes, list) or len(nodes) > 5000:
            raise PayloadError("malformed layer cut")
        return cls(key, [_str(n, "node id", 300) for n in nodes])


@dataclass(frozen=True)
class ClusterClick(Payload):
    """What one treemap cluster carries for a click (Plotly ``customdata``)."""

    layer: str
    channel: int
    size: int
    region: str

    @classmethod
    def from_event(cls, click: Any) -> ClusterClick | None:
        """The cluster of a Plotly ``clickData`` event (None when the click hit no cluster)."""
        m = _mapping(click, "click")
        if m is None:
            return None
        points = m.get("points")
        if not isinstance(points, list) or not points or not isinstance(points[0], Mapping):
            return None
        data = points[0].get("customdata")
        if not isinstance(data, Mapping):
            return None
        return cls(_str(data.get("layer"), "layer name", 300), _int(data.get("channel"), "channel"),
                   _int(data.get("size"), "cluster size", 1), str(data.get("region") or "")[:200])


@dataclass(frozen=True)
class MapFocus(Payload):
    """The selected feature map of an analysis (neuron level)."""

    analysis_key: str
    layer: str
    channel: int
    cluster: str = ""

    @classmethod
    def from_json(cls, value: Any) -> MapFocus | None:
        """Decode (None when absent)."""
        m = _mapping(value, "map focus")
        if m is None:
            return None
        return cls(_key(m.get("analysis_key"), "analysis key"), _str(m.get("layer"), "layer name", 300),
                   _int(m.get("channel"), "channel"),
                   str(m.get("cluster") or "")[:200])


@dataclass(frozen=True)
class ViewResult(Payload):
    """A cached result of a view job (discrepancy maps, faithfulness) and what it was computed for."""

    analysis_key: str
    layer: str
    result_key: str
    channel: int = -1

    @classmethod
    def from_json(cls, value: Any) -> ViewResult | None:
        """Decode (None when absent)."""
        m = _mapping(value, "view result")
        if m is None:
            return None
        return cls(_key(m.get("analysis_key"), "analysis key"), _str(m.get("layer"), "layer name", 300),
                   _key(m.get("result_key"), "result key"), _int(m.get("channel", -1), "channel", -1))


@dataclass(frozen=True)
class ViewState(Payload):
    """The view in a shared URL: image set, groups, statistic, layer, feature map, colour, k, pins."""

    set_id: str = "demo"
    groups: dict[str, list[str]] = field(default_factory=dict)
    stat: str | None = None
    layer: str | None = None
    channel: int | None = None
    color: str | None = None
    k: int | None = None
    pinned: list[str] = field(default_factory=list)
    method: str | None = None

    @classmethod
    def applied(cls, value: Any) -> ViewState | None:
        """The shared view the URL-view store holds once it has been read (None while it is absent,
        pending or abandoned; those markers carry no groups)."""
        return cls.from_json(value) if isinstance(value, Mapping) and "groups" in value else None

    @classmethod
    def from_json(cls, value: Any) -> ViewState | None:
        """Decode (None when absent); unknown keys are ignored."""
        m = _mapping(value, "view")
        if m is None:
            return None
        layer = m.get("layer")
        channel = m.get("channel", m.get("map"))
        pinned = m.get("pinned") or []
        if not isinstance(pinned, list) or len(pinned) > MAX_GROUPS:
            raise PayloadError("pinned must be a short list of layer names")
        return cls(check_set_id(m.get("set_id", "demo")), check_groups(m.get("groups")),
                   _str(m["stat"], "statistic", 40) if m.get("stat") else None,
                   _str(layer, "layer name", 300) if layer else None,
                   _int(channel, "channel") if channel is not None else None,
                   _str(m["color"], "colour", 40) if m.get("color") else None,
                   _int(m["k"], "k", 1, 64) if m.get("k") is not None else None,
                   [_str(p, "layer name", 300) for p in pinned],
                   _str(m["method"], "method", 40) if m.get("method") else None)


def decode_or(default: T, decode: Any, value: Any) -> T | Any:
    """``decode(value)``, or ``default`` when the value is malformed (a stale or hostile client)."""
    try:
        return decode(value)
    except PayloadError:
        return default
