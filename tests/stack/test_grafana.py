"""Grafana provisioning and dashboards, checked against the engine's telemetry names.

Every datasource UID a dashboard uses is provisioned, every metric and label
a PromQL expression names is one the engine emits (``asyncflow.telemetry.
names``), every expression parses (``promtool check rules``, the real
Prometheus parser), and TraceQL reads only attributes the engine sets. The
checker is also run on broken fixtures, which it must reject.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncflow.telemetry import names

from ..support.grafana import (
    BUILTIN_VARIABLES,
    check_dashboard,
    label_values_args,
    panels,
    provisioned_datasources,
    queries,
    query_result_expr,
    query_result_rows,
    traceql_attributes,
    variable_query,
    variable_regex,
)
from ..support.prometheus import prometheus_binaries
from ..support.promql import inspect, substitute
from ..support.stack import (
    DASHBOARDS,
    DATASOURCES,
    compose_model,
    endpoint_host_port,
    listening_ports,
    load_yaml,
)

FIXTURES = Path(__file__).parent / "fixtures"
BOARDS = sorted(DASHBOARDS.glob("*.json"))
UIDS = {"asyncflow-campaign", "asyncflow-workflow", "asyncflow-resources"}
TITLE = "asyncflow 2026-12-06 00:33:47 UTC"


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return board


def by_uid() -> dict[str, dict[str, Any]]:
    return {load(path)["uid"]: load(path) for path in BOARDS}


def placeholders(board: dict[str, Any]) -> dict[str, str]:
    values = dict(BUILTIN_VARIABLES)
    for variable in board.get("templating", {}).get("list", []):
        values[variable["name"]] = "x"
    return values


def promql_of(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard, panels and variables, placeholders in."""
    values = placeholders(board)
    found = [substitute(q.text, values) for q in queries(board) if q.language == "promql"]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and variable["datasource"]["type"] == "prometheus":
            query = variable_query(variable)
            selector = query_result_expr(query)
            if selector is None:
                selector, _ = label_values_args(query)
            if selector:
                found.append(substitute(selector, values))
    return found


