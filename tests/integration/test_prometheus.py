"""The scrape path, end to end: a real Prometheus scrapes the engine's ``/metrics``.

The series names and labels Prometheus stores are checked against
``asyncflow.telemetry.names``, the exposition text against ``promtool check
metrics``, and the number of series against the number of tasks and
workflow instances (it must not grow with them).
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.telemetry import names

from ..support.prometheus import (
    JOB,
    Prometheus,
    eventually,
    exposition,
    parse_exposition,
    prometheus_binaries,
    value_of,
)

P95_TASK_DURATION = (
    "histogram_quantile(0.95, sum by (le) (rate(asyncflow_task_duration_seconds_bucket[1m])))"
)
SCRAPE_LABELS = {"__name__", "job", "instance"}


def expected_labels(metric: str) -> set[str]:
    return {names.prometheus_label(a) for a in names.METRIC_ATTRIBUTES[metric]}


# ---------------------------------------------------------------- a real Prometheus


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    eng = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    try:
        yield eng
    finally:
        await eng.shutdown()


@pytest.mark.slow
async def test_prometheus_scrapes_the_engine(engine: WorkflowEngine, tmp_path: Path) -> None:
    server_binary, promtool = prometheus_binaries()
    tel = await engine.start_telemetry(prometheus_port=0, resource_poll_interval=0.2)
    port = tel.prometheus_port
    assert isinstance(port, int) and port > 0
    listening = [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"]

    release = threading.Event()

    @engine.function_task
    async def serve() -> str:
        deadline = time.monotonic() + 90
        while not release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return "served"

    @engine.function_task
    async def simulate_step(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    @engine.function_task
    async def train_step(i: int) -> int:
        await asyncio.sleep(0.02)
        return i

    @engine.function_task
    async def check(i: int) -> int:
        if i % 2:
            raise ValueError(f"odd round {i}")
        return i

    async def serving() -> str:
        async with engine.workflow_scope(name="serve"):
            return str(await serve())

    rounds = 0
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal rounds
        while not stop.is_set():
            async with engine.workflow_scope(name="simulate"):
                x = await simulate_step(rounds)
            async with engine.workflow_scope(name="train"):
                y = await train_step(x)
            async with engine.workflow_scope(name="analyze"):
                try:
                    assert await check(y) == rounds
                except ValueError:
                    assert rounds % 2
            rounds += 1

    held = asyncio.create_task(serving())
    producer = asyncio.create_task(produce())
    prometheus = Prometheus(server_binary, tmp_path / "prometheus", port)
    try:
        prometheus.start()
        up = await prometheus.until(
            f'up{{job="{JOB}"}}', "target up", lambda r: value_of(r[0]) == 1
        )
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"

        counts = await prometheus.until(
            "asyncflow_task_duration_seconds_count",
            "task durations",
            lambda r: (
                {s["metric"].get("asyncflow_task_name") for s in r}
                >= {"simulate_step", "train_step", "check"}
                and any(s["metric"].get("error_type") for s in r)
            ),
        )
        allowed = expected_labels(names.METRIC_TASK_DURATION) | SCRAPE_LABELS
        for sample in counts:
            labels = sample["metric"]
            assert labels["job"] == JOB
            assert labels["instance"] == f"127.0.0.1:{port}"
            extra = {k for k in labels if not k.startswith("otel_scope_")} - allowed
            assert not extra, labels
            assert labels["asyncflow_task_type"] == "function"
            assert labels["asyncflow_backend"] == "default"
        failed = [s["metric"] for s in counts if s["metric"].get("error_type")]
        assert failed
        for labels in failed:
            assert labels["asyncflow_task_name"] == "check"
            assert labels["asyncflow_task_result"] == "failed"
            assert labels["error_type"] == "ValueError"
            assert labels["asyncflow_workflow_name"] == "analyze"
        workflows_of = {
            (s["metric"]["asyncflow_task_name"], s["metric"]["asyncflow_workflow_name"])
            for s in counts
        }
        assert workflows_of == {
            ("simulate_step", "simulate"),
            ("train_step", "train"),
            ("check", "analyze"),
        }

        by_name = await prometheus.query(
            "sum by (asyncflow_task_name) (asyncflow_task_duration_seconds_count)"
        )
        assert {s["metric"]["asyncflow_task_name"] for s in by_name} == {
            "simulate_step",
            "train_step",
            "check",
        }
        assert all(value_of(s) >= 1 for s in by_name)
        assert all(set(s["metric"]) == {"asyncflow_task_name"} for s in by_name)

        p95 = await prometheus.until(
            P95_TASK_DURATION,
            "a 95th percentile from two scrapes or more",
            lambda r: math.isfinite(value_of(r[0])),
        )
        assert 0 < value_of(p95[0]) <= 5.0, p95

        active = await prometheus.until(
            "asyncflow_tasks_active",
            "active tasks",
            lambda r: any(
                s["metric"]["asyncflow_task_state"] == "running" and value_of(s) >= 1 for s in r
            ),
        )
        for sample in active:
            labels = sample["metric"]
            assert {k for k in labels if not k.startswith("otel_scope_")} == (
                expected_labels(names.METRIC_TASKS_ACTIVE) | SCRAPE_LABELS
            )
            assert labels["asyncflow_task_state"] in {"pending", "running"}
            assert labels["asyncflow_backend"] == "default"
            assert value_of(sample) >= 0

        workflows = await prometheus.until(
            "asyncflow_workflows_active",
            "active workflows",
            lambda r: (
                {s["metric"]["asyncflow_workflow_name"] for s in r}
                >= {"simulate", "train", "analyze", "serve"}
            ),
        )
        open_now = {s["metric"]["asyncflow_workflow_name"]: value_of(s) for s in workflows}
        assert open_now["serve"] == 1  # held open by the serve task
        assert all(0 <= v <= 1 for v in open_now.values()), open_now

        stop.set()
        await producer
        release.set()
        assert await held == "served"
        assert rounds >= 2

        # Every series the run produced, by the names module, and nothing else.
        produced = {point["name"] for point in tel.read_metrics()}
        required = {
            names.METRIC_TASK_DURATION,
            names.METRIC_TASK_QUEUE_DURATION,
            names.METRIC_TASK_RUN_DURATION,
            names.METRIC_TASKS_ACTIVE,
            names.METRIC_WORKFLOW_DURATION,
            names.METRIC_WORKFLOWS_ACTIVE,
            names.METRIC_NODE_CPU,
            names.METRIC_NODE_MEMORY,
        }
        assert required <= produced, produced
        expected_series = {
            series
            for metric in names.PROMETHEUS_NAMES
            if metric in produced
            for series in names.prometheus_series(metric)
        }
        known_series = {
            series
            for metric in names.PROMETHEUS_NAMES
            for series in names.prometheus_series(metric)
        }
        text = await exposition(port)
        exposed = {name for name, _ in parse_exposition(text)}
        assert expected_series <= exposed, expected_series - exposed
        assert {s for s in exposed if s.startswith("asyncflow")} == expected_series
        stored = await eventually(
            lambda: _stored_names(prometheus, expected_series),
            "every series stored by Prometheus",
            timeout=30,
        )
        asyncflow_stored = {s for s in stored if s.startswith("asyncflow")}
        assert asyncflow_stored == expected_series
        assert asyncflow_stored <= known_series
        print("series stored by Prometheus:", *sorted(asyncflow_stored), sep="\n  ")

        # The exposition text passes promtool's linter.
        checked = await asyncio.to_thread(
            subprocess.run,
            [promtool, "check", "metrics"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        output = (checked.stdout + checked.stderr).decode("utf-8", errors="replace")
        print(f"promtool check metrics: exit {checked.returncode}\n{output}")
        assert checked.returncode == 0, output
    finally:
        stop.set()
        release.set()
        await asyncio.gather(producer, held, return_exceptions=True)
        await asyncio.to_thread(prometheus.stop)


async def _stored_names(prometheus: Prometheus, wanted: set[str]) -> set[str] | None:
    stored = set(await prometheus.api("label/__name__/values"))
    return stored if wanted <= stored else None


# ---------------------------------------------------------------- cardinality


WORKFLOW_TYPES = ("simulate", "train", "analyze", "report")


async def series_after(tmp_path: Path, instances: int, tasks_per_instance: int) -> list[Any]:
    """The exposition's series after ``instances`` workflows of 4 types ran on the no-op backend."""
    # One uid for both runs: the resource (target_info) labels then match too.
    engine = await WorkflowEngine.create(
        dry_run=True, work_dir=tmp_path, uid="asyncflow.session.cardinality"
    )
    try:
        tel = await engine.start_telemetry(prometheus_port=0, resource_poll_interval=60)

        @engine.function_task
        async def load(i: int) -> int:
            return i

        @engine.function_task
        async def transform(x: Any) -> Any:
            return x

        futures = []
        for w in range(instances):
            async with engine.workflow_scope(name=WORKFLOW_TYPES[w % len(WORKFLOW_TYPES)]):
                previous = load(w)
                futures.append(previous)
                for _ in range(tasks_per_instance - 1):
                    previous = transform(previous)
                    futures.append(previous)
        await asyncio.gather(*futures)
        assert len(futures) == instances * tasks_per_instance
        return parse_exposition(await exposition(tel.prometheus_port))
    finally:
        await engine.shutdown()


async def test_series_do_not_grow_with_tasks_or_workflow_instances(tmp_path: Path) -> None:
    title = names.prometheus_label(names.SESSION_TITLE)

    def same_session(series: list[Any]) -> list[Any]:
        """The series with the session's title (its start time) left out: it names the run."""
        return [
            (name, frozenset((k, "" if k == title else v) for k, v in labels))
            for name, labels in series
        ]

    small = same_session(await series_after(tmp_path / "small", instances=20, tasks_per_instance=5))
    large = same_session(
        await series_after(tmp_path / "large", instances=2_000, tasks_per_instance=5)
    )
    assert len(large) == len(small)
    assert set(large) == set(small)
    assert len(set(small)) == len(small)  # no series twice
    names_seen = {name for name, _ in small}
    assert "asyncflow_task_duration_seconds_count" in names_seen
    workflow_names = {
        value
        for name, labels in small
        if name == "asyncflow_workflows_active"
        for key, value in labels
        if key == "asyncflow_workflow_name"
    }
    assert workflow_names == set(WORKFLOW_TYPES)
    for _name, labels in large:
        for key, value in labels:
            assert not value.startswith(("wf-", "task.")), (key, value)
