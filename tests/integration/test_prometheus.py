"""The scrape path, end to end: a real Prometheus scrapes the engine's ``/metrics``.

The series names and labels Prometheus stores are checked against
``asyncflow.telemetry.names``, the exposition text against ``promtool check
metrics``, and the number of series against the number of tasks and
workflow instances (it must not grow with them).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.telemetry import names

from ..support.otlp_receiver import refused_port

T = TypeVar("T")

JOB = "asyncflow"
P95_TASK_DURATION = (
    "histogram_quantile(0.95, sum by (le) (rate(asyncflow_task_duration_seconds_bucket[1m])))"
)
SCRAPE_LABELS = {"__name__", "job", "instance"}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus_binaries() -> tuple[str, str]:
    """The ``prometheus`` and ``promtool`` executables; skip without them (fail on CI)."""
    server, tool = shutil.which("prometheus"), shutil.which("promtool")
    if server and tool:
        return server, tool
    message = "prometheus/promtool not found: apt-get install prometheus"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


async def exposition(port: int) -> str:
    """The text the engine serves on ``/metrics``."""
    body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
    return body.decode("utf-8")


def parse_exposition(text: str) -> list[tuple[str, frozenset[tuple[str, str]]]]:
    """Every sample line as (series name, label set); values and timestamps dropped."""
    series = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"unparsable exposition line: {line!r}"
        labels = frozenset(_LABEL.findall(match.group(2) or ""))
        series.append((match.group(1), labels))
    return series


def expected_labels(metric: str) -> set[str]:
    return {names.prometheus_label(a) for a in names.METRIC_ATTRIBUTES[metric]}


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float) -> T:
    """Poll ``probe`` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = await probe()
        except OSError as exc:  # Prometheus not listening yet, or busy
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s (last: {last!r})")
        await asyncio.sleep(0.2)


class Prometheus:
    """A Prometheus server in a subprocess, scraping one target every second."""

    def __init__(self, binary: str, workdir: Path, target_port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.target = f"127.0.0.1:{target_port}"
        self.port = refused_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    scrape_interval: 1s\n"
            "    static_configs:\n"
            f"      - targets: ['{self.target}']\n",
            encoding="utf-8",
        )
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {self._process.returncode}:\n"
                + self.log.read_text(errors="replace")[-4000:]
            )

    async def api(self, path: str, **params: str) -> Any:
        self.check_alive()
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = json.loads(await asyncio.to_thread(http_get, url))
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        data = await self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    async def until(
        self, promql: str, what: str, accept: Callable[[list[dict[str, Any]]], bool] = bool
    ) -> list[dict[str, Any]]:
        """Run ``promql`` until ``accept(result)``, with a deadline."""

        async def probe() -> list[dict[str, Any]] | None:
            result = await self.query(promql)
            return result if result and accept(result) else None

        return await eventually(probe, f"{what} ({promql})", timeout=60)


def value_of(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


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
    small = await series_after(tmp_path / "small", instances=20, tasks_per_instance=5)
    large = await series_after(tmp_path / "large", instances=2_000, tasks_per_instance=5)
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
