"""Grafana dashboards and datasources, checked against the engine's telemetry names.

``check_dashboard`` returns the problems of one dashboard JSON: a datasource
UID that is not provisioned, a metric or label the engine does not emit, a
variable that is not defined, a TraceQL attribute the engine does not put
on spans. Every name comes from ``asyncflow.telemetry.names``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from asyncflow.telemetry import names

from .promql import inspect, substitute
from .stack import load_yaml

__all__ = [
    "BUILTIN_VARIABLES",
    "Query",
    "check_dashboard",
    "emitted_series",
    "label_values_args",
    "panels",
    "provisioned_datasources",
    "queries",
    "traceql_attributes",
    "variable_query",
]

# Grafana's own variables, and what a static check substitutes for them.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# Labels every scraped series has on both metric paths (the scrape job and
# target directly, or job/instance from service.name/service.instance.id
# through the collector).
SCRAPE_LABELS = frozenset({"job", "instance"})
# TraceQL attribute scopes, and the resource attributes the engine sets.
RESOURCE_ATTRIBUTES = frozenset({names.SERVICE_NAME, names.SERVICE_INSTANCE_ID})
_TRACEQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_TRACEQL_SCOPED = re.compile(
    r"(?<![\w.])(span|resource|event|link|instrumentation)\.([A-Za-z_][A-Za-z0-9_.\-]*)"
)
_TRACEQL_UNSCOPED = re.compile(r"(?<![\w.:)\]])\.([A-Za-z_][A-Za-z0-9_.\-]*)")
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$"
)


@dataclasses.dataclass(frozen=True)
class Query:
    """One panel target."""

    panel: str
    ref: str
    datasource_uid: str
    language: str  # "promql" or "traceql"
    text: str


def provisioned_datasources(directory: Path) -> dict[str, str]:
    """UID -> type of every datasource the provisioning files define."""
    found: dict[str, str] = {}
    for path in sorted(directory.glob("*.y*ml")):
        for source in (load_yaml(path) or {}).get("datasources", []):
            found[source["uid"]] = source["type"]
    return found


def emitted_series() -> dict[str, frozenset[str]]:
    """Every series name the engine emits, with the labels that series may carry."""
    series: dict[str, frozenset[str]] = {}
    for metric in names.PROMETHEUS_NAMES:
        labels = {names.prometheus_label(a) for a in names.METRIC_ATTRIBUTES[metric]}
        for name in names.prometheus_series(metric):
            extra = {"le"} if name.endswith("_bucket") else set()
            series[name] = frozenset(labels | extra | SCRAPE_LABELS)
    return series


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _uid(ref: Any) -> str | None:
    if isinstance(ref, dict):
        uid = ref.get("uid")
        return str(uid) if uid is not None else None
    return None if ref is None else f"<by name: {ref}>"


def queries(board: dict[str, Any]) -> list[Query]:
    """Every target of every panel, with the datasource it runs on."""
    found = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            uid = _uid(target.get("datasource")) or _uid(panel.get("datasource")) or ""
            if "expr" in target:
                language, text = "promql", str(target["expr"])
            else:
                language, text = "traceql", str(target.get("query", ""))
            found.append(
                Query(panel.get("title", ""), target.get("refId", ""), uid, language, text)
            )
    return found


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, dict):
        return str(query.get("query", ""))
    return str(query or variable.get("definition", ""))


def label_values_args(query: str) -> tuple[str | None, str]:
    """``label_values(selector, label)`` as (selector or None, label).

    Raises:
        ValueError: another kind of variable query.
    """
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group("selector"), match.group("label")


_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.S)
_JS_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")


def query_result_expr(query: str) -> str | None:
    """The PromQL of a ``query_result(expr)`` variable query (``None`` for another kind)."""
    match = _QUERY_RESULT.match(query)
    return match.group("expr") if match else None


def variable_regex(variable: dict[str, Any]) -> re.Pattern[str] | None:
    """A variable's ``/regex/`` as Python reads it (Grafana's are JavaScript: ``(?<name>``)."""
    text = str(variable.get("regex") or "")
    if not text:
        return None
    body = text[1 : text.rindex("/")] if text.startswith("/") else text
    return re.compile(_JS_GROUP.sub("(?P<", body))


def query_result_rows(result: list[dict[str, Any]]) -> list[str]:
    """An instant query's series as Grafana's ``query_result()`` shows them to a regex:
    ``name{label="value",...} value timestamp``, labels in the API's (sorted) order."""
    rows = []
    for series in result:
        labels = dict(series["metric"])
        name = labels.pop("__name__", "")
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        t, value = series["value"]
        rows.append(f"{name}{{{inner}}} {value} {int(float(t) * 1000)}")
    return rows


