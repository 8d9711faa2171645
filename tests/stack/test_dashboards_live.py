"""Every dashboard query, evaluated by a real Prometheus scraping a live engine.

A small GPU/CPU campaign runs on a resource-aware local backend with the
engine's ``/metrics`` on; Debian's ``prometheus`` scrapes it with the shipped
``dashboards/prometheus/prometheus.yml`` (only the target and the intervals
changed). Every PromQL expression of every dashboard, its variables resolved
the way Grafana resolves them (``label_values`` through the HTTP API, then
substituted and regex-escaped), must return at least one series: no panel
ships showing "No data". The series names and labels are those of the
compose path (engine -> collector -> Prometheus): see test_collector.py and
docs/stack.md.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.telemetry import names

from ..support.grafana import (
    label_values_args,
    panels,
    queries,
    query_result_expr,
    query_result_rows,
    variable_query,
    variable_regex,
)
from ..support.prometheus import JOB, Prometheus, eventually, prometheus_binaries, value_of
from ..support.promql import inspect, substitute
from ..support.stack import DASHBOARDS, PROMETHEUS_CONFIG

BOARDS = sorted(DASHBOARDS.glob("*.json"))
# Grafana's built-in variables: a rate window of several 1 s scrapes.
BUILTINS = {"__rate_interval": "20s", "__interval": "1s", "__range": "5m"}
# Series that exist only on a node with an NVIDIA GPU and its driver.
GPU_SERIES = set(names.prometheus_series(names.METRIC_NODE_GPU))
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|\\]")


def grafana_regex_value(value: str) -> str:
    """A single variable value as Grafana puts it in a PromQL ``=~"..."`` matcher."""
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(), value)


def scrape_config(target_port: int) -> str:
    """The shipped prometheus.yml, pointed at the engine and scraping every second."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    job["static_configs"] = [{"targets": [f"127.0.0.1:{target_port}"]}]
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    return str(yaml.safe_dump(config))


async def resolve_variables(
    prometheus: Prometheus, board: dict[str, Any], choice: str
) -> dict[str, str]:
    """Each variable's value: its first value, or "All" where it offers that."""
    values = dict(BUILTINS)
    for variable in board.get("templating", {}).get("list", []):
        name = variable["name"]
        if variable["type"] != "query":
            values[name] = ""  # a textbox: only TraceQL uses these
            continue
        query = substitute(variable_query(variable), values)
        expr = query_result_expr(query)
        if expr is not None:  # query_result(expr) through the variable's regex, as Grafana does
            regex = variable_regex(variable)
            assert regex is not None, name

            async def options(expr: str = expr, regex: Any = regex) -> list[str]:
                rows = query_result_rows((await prometheus.api("query", query=expr))["result"])
                return [m.group("value") for row in rows if (m := regex.search(row))]

        else:
            selector, label = label_values_args(query)
            params = {"match[]": selector} if selector else {}

            async def options(label: str = label, params: dict[str, str] = params) -> list[str]:
                return list(await prometheus.api(f"label/{label}/values", **params))

        found = await eventually(options, f"values of ${name}", timeout=60)
        if choice == "all" and variable.get("includeAll"):
            values[name] = variable["allValue"]
        else:
            values[name] = grafana_regex_value(sorted(found)[0])
    return values


async def campaign(engine: WorkflowEngine, stop: asyncio.Event) -> int:
    """Simulations and trainings on 2 GPUs, analyses (cached, each retried
    once) and evaluations after them."""

    @engine.function_task
    async def simulate(i: int) -> int:
        await asyncio.sleep(0.03)
        return i

    tried: set[int] = set()

    # Cached (each call a miss: new arguments) and retried once: its first
    # attempt fails, so the retry and cache panels have data.
    @engine.function_task(retries=1, retry_delay=0.0, cache=True)
    async def analyze(x: int) -> int:
        if x not in tried:
            tried.add(x)
            raise RuntimeError(f"analysis of {x} lost its node")
        await asyncio.sleep(0.02)
        return x

    @engine.function_task
    async def train(i: int) -> int:
        await asyncio.sleep(0.04)
        return i

    @engine.function_task
    async def evaluate(model: int) -> int:
        if model % 3 == 0:
            raise ValueError(f"model {model} diverged")
        await asyncio.sleep(0.01)
        return model

    async def molecular_dynamics(i: int) -> None:
        async with engine.workflow_scope(name="simulate"):
            x = await simulate(i, task_description={"gpus": 1})
        async with engine.workflow_scope(name="analyze"):
            await analyze(x, task_description={"gpus": 1})

    async def learning(i: int) -> None:
        async with engine.workflow_scope(name="train"):
            model = await train(i, task_description={"gpus": 1})
        async with engine.workflow_scope(name="evaluate"):
            try:
                await evaluate(model, task_description={"cpus": 1})
            except ValueError:
                assert model % 3 == 0

    rounds = 0
    while not stop.is_set():
        first = 2 * rounds
        await asyncio.gather(
            molecular_dynamics(first),
            molecular_dynamics(first + 1),
            learning(first),
            learning(first + 1),
        )
        rounds += 1
    return rounds


@pytest.mark.slow
async def test_every_dashboard_query_returns_data_from_a_live_engine(tmp_path: Path) -> None:
    server, _ = prometheus_binaries()
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(cpus=4, gpus=2), work_dir=tmp_path / "run"
    )
    stop = asyncio.Event()
    producer: asyncio.Task[int] | None = None
    prometheus: Prometheus | None = None
    try:
        tel = await engine.start_telemetry(prometheus_port=0, resource_poll_interval=0.2)
        port = tel.prometheus_port
        assert isinstance(port, int)
        producer = asyncio.create_task(campaign(engine, stop))
        prometheus = Prometheus(server, tmp_path / "prometheus", port, config=scrape_config(port))
        prometheus.start()
        await prometheus.until(f'up{{job="{JOB}"}}', "target up", lambda r: value_of(r[0]) == 1)
        has_gpu = any(point["name"] == names.METRIC_NODE_GPU for point in tel.read_metrics())

        evaluated = 0
        without_gpu: list[str] = []
        for path in BOARDS:
            board = json.loads(path.read_text(encoding="utf-8"))
            with_data: set[str] = set()
            for choice in ("first", "all"):
                values = await resolve_variables(prometheus, board, choice)
                for query in queries(board):
                    if query.language != "promql":
                        continue
                    expr = substitute(query.text, values)
                    where = f"{path.name}: {query.panel!r} {query.ref} ({choice})"
                    if not has_gpu and inspect(expr).metrics <= GPU_SERIES:
                        # Evaluated all the same: it must run, and has no series here.
                        assert await prometheus.query(expr) == [], where
                        without_gpu.append(where)
                        continue
                    await prometheus.until(expr, where)
                    with_data.add(query.panel)
                    evaluated += 1
            promql_panels = {
                panel["title"]
                for panel in panels(board)
                if any("expr" in target for target in panel.get("targets", []))
            }
            missing = promql_panels - with_data
            assert not missing, f"{path.name}: no data in {missing}"
        assert evaluated >= 60
        print(f"{evaluated} dashboard queries returned data; needing a GPU: {without_gpu}")
    finally:
        stop.set()
        if producer is not None:
            rounds = await producer
            assert rounds >= 1
        if prometheus is not None:
            await asyncio.to_thread(prometheus.stop)
        await engine.shutdown()
