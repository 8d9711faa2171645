"""End-to-end checks of the running stack; run by scripts/stack-smoke.sh.

It runs inside the project's image on the compose network (so it reaches
grafana:3000, prometheus:9090, tempo:3200, jaeger:16686 and dash:8050 by
name, and can import ``asyncflow.telemetry.names``), after the demo
campaign has sent its telemetry through the collector. It prints one line
per check and exits 1 if any failed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncflow.telemetry import names

GRAFANA = "http://grafana:3000"
PROMETHEUS_VIA_GRAFANA = f"{GRAFANA}/api/datasources/proxy/uid/asyncflow-prometheus"
TEMPO = "http://tempo:3200"
JAEGER = "http://jaeger:16686"
DASH = "http://dash:8050"
DASHBOARDS = Path("/smoke/dashboards/grafana")
SERVICE = "asyncflow-demo"  # OTEL_SERVICE_NAME of the demo service
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
GPU_SERIES = set(names.prometheus_series(names.METRIC_NODE_GPU))
_VARIABLE = re.compile(r"\$\{([a-zA-Z0-9_]+)(?::[^}]*)?\}|\$([a-zA-Z0-9_]+)")
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|\\]")
_METRIC = re.compile(r"\b(asyncflow_[a-z_]+)\b")

failed: list[str] = []


def report(what: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {what}{': ' + detail if detail and not ok else ''}")
    if not ok:
        failed.append(what)
    return ok


def get(url: str, params: dict[str, str] | None = None, auth: bool = False) -> Any:
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url)
    if auth:
        user = os.environ["GRAFANA_ADMIN_USER"]
        password = os.environ["GRAFANA_ADMIN_PASSWORD"]
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=15) as response:
        body = response.read()
    return json.loads(body) if body.strip().startswith((b"{", b"[")) else body


def until(probe: Callable[[], Any], timeout: float = 90.0) -> Any:
    """``probe()`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except (OSError, ValueError, KeyError):
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(2)


def substitute(text: str, values: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], text)


def boards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))]


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], target) for target in inner.get("targets", [])]
    return found


def prometheus(path: str, **params: str) -> Any:
    body = get(f"{PROMETHEUS_VIA_GRAFANA}/api/v1/{path}", params, auth=True)
    return body["data"]


# ---------------------------------------------------------------- Grafana
def check_grafana() -> None:
    health = until(lambda: get(f"{GRAFANA}/api/health"))
    report("Grafana is up", bool(health) and health.get("database") == "ok", str(health))
    provisioning = (DASHBOARDS / "provisioning" / "datasources").glob("*.y*ml")
    uids = [u for p in provisioning for u in re.findall(r"^\s*uid:\s*(\S+)", p.read_text(), re.M)]
    for uid in uids:
        try:
            state = get(f"{GRAFANA}/api/datasources/uid/{uid}/health", auth=True)
            report(f"datasource {uid} is healthy", state.get("status") == "OK", str(state))
        except urllib.error.HTTPError as exc:
            report(f"datasource {uid} is healthy", False, f"{exc.code} {exc.read()[:300]!r}")
    for board in boards():
        try:
            found = get(f"{GRAFANA}/api/dashboards/uid/{board['uid']}", auth=True)
            report(
                f"dashboard {board['uid']} is provisioned",
                found["dashboard"]["uid"] == board["uid"],
            )
        except urllib.error.HTTPError as exc:
            report(f"dashboard {board['uid']} is provisioned", False, str(exc))


# ---------------------------------------------------------------- metrics
def check_series_names() -> str:
    """Every engine series is in Prometheus under its name; returns the demo's instance."""
    expected = {s for m in names.PROMETHEUS_NAMES for s in names.prometheus_series(m)}
    stored = set(until(lambda: prometheus("label/__name__/values")) or [])
    missing = expected - stored - GPU_SERIES
    report("Prometheus stores every series of asyncflow.telemetry.names", not missing, str(missing))
    series = until(
        lambda: prometheus("series", **{"match[]": f'{names.PROM_TASKS_ACTIVE}{{job="{SERVICE}"}}'})
    )
    if not report(f"series of job {SERVICE} (the demo's service.name)", bool(series)):
        return ".*"
    instance = str(series[0]["instance"])
    report("instance is the engine session", instance.startswith("asyncflow.session."), instance)
    allowed = {
        names.prometheus_label(a) for a in names.METRIC_ATTRIBUTES[names.METRIC_TASKS_ACTIVE]
    }
    extra = (
        {k for k in series[0] if not k.startswith("otel_scope_")}
        - allowed
        - {
            "__name__",
            "job",
            "instance",
        }
    )
    report("no labels beyond the engine's attributes, job and instance", not extra, str(extra))
    return instance


def resolve(board: dict[str, Any], instance: str) -> dict[str, str]:
    values = dict(BUILTINS)
    for variable in board["templating"]["list"]:
        name = variable["name"]
        if variable["type"] != "query":
            values[name] = ""
            continue
        if name == "run":
            values[name] = _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(), instance)
            continue
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(query, values))
        assert match, query
        options = until(lambda m=match: prometheus(f"label/{m[2]}/values", **{"match[]": m[1]}))
        values[name] = _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(), sorted(options or ["?"])[0])
    return values


def check_dashboard_queries(instance: str) -> None:
    has_gpu = bool(prometheus("series", **{"match[]": names.PROM_NODE_GPU}))
    for board in boards():
        values = resolve(board, instance)
        for title, target in targets(board):
            if "expr" not in target:
                continue
            expr = substitute(target["expr"], values)
            what = f"{board['uid']}: {title!r} {target['refId']} has data"
            if not has_gpu and set(_METRIC.findall(expr)) <= GPU_SERIES:
                print(f"SKIP  {what} (no GPU on this machine)")
                continue
            result = until(lambda e=expr: prometheus("query", query=e)["result"], timeout=30)
            report(what, bool(result), expr)


# ---------------------------------------------------------------- traces
def tempo_search(query: str) -> list[dict[str, Any]]:
    now = int(time.time())
    params = {"q": query, "limit": "20", "start": str(now - 3600), "end": str(now)}
    return list(get(f"{TEMPO}/api/search", params).get("traces", []))


def check_traces(instance: str) -> str:
    workflows = until(
        lambda: tempo_search(
            f'{{ resource.service.name = "{SERVICE}" && span.asyncflow.level = "workflow" }}'
            " | select(span.asyncflow.workflow_id, span.asyncflow.workflow.name)"
        )
    )
    if not report("Tempo finds the demo's workflow spans", bool(workflows)):
        return ""
    trace_id: str = workflows[0]["traceID"]
    attributes = {
        a["key"]: a["value"].get("stringValue", "")
        for s in workflows[0]["spanSets"][0]["spans"]
        for a in s.get("attributes", [])
    }
    tempo_trace = until(lambda: get(f"{TEMPO}/api/traces/{trace_id}"))
    report("Tempo returns the trace by id", b"asyncflow.level" in json.dumps(tempo_trace).encode())
    services = until(lambda: SERVICE in get(f"{JAEGER}/api/services")["data"])
    report(f"Jaeger knows the service {SERVICE}", bool(services))
    jaeger_trace = until(lambda: get(f"{JAEGER}/api/traces/{trace_id}")["data"])
    report("Jaeger has the same trace", bool(jaeger_trace) and bool(jaeger_trace[0]["spans"]))

    for board in boards():
        values = resolve(board, instance) | {
            "trace_id": trace_id,
            "workflow_id": attributes.get(names.WORKFLOW_ID, ""),
            "workflow": attributes.get(names.WORKFLOW_NAME, ""),
            "run": instance,
        }
        for title, target in targets(board):
            if target.get("queryType") != "traceql":
                continue
            query = substitute(target["query"], values)
            what = f"{board['uid']}: {title!r} {target['refId']} (TraceQL) has data"
            if re.fullmatch(r"[0-9a-f]+", query):
                report(what, bool(until(lambda q=query: get(f"{TEMPO}/api/traces/{q}"))))
            else:
                report(what, bool(until(lambda q=query: tempo_search(q), timeout=30)), query)
    return trace_id


def check_dashboard_sources(trace_id: str) -> None:
    """The Dash app's own Jaeger and Tempo adapters read the demo's trace."""
    from asyncflow.dashboard.sources import JaegerSource, TempoSource

    for source in (
        JaegerSource(JAEGER, service=SERVICE, trace_id=trace_id),
        TempoSource(TEMPO, service=SERVICE, trace_id=trace_id),
    ):
        run = until(lambda s=source: s.poll().tasks or None)
        report(f"the dashboard's {source.what} source reads the demo's tasks", bool(run))


def main() -> int:
    check_grafana()
    instance = check_series_names()
    check_dashboard_queries(instance)
    trace_id = check_traces(instance)
    if trace_id:
        check_dashboard_sources(trace_id)
    page = until(lambda: get(DASH))
    report("the Dash app answers", bool(page))
    print(f"\n{len(failed)} check(s) failed" if failed else "\nevery check passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
