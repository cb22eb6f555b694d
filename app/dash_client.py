"""A small HTTP client of a running Dash 4.4 app: page load, plain and background callbacks.

It speaks the protocol of dash-renderer 4.4 (``handleServerside`` in ``dash_renderer.dev.js``):

* ``GET /`` carries ``<script id="_dash-config">``; its ``end_id`` is a server-signed token of
  this page load. Every ``POST /_dash-update-component`` echoes it as ``?endId=``; the server
  HMAC-binds background handles (``cacheKey``, ``job``) to it, so a handle only works with the
  page load that received it.
* The body is ``{output, outputs, inputs, state, changedPropIds, parsedChangedPropsIds}``; 200
  answers ``{"multi": true, "response": {id: {prop: value}}}``, 204 means PreventUpdate.
* A background callback first answers ``{"cacheKey", "job"}`` (+ ``cancel``, ``progressDefault``);
  the client then re-posts the body, input and state values set to null, with
  ``?endId&cacheKey&job`` until the answer has ``response`` (the renderer waits the callback's
  ``background.interval``, 1000 ms by default; here ``poll_s``); meanwhile answers carry ``progress``
  (``{"id.prop": value}``). A job that ended without result (cancelled) answers 204.
* A new call for the outputs of a job still pending adds ``?oldJob=<job>``: the server ends it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urljoin

import requests

log = logging.getLogger(__name__)

ComponentId = str | dict[str, Any]
Prop = tuple[ComponentId, str]
_CONFIG = re.compile(r'<script id="_dash-config" type="application/json"[^>]*>(.*?)</script>', re.S)


class DashCallbackError(RuntimeError):
    """A callback request failed (HTTP error, network error, or a background job timed out)."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def stringify_id(cid: ComponentId) -> str:
    """A component id as Dash writes it in prop ids (dict ids: keys sorted, as ``dash._utils``)."""
    if isinstance(cid, str):
        return cid
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(cid[k])}" for k in sorted(cid)) + "}"


def output_string(outputs: Sequence[Prop]) -> str:
    """The ``output`` field: ``id.prop`` for one output, ``..a.p...b.q..`` for several."""
    parts = [f"{stringify_id(i)}.{p}" for i, p in outputs]
    return parts[0] if len(parts) == 1 else ".." + "...".join(parts) + ".."


def parse_output_string(output: str) -> list[tuple[str, str]]:
    """``(id, prop)`` pairs of an ``output`` string (props keep any ``@hash`` of allow_duplicate)."""
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    return [(p.rsplit(".", 1)[0], p.rsplit(".", 1)[1]) for p in parts]


def parse_config(html: str) -> dict[str, Any]:
    """The ``_dash-config`` JSON of a Dash page."""
    m = _CONFIG.search(html)
    if m is None:
        raise DashCallbackError("no _dash-config script in the page (not a Dash app?)")
    config: dict[str, Any] = json.loads(m.group(1))
    return config