def traceql_attributes(query: str) -> set[tuple[str, str]]:
    """(scope, attribute) of every attribute a TraceQL query reads; scope "" if unscoped."""
    code = _TRACEQL_STRING.sub('""', query)
    found = {(m.group(1), m.group(2)) for m in _TRACEQL_SCOPED.finditer(code)}
    scoped_spans = [m.span() for m in _TRACEQL_SCOPED.finditer(code)]
    for match in _TRACEQL_UNSCOPED.finditer(code):
        if not any(start <= match.start() < end for start, end in scoped_spans):
            found.add(("", match.group(1)))
    return found


def _traceql_problems(query: str) -> list[str]:
    problems = []
    for scope, attribute in sorted(traceql_attributes(query)):
        if scope == "span":
            known = attribute in names.SPAN_ATTRIBUTES
        elif scope == "resource":
            known = attribute in RESOURCE_ATTRIBUTES
        elif scope == "":
            known = attribute in names.SPAN_ATTRIBUTES | RESOURCE_ATTRIBUTES
        else:
            known = False
        if not known:
            where = f"{scope}.{attribute}" if scope else f".{attribute}"
            problems.append(f"TraceQL attribute {where} is not one the engine puts on spans")
    return problems


def _promql_problems(expr: str, placeholders: dict[str, str]) -> list[str]:
    try:
        used = inspect(substitute(expr, placeholders))
    except KeyError as exc:
        return [f"uses undefined variable ${exc.args[0]}"]
    except ValueError as exc:
        return [str(exc)]
    series = emitted_series()
    problems = [
        f"metric {metric!r} is not emitted by the engine"
        for metric in sorted(used.metrics)
        if metric not in series
    ]
    if not used.metrics:
        problems.append("names no metric")
    allowed = set().union(*(series.get(metric, frozenset()) for metric in used.metrics))
    problems += [
        f"label {label!r} is not on {', '.join(sorted(used.metrics))}"
        for label in sorted(used.labels - allowed)
    ]
    return problems


def check_dashboard(board: dict[str, Any], datasources: dict[str, str]) -> list[str]:
    """Every problem of one dashboard; empty when it is consistent with the engine."""
    problems: list[str] = []
    if not board.get("uid"):
        problems.append("dashboard has no fixed uid")
    ids = [panel.get("id") for panel in panels(board)]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")

    for panel in panels(board):
        uid = _uid(panel.get("datasource"))
        if uid is not None and uid not in datasources:
            title = panel.get("title", "")
            problems.append(f"panel {title!r}: datasource uid {uid!r} is not provisioned")
    for annotation in board.get("annotations", {}).get("list", []):
        uid = _uid(annotation.get("datasource"))
        if uid not in datasources:
            name = annotation.get("name", "")
            problems.append(f"annotation {name!r}: datasource uid {uid!r} is not provisioned")

    variables = board.get("templating", {}).get("list", [])
    placeholders = dict(BUILTIN_VARIABLES)
    for variable in variables:
        name = variable.get("name", "")
        where = f"variable ${name}"
        if variable.get("type") == "query":
            uid = _uid(variable.get("datasource"))
            if uid not in datasources:
                problems.append(f"{where}: datasource uid {uid!r} is not provisioned")
            elif datasources[uid] == "prometheus" and query_result_expr(variable_query(variable)):
                expr = query_result_expr(variable_query(variable)) or ""
                problems += [f"{where}: {p}" for p in _promql_problems(expr, placeholders)]
                try:
                    regex = variable_regex(variable)
                except re.error as exc:
                    problems.append(f"{where}: its regex does not compile: {exc}")
                else:
                    if regex is None or not {"text", "value"} <= set(regex.groupindex):
                        problems.append(
                            f"{where}: query_result() needs a regex with text and value"
                        )
            elif datasources[uid] == "prometheus":
                try:
                    selector, label = label_values_args(variable_query(variable))
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
                else:
                    if selector is None:  # every series of every job: not this engine's
                        selector = ""
                        problems.append(f"{where}: label_values() needs a metric selector")
                    problems += [
                        f"{where}: {problem}"
                        for problem in _promql_problems(selector, placeholders)
                    ]
                    used = inspect(substitute(selector, placeholders)).metrics
                    allowed = set().union(*(emitted_series().get(m, set()) for m in used))
                    if label not in allowed:
                        problems.append(f"{where}: label {label!r} is not on {selector!r}")
        placeholders[name] = "x"  # later variables may use this one

    for query in queries(board):
        where = f"panel {query.panel!r} {query.ref}"
        kind = datasources.get(query.datasource_uid)
        if kind is None:
            problems.append(f"{where}: datasource uid {query.datasource_uid!r} is not provisioned")
            continue
        if query.language == "promql":
            if kind != "prometheus":
                problems.append(f"{where}: PromQL on a {kind} datasource")
            problems += [f"{where}: {p}" for p in _promql_problems(query.text, placeholders)]
        else:
            if kind != "tempo":
                problems.append(f"{where}: a {kind} query (only Tempo TraceQL is checked)")
            try:
                substitute(query.text, placeholders)
            except KeyError as exc:
                problems.append(f"{where}: uses undefined variable ${exc.args[0]}")
            problems += [f"{where}: {p}" for p in _traceql_problems(query.text)]
    return problems
