"""OTLP export on the wire: a real receiver gets the span tree and the metrics.

Every test speaks both OTLP protocols (gRPC and HTTP/protobuf) to the
receiver in ``tests/support/otlp_receiver.py``. The fault tests point the
engine at a port that refuses connections and at a server that accepts and
never answers: tasks must not notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import psutil
import pytest

from asyncflow import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from asyncflow.telemetry import names

from ..support.otlp_receiver import (
    BlackHole,
    OTLPReceiver,
    refused_port,
)

DUMMY = "Dummy Output"

# Seconds that only a hang exceeds (exports time out after 5 s each).
HANG = 60.0


def only(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, f"expected one span {name!r}, got {len(found)}"
    return found[0]


async def simulate(engine: WorkflowEngine) -> dict[str, Any]:
    """A ``simulate`` workflow: a chain, a failing task and a block with a member."""
    members: list[Any] = []

    @engine.function_task
    async def prepare(x: int) -> int:
        return x + 1

    @engine.function_task
    async def explode() -> None:
        raise RuntimeError("boom")

    @engine.function_task
    async def refine(x: int) -> int:
        return 2 * x

    @engine.block
    async def stage(x: int) -> int:
        members.append(refine(x))
        return int(await members[-1])

    async with engine.workflow_scope(name="simulate") as wf_id:
        first = prepare(1)
        second = prepare(first)
        bad = explode()
        block = stage(second)
        assert await block == 6
        with pytest.raises(RuntimeError, match="boom"):
            await bad
    return {
        "workflow_id": wf_id,
        "prepare": [first.uid, second.uid],
        "explode": bad.uid,
        "block": block.uid,
        "refine": members[0].uid,
    }


# ---------------------------------------------------------------- spans and metrics


async def test_spans_and_metrics_reach_the_receiver(
    protocol: str, receiver: OTLPReceiver, tmp_path: Path
) -> None:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(
            otlp_endpoint=receiver.endpoint, otlp_protocol=protocol, resource_poll_interval=0.1
        )
        run = await simulate(engine)
    finally:
        await engine.shutdown()  # flushes the exporters

    receiver.wait_for(lambda: any(s["name"] == "session" for s in receiver.spans()))
    spans = receiver.spans()
    assert len(spans) == 7, sorted(s["name"] for s in spans)
    assert len({s["span_id"] for s in spans}) == 7
    assert {s["trace_id"] for s in spans} == {tel.trace_id}
    for span in spans:
        assert span["resource"][names.SERVICE_NAME] == "asyncflow"
        assert span["resource"][names.SERVICE_INSTANCE_ID] == engine.uid
        assert span["end_ns"] >= span["start_ns"] > 0

    session = only(spans, "session")
    workflow = only(spans, "workflow simulate")
    block = only(spans, "block stage")
    assert session["parent_span_id"] is None
    assert session["attributes"][names.LEVEL] == names.LEVEL_SESSION
    assert session["attributes"][names.SESSION_ID] == engine.uid
    assert workflow["parent_span_id"] == session["span_id"]
    assert workflow["attributes"][names.LEVEL] == names.LEVEL_WORKFLOW
    assert workflow["attributes"][names.WORKFLOW_ID] == run["workflow_id"]
    assert workflow["attributes"][names.WORKFLOW_NAME] == "simulate"
    assert workflow["status_code"] == "ERROR"  # one of its tasks failed
    assert block["parent_span_id"] == workflow["span_id"]
    assert block["attributes"][names.LEVEL] == names.LEVEL_BLOCK
    assert block["attributes"][names.BLOCK_UID] == run["block"]
    assert block["attributes"][names.WORKFLOW_ID] == run["block"]

    tasks = [s for s in spans if s["name"].startswith("task ")]
    assert sorted(s["name"] for s in tasks) == [
        "task explode",
        "task prepare",
        "task prepare",
        "task refine",
    ]
    by_uid = {s["attributes"][names.TASK_UID]: s for s in tasks}
    assert set(by_uid) == {*run["prepare"], run["explode"], run["refine"]}
    for span in tasks:
        attrs = span["attributes"]
        assert attrs[names.LEVEL] == names.LEVEL_TASK
        assert attrs[names.TASK_TYPE] == names.TYPE_FUNCTION
        assert attrs[names.TASK_NAME] == span["name"].removeprefix("task ")
        assert attrs[names.BACKEND] == "default"
        assert names.SPAN_EVENT_STARTED in span["events"]
        assert set(span["events"]) <= {*names.SPAN_EVENTS, names.SPAN_EVENT_EXCEPTION}
    for uid in [*run["prepare"], run["explode"]]:
        span = by_uid[uid]
        assert span["parent_span_id"] == workflow["span_id"]
        assert span["attributes"][names.WORKFLOW_ID] == run["workflow_id"]
        assert span["attributes"][names.WORKFLOW_NAME] == "simulate"
    member = by_uid[run["refine"]]
    assert member["parent_span_id"] == block["span_id"]
    assert member["attributes"][names.WORKFLOW_ID] == run["block"]
    chained = by_uid[run["prepare"][1]]
    assert chained["attributes"][names.TASK_DEPENDS_ON] == [run["prepare"][0]]  # an array value
    for uid in [*run["prepare"], run["refine"]]:
        assert by_uid[uid]["attributes"][names.TASK_RESULT] == names.RESULT_COMPLETED
        assert by_uid[uid]["status_code"] != "ERROR"
        assert names.ERROR_TYPE not in by_uid[uid]["attributes"]
    failed = by_uid[run["explode"]]
    assert failed["attributes"][names.TASK_RESULT] == names.RESULT_FAILED
    assert failed["attributes"][names.ERROR_TYPE] == "RuntimeError"
    assert failed["status_code"] == "ERROR"
    assert "boom" in failed["status_message"]
    assert failed["events"][-1] == names.SPAN_EVENT_EXCEPTION  # on the wire too

    wanted = {names.METRIC_TASK_DURATION, names.METRIC_TASKS_ACTIVE}
    receiver.wait_for(lambda: wanted <= receiver.metric_names())
    points = receiver.metric_points()
    for point in points:
        assert point["resource"][names.SERVICE_NAME] == "asyncflow"
        assert point["resource"][names.SERVICE_INSTANCE_ID] == engine.uid
    instance_ids = {*run["prepare"], run["explode"], run["refine"], run["block"]}
    instance_ids.add(run["workflow_id"])
    for point in points:
        # Bounded cardinality: no task uid or workflow instance id, in any label.
        assert not instance_ids & {str(v) for v in point["attributes"].values()}, point
        assert set(point["attributes"]) <= set(names.METRIC_ATTRIBUTES[point["name"]]), point

    durations = [p for p in points if p["name"] == names.METRIC_TASK_DURATION]
    assert {p["kind"] for p in durations} == {"histogram"}
    assert {p["unit"] for p in durations} == {names.UNIT_SECONDS}
    seen = {
        (p["attributes"][names.TASK_NAME], p["attributes"][names.TASK_RESULT]) for p in durations
    }
    assert {("prepare", "completed"), ("refine", "completed"), ("explode", "failed")} <= seen
    for point in durations:
        attrs = point["attributes"]
        assert attrs[names.TASK_TYPE] == names.TYPE_FUNCTION
        assert attrs[names.BACKEND] == "default"
        if attrs[names.TASK_NAME] == "explode":
            assert attrs[names.ERROR_TYPE] == "RuntimeError"
        else:
            assert names.ERROR_TYPE not in attrs
    active = [p for p in points if p["name"] == names.METRIC_TASKS_ACTIVE]
    assert active
    assert {p["attributes"][names.TASK_STATE] for p in active} <= {
        names.STATE_PENDING,
        names.STATE_RUNNING,
    }


async def test_standard_environment_variables(
    protocol: str, receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(names.ENV_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(names.ENV_OTLP_PROTOCOL, protocol)
    monkeypatch.setenv(names.ENV_SERVICE_NAME, "myservice")
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        await engine.start_telemetry(resource_poll_interval=0.1)

        @engine.function_task
        async def probe() -> None:
            return None

        async with engine.workflow_scope(name="env"):
            assert await probe() == DUMMY
    finally:
        await engine.shutdown()

    receiver.wait_for(lambda: len(receiver.spans()) == 3)
    spans = receiver.spans()
    assert sorted(s["name"] for s in spans) == ["session", "task probe", "workflow env"]
    for span in spans:
        assert span["resource"][names.SERVICE_NAME] == "myservice"
        assert span["resource"][names.SERVICE_INSTANCE_ID] == engine.uid
    receiver.wait_for(lambda: names.METRIC_TASK_DURATION in receiver.metric_names())
    for point in receiver.metric_points():
        assert point["resource"][names.SERVICE_NAME] == "myservice"


# ---------------------------------------------------------------- a collector that is down


async def workload(engine: WorkflowEngine, count: int, per_workflow: int = 100) -> list[Any]:
    """``count`` tasks in workflows of 4 types, half of them depending on the other half."""

    @engine.function_task
    async def produce(i: int) -> int:
        return i

    @engine.function_task
    async def consume(x: Any, i: int) -> Any:
        return x + i if isinstance(x, int) else x

    futures = []
    for w in range(count // per_workflow):
        async with engine.workflow_scope(name=f"type{w % 4}"):
            for j in range(per_workflow // 2):
                i = w * per_workflow + j
                futures.append(consume(produce(i), i))
    return list(await asyncio.gather(*futures))


async def make_engine(backend_kind: str, tmp_path: Path) -> WorkflowEngine:
    backend: Any = (
        NoopExecutionBackend() if backend_kind == "noop" else await LocalExecutionBackend()
    )
    return await WorkflowEngine.create(backend=backend, work_dir=tmp_path)


def is_slow_callback_report(record: logging.LogRecord) -> bool:
    # asyncio debug mode (on in this suite) reports slow loop steps as warnings;
    # they come from the workload, with or without telemetry.
    return record.name == "asyncio" and str(record.msg).startswith("Executing")


@pytest.mark.slow
@pytest.mark.parametrize(("backend_kind", "count"), [("noop", 2000), ("local", 200)])
@pytest.mark.parametrize("fault", ["refused", "black_hole"])
async def test_unreachable_collector_costs_one_warning_no_hang_and_bounded_memory(
    protocol: str,
    fault: str,
    backend_kind: str,
    count: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    expected: list[Any] = [DUMMY] * (count // 2)
    if backend_kind == "local":  # consume(produce(i), i) == 2 * i, 50 of 100 per workflow
        expected = [2 * i for w in range(0, count, 100) for i in range(w, w + 50)]
    with contextlib.ExitStack() as stack:
        if fault == "refused":
            endpoint = f"http://127.0.0.1:{refused_port()}"
            hole = None
        else:
            hole = stack.enter_context(BlackHole())
            endpoint = hole.endpoint

        # What it costs in time is measured in bench/ (telemetry workload), not
        # here: a loaded machine makes any time budget flaky.
        process = psutil.Process()
        engine = await make_engine(backend_kind, tmp_path / "on")
        try:
            await engine.start_telemetry(
                otlp_endpoint=endpoint, otlp_protocol=protocol, resource_poll_interval=0.1
            )
            # Measured after start: the first start imports the exporters (gRPC is big).
            rss_before = process.memory_info().rss
            results_on = await asyncio.wait_for(workload(engine, count), HANG)
        finally:
            # In-flight exports time out after 5 s each: a generous deadline
            # that only a hang misses.
            await asyncio.wait_for(engine.shutdown(), HANG)
        rss_growth = process.memory_info().rss - rss_before

        assert results_on == expected
        assert rss_growth < 40 * 2**20, f"RSS grew by {rss_growth / 2**20:.1f} MiB"
        if hole is not None:
            assert hole.connections >= 1  # the exporters really tried, and got no answer

    address = endpoint.removeprefix("http://")
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and not is_slow_callback_report(r)
    ]
    report = "\n".join(f"{r.name} {r.levelname}: {r.getMessage()}" for r in warnings)
    assert len(warnings) == 1, report
    assert address in warnings[0].getMessage(), report
