"""No request ends in a 500: every callback answers hostile but well-formed values with a message
(HTTP 200) or no change (204). Plain callbacks are posted over HTTP; background jobs are called as
the functions the job processes run (their first answer is always a job handle)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from dash import no_update

from app.config import AppConfig
from app.dash_client import parse_output_string
from app.jobs import tasks

FAKE_KEY = "analysis/v1:" + "0" * 64
HOSTILE: list[Any] = [
    None, -1, 10**12, 1.5, True, "", "x" * 5000, "../../etc/passwd", [], [1, "a", None], {},
    {"analysis_key": FAKE_KEY, "layer": "nope", "channel": -3, "pool_key": 5, "set_id": "../x", "groups": {"a": [1]}},
    {"analysis_key": FAKE_KEY, "layer": "layer1.0.relu1", "channel": 10**9, "pool_key": FAKE_KEY, "set_id": "demo",
     "groups": {"a": ["nope"], "b": ["x"]}, "nodes": ["a"] * 3, "result_key": FAKE_KEY},
    {"points": [{"customdata": {"layer": "layer1.0.relu1", "channel": -1, "size": 1, "region": "A"}}]},
    {"points": [{"customdata": [1, 2, 3]}]}, {"id": "nope", "is_group": True}, {"position": {"x": "a"}},
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from app.server.factory import create_app

    cache = Path(tmp_path_factory.mktemp("no500")) / "cache"
    app = create_app(AppConfig(model="cifar-resnet20", cache_dir=cache, max_images=20, job_launcher=False))
    return app, app.server.test_client()


def plain_callbacks(client) -> list[dict[str, Any]]:
    deps = client.get("/_dash-dependencies").get_json()
    return [d for d in deps if not d.get("background") and not d.get("clientside_function")]


def body(dep: dict[str, Any], value: Any) -> dict[str, Any]:
    """A renderer-shaped request with every input and state set to ``value`` (wildcards: one item)."""
    def item(d: dict[str, Any]) -> Any:
        if isinstance(d["id"], str) and d["id"].startswith("{"):  # pattern-matching (ALL): a list of items
            kind = json.loads(d["id"])["type"]
            return [{"id": {"type": kind, "index": "x"}, "property": d["property"], "value": value}]
        return {"id": d["id"], "property": d["property"], "value": value}

    outputs: list[Any] = []
    for cid, prop in parse_output_string(dep["output"]):
        outputs.append([] if cid.startswith("{") else {"id": cid, "property": prop.split("@")[0]})
    first = dep["inputs"][0]
    return {"output": dep["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [item(d) for d in dep["inputs"]], "state": [item(d) for d in dep.get("state", [])],
            "changedPropIds": [f"{first['id']}.{first['property']}"]}


def test_every_plain_callback_answers_hostile_values_without_500(served):
    app, client = served
    deps = plain_callbacks(client)
    covered = set()
    for dep, value in itertools.product(deps, HOSTILE):
        r = client.post("/_dash-update-component", json=body(dep, value))
        assert r.status_code in (200, 204), (dep["output"], repr(value)[:80], r.status_code, r.data[:300])
        covered.add(dep["output"])
    background = [k for k, v in app.callback_map.items() if v.get("background") is not None]
    assert len(covered) + len(background) == len(app.callback_map)  # every callback is covered
    assert len(covered) >= 25


def progress(_value) -> None:
    pass


JOBS = [
    (tasks.prepare_pool, 2),
    (tasks.generate_pool, 6),
    (tasks.run_analysis, 6),
    (tasks.discrepancy, 4),
    (tasks.faithfulness, 3),
]


@pytest.mark.parametrize(("job", "n_args"), JOBS, ids=[j.__name__ for j, _ in JOBS])
def test_every_job_answers_hostile_values_with_a_message(served, job, n_args):
    app, _ = served
    services = app.server.extensions["aevis_services"]
    for value in HOSTILE:
        if job is tasks.prepare_pool and value in (None, ""):
            continue  # None means "the demo set": a valid request that builds a pool
        out = job(progress, services, *([value] * n_args))
        assert isinstance(out, tuple) and len(out) == 2
        assert out[1] is not no_update and isinstance(out[1], str) and out[1], (job.__name__, value, out)
        assert "Traceback" not in out[1] and "internal error" not in out[1], (job.__name__, value, out)


def test_generate_refuses_a_billion_steps(served):
    app, _ = served
    services = app.server.extensions["aevis_services"]
    out = tasks.generate_pool(progress, services, 1, "pgd", "8/255", 10**9, None, "demo")
    assert out[0] is no_update and "steps must be a whole number from 1 to 200" in out[1]


def test_analyze_refuses_an_unknown_datapath_method(served):
    app, _ = served
    services = app.server.extensions["aevis_services"]
    out = tasks.run_analysis(progress, services, 1, None, {"a": ["x"], "b": ["y"]},
                             {"set_id": "demo", "pool_key": FAKE_KEY.replace("analysis", "pool")}, "demo", "magic")
    assert out[0] is no_update and "unknown datapath method 'magic'" in out[1]
