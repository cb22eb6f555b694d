"""DashClient against the real app over HTTP: page load, background pool and Analyze, plain callbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.dash_client import (
    DashCallbackError,
    DashClient,
    output_string,
    parse_config,
    parse_output_string,
    stringify_id,
)
from tests.services import ANALYZE, POOL, serve


def test_output_strings_round_trip() -> None:
    assert output_string([("a", "x")]) == "a.x"
    multi = output_string([("a", "x"), ({"type": "t", "index": 1}, "y")])
    assert multi == '..a.x...{"index":1,"type":"t"}.y..'
    assert parse_output_string(multi) == [("a", "x"), ('{"index":1,"type":"t"}', "y")]
    assert parse_output_string("pool-key.data@ab12") == [("pool-key", "data@ab12")]
    assert stringify_id({"type": "thumb", "index": ["ALL"]}) == '{"index":["ALL"],"type":"thumb"}'


def test_parse_config() -> None:
    page = '<html><script id="_dash-config" type="application/json">{"end_id": "x~y"}</script></html>'
    assert parse_config(page)["end_id"] == "x~y"
    with pytest.raises(DashCallbackError):
        parse_config("<html></html>")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from app.config import AppConfig

    cache = Path(tmp_path_factory.mktemp("dash-client")) / "cache"
    with serve(AppConfig(model="cifar-resnet20", cache_dir=cache, max_images=20)) as url:
        yield url


def text_of(children: Any) -> str:
    """Serialized component tree (enough to look for a phrase)."""
    return json.dumps(children)


@pytest.mark.slow
def test_pool_analyze_and_views_over_http(base_url: str) -> None:
    client = DashClient(base_url, poll_s=0.25, job_timeout=120)
    config = client.load()
    assert client.end_id and "~" in client.end_id  # signed page-load token
    assert config["requests_pathname_prefix"] == "/"
    assert client.props["stat"]["value"] == "similarity"  # layout indexed: the page state
    pool_dep = client.callback_for(POOL)
    assert pool_dep is not None and pool_dep["background"]

    # Background callback, initial call (no changed prop): polled until the pool is ready.
    out = client.fire(POOL, changed=[])
    pool = out["pool-result"]["data"]
    assert pool["set_id"] == "demo" and pool["pool_key"] and out["pool-error"]["children"] == "", out
    assert client.props["pool-result"]["data"] == pool  # answers update the page state

    out = client.fire([("model-info", "children"), ("filter-class", "options"), ("gen-source", "options")],
                      changed=["pool-result.data"])
    assert "20 images + 20" in out["model-info"]["children"]
    out = client.fire([("preset", "options")], changed=["pool-result.data"])
    presets = [o["value"] for o in out["preset"]["options"]]
    preset = "cat: normal vs adversarial" if "cat: normal vs adversarial" in presets else presets[0]

    # A plain callback with an ALL wildcard input (no remove buttons on the page: an empty list).
    groups = client.fire([("groups", "data"), ("groups-hint", "children")], {"preset.value": preset})["groups"]["data"]
    assert len(groups) == 2 and all(groups.values())

    out = client.fire(ANALYZE, {"analyze.n_clicks": 1})
    assert out["analyze-error"]["children"] == "", out
    result = out["analysis-result"]["data"]
    assert result["analysis_key"] and result["pool_key"] == pool["pool_key"] and result["groups"] == groups

    # call(): explicit inputs, as the renderer sends them.
    context = {"set_id": "demo", "pool_key": pool["pool_key"], "groups": groups,
               "analysis_key": result["analysis_key"], "title": "t"}
    out = client.call([("analysis-summary", "children")], [("context", "data", context)])
    assert "diverging point" in text_of(out["analysis-summary"]["children"])

    # PreventUpdate answers 204 -> {}.
    assert client.call([("selection", "data")], [[], ("clear-selection", "n_clicks", 0), ("pool-result", "data", pool)],
                       [("selection", "data", [])], changed=[]) == {}


@pytest.mark.slow
def test_handles_are_bound_to_the_page_load(base_url: str) -> None:
    """Each page load gets its own end_id; background handles do not work with another page load's."""
    a, b = DashClient(base_url), DashClient(base_url)
    a.load()
    b.load()
    assert a.end_id != b.end_id
    outputs = POOL
    dep = a.callback_for(outputs)
    assert dep is not None
    body = a.body(outputs, [(d["id"], d["property"], None) for d in dep["inputs"]], changed=[])
    first = a.post(body, [("endId", a.end_id)])
    assert "cacheKey" in first and "job" in first and "response" not in first
    # b replays a's handles with its own end_id: the signatures do not verify, nothing is read (204).
    replay = b.post(body, [("endId", b.end_id), ("cacheKey", first["cacheKey"]), ("job", first["job"])])
    assert replay == {}
    # a's own handles work: let its job finish (no job process left behind).
    done = a._poll(body, [("endId", a.end_id)], first, 120)
    assert a._result(done, body["output"])["pool-result"]["data"]["pool_key"]