class DashClient:
    """One simulated browser tab: a ``requests.Session`` (cookies kept), one page load's ``end_id``,
    and the page state ``props`` (layout components by id, updated by every answer) for :meth:`fire`."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None = None, timeout: float = 30,
                 poll_s: float = 0.5, job_timeout: float = 300) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.poll_s = poll_s
        self.job_timeout = job_timeout
        self.session = requests.Session()
        self.session.auth = auth
        self.config: dict[str, Any] = {}
        self.layout: Any = None
        self.dependencies: list[dict[str, Any]] = []
        self.props: dict[str, dict[str, Any]] = {}  # page state: component id -> props (layout + answers)
        self.last_progress: dict[str, Any] = {}
        self._pending: dict[str, str] = {}  # output string -> job handle still running

    @property
    def end_id(self) -> str | None:
        """The signed page-load token (None before :meth:`load`)."""
        return self.config.get("end_id")

    def _url(self, path: str) -> str:
        return urljoin(self.base_url, (self.config.get("requests_pathname_prefix") or "/") + path)

    def _get(self, url: str) -> requests.Response:
        try:
            r = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise DashCallbackError(f"GET {url}: {exc}") from exc
        if r.status_code != 200:
            raise DashCallbackError(f"GET {url}: HTTP {r.status_code}", r.status_code, r.text[:300])
        return r

    def load(self) -> dict[str, Any]:
        """Load the page like a browser: config (new ``end_id``), layout, dependencies; returns the config."""
        self.config = parse_config(self._get(self.base_url).text)
        self.layout = self._get(self._url("_dash-layout")).json()
        self.dependencies = self._get(self._url("_dash-dependencies")).json()
        self._pending.clear()
        self.props = {stringify_id(p["id"]): dict(p) for p in _components(self.layout) if "id" in p}
        log.debug("loaded %s: %d callbacks", self.base_url, len(self.dependencies))
        return self.config

    def callback_for(self, outputs: Sequence[Prop]) -> dict[str, Any] | None:
        """The dependency entry with exactly these outputs (``@hash`` suffixes may be left out)."""
        wanted = {(stringify_id(i), p) for i, p in outputs}
        bare = {(i, p.split("@")[0]) for i, p in wanted}
        for exact in (True, False):
            for dep in self.dependencies:
                got = set(parse_output_string(dep["output"]))
                if (got == wanted) if exact else ({(i, p.split("@")[0]) for i, p in got} == bare):
                    return dep
        return None

    def body(self, outputs: Sequence[Prop], inputs: Sequence[tuple[ComponentId, str, Any] | Any],
             state: Sequence[tuple[ComponentId, str, Any] | Any] = (),
             changed: str | Sequence[str] | None = None) -> dict[str, Any]:
        """The request body the renderer sends for the callback of ``outputs`` (see :meth:`call`)."""
        dep = self.callback_for(outputs)
        output = dep["output"] if dep else output_string(outputs)
        outs = [{"id": json.loads(i) if i.startswith("{") else i, "property": p}
                for i, p in parse_output_string(output)]

        def items(seq: Sequence[Any]) -> list[Any]:
            return [{"id": x[0], "property": x[1], "value": x[2]} if isinstance(x, tuple) else x for x in seq]

        ins, sts = items(inputs), items(state)
        if changed is None:
            first = ins[0] if ins and isinstance(ins[0], dict) else None
            changed = [f"{stringify_id(first['id'])}.{first['property']}"] if first else []
        changed = [changed] if isinstance(changed, str) else list(changed)
        parsed = [json.loads(c.rsplit(".", 1)[0]) if c.startswith("{") else c for c in changed]
        body = {"output": output, "outputs": outs if len(outs) > 1 else outs[0], "inputs": ins,
                "changedPropIds": changed, "parsedChangedPropsIds": parsed}
        if sts:
            body["state"] = sts
        return body

    def fire(self, outputs: Sequence[Prop], values: dict[str, Any] | None = None,
             changed: str | Sequence[str] | None = None, job_timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Run the callback of ``outputs`` as the renderer would: every input and state value comes from
        the page state (layout + earlier answers), ``values`` (``"id.prop": value``, set on the page
        first) overriding it; ``changed`` defaults to the keys of ``values``. ``ALL`` wildcards
        match components of the page state."""
        dep = self.callback_for(outputs)
        if dep is None:
            raise DashCallbackError(f"no callback has the outputs {outputs}")
        for key, value in (values or {}).items():
            cid, prop = key.rsplit(".", 1)
            self.props.setdefault(cid, {})[prop] = value

        def item(d: dict[str, Any]) -> Any:
            pid, prop = d["id"], d["property"]
            if isinstance(pid, dict) and any(isinstance(v, list) for v in pid.values()):
                return [{"id": p["id"], "property": prop, "value": p.get(prop)} for p in self.props.values()
                        if isinstance(p.get("id"), dict) and p["id"].keys() == pid.keys()
                        and all(isinstance(v, list) or p["id"][k] == v for k, v in pid.items())]
            return (pid, prop, self.props.get(stringify_id(pid), {}).get(prop))

        return self.call(outputs, [item(d) for d in dep["inputs"]], [item(d) for d in dep.get("state") or []],
                         list(values or {}) if changed is None else changed, job_timeout)

    def call(self, outputs: Sequence[Prop], inputs: Sequence[tuple[ComponentId, str, Any] | Any],
             state: Sequence[tuple[ComponentId, str, Any] | Any] = (), changed: str | Sequence[str] | None = None,
             job_timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Run the callback of ``outputs``; returns ``{component_id: {prop: value}}`` ({} on PreventUpdate).

        ``inputs``/``state`` items are ``(id, prop, value)`` or ready-made renderer items (a list of
        them for an ``ALL`` wildcard). ``changed`` (prop ids) defaults to the first input; ``[]`` is an
        initial call. Background callbacks are polled every ``poll_s`` until done or ``job_timeout``.
        """
        body = self.body(outputs, inputs, state, changed)
        output = body["output"]
        args = [("endId", self.end_id)] if self.end_id else []
        old = self._pending.pop(output, None)
        data = self.post(body, args + ([("oldJob", old)] if old else []))
        if "cacheKey" in data and "response" not in data:
            data = self._poll(body, args, data, job_timeout or self.job_timeout)
        result = self._result(data, output)
        for cid, props in result.items():
            self.props.setdefault(cid, {}).update(props)
        return result

    def _poll(self, body: dict[str, Any], args: list[tuple[str, Any]], first: dict[str, Any],
              job_timeout: float) -> dict[str, Any]:
        """Re-post a background callback (values nulled, signed handles) until it has a response."""
        output = body["output"]
        handles = [("cacheKey", first["cacheKey"]), ("job", first["job"])]
        self._pending[output] = first["job"]
        blank = {k: _nulled(v) if k in ("inputs", "state") else v for k, v in body.items()}
        deadline = time.monotonic() + job_timeout
        data = first
        while "response" not in data:
            if time.monotonic() > deadline:
                raise DashCallbackError(f"{output}: background job still running after {job_timeout:.0f} s")
            time.sleep(self.poll_s)
            data = self.post(blank, args + handles) or {"response": {}}  # 204: cancelled / no update
            if data.get("progress"):
                self.last_progress = data["progress"]
                log.debug("%s progress %s", output, data["progress"])
        self._pending.pop(output, None)
        return data

    def post(self, body: dict[str, Any], args: list[tuple[str, Any]]) -> dict[str, Any]:
        """One POST /_dash-update-component with query ``args``; the JSON answer, {} for 204."""
        headers = {"Content-Type": "application/json"}
        csrf = self.session.cookies.get(self.config.get("csrf_token_name") or "_csrf_token")
        if csrf:
            headers[self.config.get("csrf_header_name") or "X-CSRFToken"] = csrf
        try:
            r = self.session.post(self._url("_dash-update-component"), params=args, data=json.dumps(body),
                                  headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise DashCallbackError(f"{body['output']}: {exc}") from exc
        if r.status_code == 204:
            return {}
        if r.status_code != 200:
            raise DashCallbackError(f"{body['output']}: HTTP {r.status_code}: {r.text[:200]}", r.status_code,
                                    r.text[:300])
        answer: dict[str, Any] = r.json()
        return answer

    @staticmethod
    def _result(data: dict[str, Any], output: str) -> dict[str, dict[str, Any]]:
        """Outputs (+ any ``set_props`` side updates) as ``{component_id: {prop: value}}``."""
        response = data.get("response") or {}
        if data.get("multi") is False and "props" in response:  # pre-multi renderers' single output
            response = {output.rsplit(".", 1)[0]: response["props"]}
        out: dict[str, dict[str, Any]] = {k: dict(v) for k, v in response.items()}
        for cid, props in (data.get("sideUpdate") or {}).items():
            out.setdefault(cid, {}).update(props)
        return out


def _components(tree: Any) -> Iterator[dict[str, Any]]:
    """The props of every component in a serialized layout tree."""
    if isinstance(tree, list):
        for x in tree:
            yield from _components(x)
    elif isinstance(tree, dict) and isinstance(tree.get("props"), dict):
        yield tree["props"]
        for v in tree["props"].values():
            yield from _components(v)


def _nulled(items: list[Any]) -> list[Any]:
    """Items with values set to None, as a background poll sends them (wildcard lists stay as they are:
    the renderer sets ``value`` on the JS array, which JSON ignores)."""
    return [x if isinstance(x, list) else dict(x, value=None) for x in items]