def promtool_check(expressions: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on one recording rule per expression."""
    _, promtool = prometheus_binaries()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:expression_{i}", "expr": expr}
                    for i, expr in enumerate(expressions)
                ],
            }
        ]
    }
    path = workdir / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules, width=1000), encoding="utf-8")
    return subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------- provisioning


def test_datasources_have_fixed_uids_and_point_at_compose_services() -> None:
    datasources = provisioned_datasources(DATASOURCES)
    assert datasources == {
        "asyncflow-prometheus": "prometheus",
        "asyncflow-tempo": "tempo",
        "asyncflow-jaeger": "jaeger",
    }
    svc = compose_model()["services"]
    for path in DATASOURCES.glob("*.y*ml"):
        for source in load_yaml(path)["datasources"]:
            host, port = endpoint_host_port(source["url"])
            assert port in listening_ports(svc[host]), source["url"]
            destinations = source.get("jsonData", {}).get("exemplarTraceIdDestinations", [])
            for destination in destinations:  # exemplars open the trace in a provisioned datasource
                assert datasources[destination["datasourceUid"]] in ("tempo", "jaeger")
    prometheus = load_yaml(DATASOURCES / "asyncflow.yaml")["datasources"][0]
    scrape = load_yaml(DASHBOARDS.parent / "prometheus" / "prometheus.yml")["global"]
    assert prometheus["jsonData"]["timeInterval"] == scrape["scrape_interval"]


def test_the_three_dashboards_exist_with_fixed_unique_uids() -> None:
    uids = [load(path)["uid"] for path in BOARDS]
    assert len(uids) == len(set(uids))
    assert set(uids) >= UIDS
    assert {path.name for path in BOARDS} >= {
        "campaign-overview.json",
        "workflow.json",
        "resources.json",
    }


# ---------------------------------------------------------------- the checker, on the dashboards


@pytest.mark.parametrize("path", BOARDS, ids=[path.stem for path in BOARDS])
def test_dashboard_uses_only_provisioned_datasources_and_emitted_names(path: Path) -> None:
    assert check_dashboard(load(path), provisioned_datasources(DATASOURCES)) == []


def test_every_promql_expression_parses(tmp_path: Path) -> None:
    expressions = [expr for path in BOARDS for expr in promql_of(load(path))]
    assert len(expressions) >= 30
    result = promtool_check(expressions, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(expressions)} rules found" in result.stdout


def test_traceql_reads_only_span_attributes_the_engine_sets() -> None:
    traceql = [q for path in BOARDS for q in queries(load(path)) if q.language == "traceql"]
    attributes = set().union(*(traceql_attributes(q.text) for q in traceql))
    assert ("span", "asyncflow.workflow.name") in attributes
    assert ("span", "asyncflow.level") in attributes
    assert ("resource", "service.instance.id") in attributes


def test_dashboards_show_what_the_spec_asks() -> None:
    boards = by_uid()

    def metrics(uid: str, kind: str | None = None) -> set[str]:
        board = boards[uid]
        values = placeholders(board)
        titles = {p["title"] for p in panels(board) if kind is None or p["type"] == kind}
        return set().union(
            *(
                inspect(substitute(q.text, values)).metrics
                for q in queries(board)
                if q.language == "promql" and q.panel in titles
            )
        )

    assert metrics("asyncflow-campaign") >= {
        "asyncflow_task_duration_seconds_count",  # tasks by state, throughput, failure ratio
        "asyncflow_task_run_duration_seconds_bucket",  # run time p50/p95 by task name
        "asyncflow_tasks_active",
        "asyncflow_workflows_active",
        "asyncflow_task_queue_duration_seconds_bucket",
    }
    workflow = boards["asyncflow-workflow"]
    variables = {v["name"]: v for v in workflow["templating"]["list"]}
    assert label_values_args(variable_query(variables["workflow"]))[1] == "asyncflow_workflow_name"
    # The run selector: a run's service name and start as text, its instance as value.
    run = variables["run"]
    assert query_result_expr(variable_query(run)) == names.PROM_SESSION_INFO
    regex = variable_regex(run)
    assert regex is not None
    row = query_result_rows(
        [
            {
                "metric": {
                    "__name__": names.PROM_SESSION_INFO,
                    names.prometheus_label(
                        names.SESSION_TITLE
                    ): "asyncflow 2026-12-06 00:33:47 UTC",
                    "instance": "asyncflow.session.1a2b",
                    "job": "asyncflow",
                },
                "value": [1796518000.5, "1"],
            }
        ]
    )[0]
    found = regex.search(row)
    assert found is not None, row
    assert found.group("text") == TITLE
    assert found.group("value") == "asyncflow.session.1a2b"
    kinds = {p["type"] for p in panels(workflow)}
    assert {"traces", "table"} <= kinds
    assert "asyncflow_task_run_duration_seconds_bucket" in metrics("asyncflow-workflow")
    # Only the phase histograms measure time: the total is used for counts alone.
    for uid in boards:
        assert "asyncflow_task_duration_seconds_bucket" not in metrics(uid)
    assert {"asyncflow_resource_slots"} <= metrics("asyncflow-resources", "timeseries")
    assert {"asyncflow_resource_slots"} <= metrics("asyncflow-resources", "state-timeline")
    assert {
        "asyncflow_node_cpu_utilization_percent",
        "asyncflow_node_gpu_utilization_percent",
    } <= metrics("asyncflow-resources")


# ---------------------------------------------------------------- the checker, on bad input


def fixture_problems(name: str) -> list[str]:
    return check_dashboard(load(FIXTURES / name), provisioned_datasources(DATASOURCES))


def test_an_unknown_datasource_uid_is_rejected() -> None:
    problems = fixture_problems("unknown-datasource.json")
    assert "panel 'Active tasks': datasource uid 'prometheus-typo' is not provisioned" in problems
    assert "panel 'Active tasks' A: datasource uid 'prometheus-typo' is not provisioned" in problems


def test_a_metric_or_label_the_engine_does_not_emit_is_rejected() -> None:
    problems = fixture_problems("unknown-metric.json")
    assert (
        "panel 'Task throughput' A: metric 'asyncflow_tasks_completed_total'"
        " is not emitted by the engine"
    ) in problems
    assert any(
        p.startswith("panel 'Task throughput' B: label 'asyncflow_task_uid'") for p in problems
    ), problems
    # asyncflow_tasks_active has no workflow label: the variable would list nothing.
    assert (
        "variable $workflow: label 'asyncflow_workflow_name' is not on 'asyncflow_tasks_active'"
    ) in problems


def test_traceql_on_attributes_the_engine_does_not_set_is_rejected() -> None:
    problems = fixture_problems("unknown-span-attribute.json")
    where = "panel 'Slow requests' A: "
    assert where + "uses undefined variable $pod" in problems
    assert where + "TraceQL attribute span.http.route is not one the engine puts on spans" in (
        problems
    )
    assert (
        where + ("TraceQL attribute resource.k8s.pod.name is not one the engine puts on spans")
        in problems
    )
    assert not any("asyncflow.task.name" in p for p in problems)


def test_unparsable_promql_is_rejected_by_promtool(tmp_path: Path) -> None:
    board = load(FIXTURES / "unparsable-promql.json")
    assert check_dashboard(board, provisioned_datasources(DATASOURCES)) == []  # names are fine
    result = promtool_check(promql_of(board), tmp_path)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr
