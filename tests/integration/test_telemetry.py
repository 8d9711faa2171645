"""Telemetry as a user sees it: span tree, events, checkpoint file, summary."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from asyncflow import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from asyncflow.telemetry import define_event, names, read_checkpoint
from asyncflow.telemetry.events import Event


@pytest.fixture(params=["noop", "local"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    backend: Any = (
        NoopExecutionBackend() if request.param == "noop" else await LocalExecutionBackend()
    )
    eng = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:
        yield eng
    finally:
        await eng.shutdown()


async def start(
    engine: WorkflowEngine, tmp_path: Path, **kw: Any
) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tel = await engine.start_telemetry(
        checkpoint_path=tmp_path / "telemetry",
        span_processors=[SimpleSpanProcessor(exporter)],
        resource_poll_interval=0.05,
        **kw,
    )
    return tel, exporter


def by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


# ---------------------------------------------------------------- the span tree


async def test_span_tree_scopes_blocks_and_nesting(engine: WorkflowEngine, tmp_path: Path) -> None:
    tel, exporter = await start(engine, tmp_path)

    @engine.function_task
    async def simulate(i: int) -> int:
        return i

    @engine.block
    async def inner() -> Any:
        return await simulate(3)

    @engine.block
    async def outer() -> Any:
        return await asyncio.gather(simulate(2), inner())

    outside = simulate(0)
    async with engine.workflow_scope("wf-a", name="campaign"):
        in_scope = simulate(1)
        async with engine.workflow_scope("wf-b", name="analyze"):
            nested = simulate(4)
            blk = outer()
            await asyncio.gather(in_scope, nested, blk)
    await outside
    await engine.shutdown()

    spans = exporter.get_finished_spans()
    names_ = by_name(list(spans))
    assert len({s.context.trace_id for s in spans}) == 1
    (session,) = names_["session"]
    (wf_a,) = names_["workflow campaign"]
    (wf_b,) = names_["workflow analyze"]
    (outer_span,) = names_["block outer"]
    (inner_span,) = names_["block inner"]
    assert session.parent is None
    assert session.attributes[names.SESSION_ID] == engine.uid
    assert parent_of(wf_a) == session.context.span_id
    assert parent_of(wf_b) == wf_a.context.span_id
    assert parent_of(outer_span) == wf_b.context.span_id
    assert parent_of(inner_span) == outer_span.context.span_id
    assert outer_span.attributes[names.WORKFLOW_ID] == blk.uid
    assert outer_span.attributes[names.BLOCK_UID] == blk.uid
    assert inner_span.attributes[names.LEVEL] == names.LEVEL_BLOCK
    tasks = {s.attributes[names.TASK_UID]: s for s in names_["task simulate"]}
    assert parent_of(tasks[outside.uid]) == session.context.span_id
    assert parent_of(tasks[in_scope.uid]) == wf_a.context.span_id
    assert parent_of(tasks[nested.uid]) == wf_b.context.span_id
    assert tasks[in_scope.uid].attributes[names.WORKFLOW_ID] == "wf-a"
    assert tasks[in_scope.uid].attributes[names.WORKFLOW_NAME] == "campaign"
    members = [
        s
        for s in tasks.values()
        if parent_of(s) in (outer_span.context.span_id, inner_span.context.span_id)
    ]
    assert len(members) == 2
    for span in tasks.values():
        attrs = span.attributes
        assert attrs[names.LEVEL] == names.LEVEL_TASK
        assert attrs[names.TASK_NAME] == "simulate"
        assert attrs[names.TASK_TYPE] == "function"
        assert attrs[names.TASK_RESULT] == "completed"
        assert attrs[names.BACKEND] == "default"
        assert attrs[names.TASK_CPUS] == 1 and attrs[names.TASK_GPUS] == 0
        assert names.WORKFLOW_ID in attrs
        assert [e.name for e in span.events] == list(names.SPAN_EVENTS)
        stamps = [e.timestamp for e in span.events]
        assert span.start_time <= stamps[0] <= stamps[-1] <= span.end_time
        assert span.status.status_code == StatusCode.OK
    assert wf_a.attributes[names.WORKFLOW_RESULT] == "completed"
    assert tel.session_id == engine.uid


async def test_routed_failed_and_cancelled_tasks(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(
        backend=[await LocalExecutionBackend(name="cpu"), NoopExecutionBackend(name="ai")],
        work_dir=tmp_path,
    )
    tel, exporter = await start(engine, tmp_path)
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()

    @engine.function_task
    async def boom() -> None:
        raise KeyError("nope")

    @engine.function_task(backend="ai")
    async def think(*deps: Any) -> None:
        return None

    @engine.function_task
    async def after(*deps: Any) -> None:
        return None

    failed = boom()
    dependent = after(failed)
    routed = think()
    cancelled = after(gate)
    async with engine.workflow_scope(name="broken"):
        in_wf = boom()
    cancelled.cancel()
    await asyncio.gather(failed, dependent, routed, cancelled, in_wf, return_exceptions=True)
    await engine.shutdown()
    gate.cancel()
    spans = {s.attributes.get(names.TASK_UID): s for s in exporter.get_finished_spans()}
    assert spans[routed.uid].attributes[names.BACKEND] == "ai"
    assert spans[failed.uid].attributes[names.BACKEND] == "cpu"
    bad = spans[failed.uid]
    assert bad.status.status_code == StatusCode.ERROR
    assert "nope" in (bad.status.description or "")
    assert bad.attributes[names.ERROR_TYPE] == "KeyError"
    assert bad.attributes[names.TASK_RESULT] == "failed"
    dep = spans[dependent.uid]
    assert dep.attributes[names.ERROR_TYPE] == "DependencyFailureError"
    assert list(dep.attributes[names.TASK_DEPENDS_ON]) == [failed.uid]
    cut = spans[cancelled.uid]
    assert cut.attributes[names.TASK_RESULT] == "canceled"
    assert names.ERROR_TYPE not in cut.attributes
    wf = next(s for s in exporter.get_finished_spans() if s.name == "workflow broken")
    assert wf.attributes[names.WORKFLOW_RESULT] == "failed"
    assert wf.status.status_code == StatusCode.ERROR
    summary = tel.summary()
    assert summary["tasks_by_state"] == {"failed": 3, "completed": 1, "canceled": 1}
    assert summary["failures_by_error_type"] == {"KeyError": 2, "DependencyFailureError": 1}
    assert summary["per_workflow_type"]["broken"] == {"failed": 1}


async def test_block_released_later_keeps_where_it_was_called(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    """A block waiting for a dependency runs its body from another task's
    completion; its members still belong to the scope the block was called in,
    not to whatever scope released it (or none)."""
    tel, exporter = await start(engine, tmp_path)

    @engine.function_task
    async def f(*deps: Any) -> str:
        await asyncio.sleep(0.01)
        return "ok"

    @engine.block
    async def blk(*deps: Any) -> str:
        return str(await f())

    async with engine.workflow_scope(workflow_id="wf-a", name="typeA"):
        first = f()
        block = blk(first)  # runs when `first` is done
    async with engine.workflow_scope(workflow_id="wf-b", name="typeB"):
        await f()
    await block
    await engine.shutdown()

    spans = exporter.get_finished_spans()
    block_span = next(s for s in spans if s.attributes.get(names.BLOCK_UID) == block.uid)
    member = next(
        s
        for s in spans
        if s.name == "task f" and parent_of(s) == block_span.context.span_id  # type: ignore[union-attr]
    )
    assert member.attributes[names.WORKFLOW_NAME] == "typeA"
    assert member.attributes[names.WORKFLOW_ID] == block.uid
    workflow_a = next(
        s
        for s in spans
        if s.attributes.get(names.WORKFLOW_ID) == "wf-a"
        and s.attributes.get(names.LEVEL) == "workflow"
    )
    assert parent_of(block_span) == workflow_a.context.span_id  # type: ignore[union-attr]
    assert block_span.attributes[names.BLOCK_SCOPE] == "wf-a"
    durations = {
        p["attributes"][names.WORKFLOW_NAME]: p["count"]
        for p in tel.read_metrics()
        if p["name"] == names.METRIC_TASK_DURATION
    }
    assert durations == {"typeA": 2, "typeB": 1}


async def test_scope_opened_inside_a_block_is_innermost(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    _, exporter = await start(engine, tmp_path)

    @engine.function_task
    async def f() -> str:
        return "ok"

    @engine.block
    async def blk() -> Any:
        async with engine.workflow_scope(workflow_id="wf-inner", name="inner"):
            inner = f()
        return inner, f()

    inner, outer = await blk()
    assert (inner.workflow_id, inner.workflow_name) == ("wf-inner", "inner")
    assert outer.workflow_id.startswith("block.")
    await engine.shutdown()
    spans = exporter.get_finished_spans()
    span_of = {s.attributes.get(names.TASK_UID): s for s in spans}
    workflow = next(s for s in spans if s.name == "workflow inner")
    block = next(s for s in spans if s.name == "block blk")
    assert parent_of(span_of[inner.uid]) == workflow.context.span_id  # type: ignore[union-attr]
    assert parent_of(workflow) == block.context.span_id  # type: ignore[union-attr]
    assert parent_of(span_of[outer.uid]) == block.context.span_id  # type: ignore[union-attr]


async def test_shutdown_inside_a_scope_ends_the_workflow_once_as_canceled(
    tmp_path: Path,
) -> None:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    tel, exporter = await start(engine, tmp_path)

    @engine.function_task
    async def slow() -> None:
        await asyncio.sleep(30)

    async with engine.workflow_scope(name="w"):
        running = slow()
        await asyncio.sleep(0.1)
        await engine.shutdown()
    assert running.cancelled()
    workflows = [s for s in exporter.get_finished_spans() if s.name == "workflow w"]
    assert len(workflows) == 1
    assert workflows[0].attributes[names.WORKFLOW_RESULT] == "canceled"
    assert workflows[0].status.status_code == StatusCode.ERROR
    assert [s["name"] for s in tel.read_traces()].count("workflow w") == 1
    points = [p for p in tel.read_metrics() if p["name"] == names.METRIC_WORKFLOW_DURATION]
    assert [(p["attributes"][names.WORKFLOW_RESULT], p["count"]) for p in points] == [
        ("canceled", 1)
    ]
    active = [p for p in tel.read_metrics() if p["name"] == names.METRIC_WORKFLOWS_ACTIVE]
    assert [p["value"] for p in active] == [0]


async def test_shutdown_ends_open_spans_as_cancelled_errors(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    tel, exporter = await start(engine, tmp_path)
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @engine.function_task
    async def t(*deps: Any) -> None:
        return None

    pending = t(gate)
    await engine.shutdown()
    gate.cancel()
    span = next(
        s for s in exporter.get_finished_spans() if s.attributes.get(names.TASK_UID) == pending.uid
    )
    assert span.attributes[names.TASK_RESULT] == "canceled"
    assert span.status.status_code == StatusCode.ERROR
    assert tel.checkpoint_file is not None
    records = list(read_checkpoint(tel.checkpoint_file))
    assert records[-2]["section"] == "event" or records[-1]["section"] in ("span", "metric")
    assert any(r.get("name") == "SessionEnded" for r in records)


async def test_enricher_and_span_scope(engine: WorkflowEngine, tmp_path: Path) -> None:
    tel, exporter = await start(engine, tmp_path)
    tel.register_span_enricher(lambda fut, attrs: {"campaign.stage": f"stage-{fut.id}"})

    def broken(fut: Any, attrs: Any) -> None:
        raise RuntimeError("enricher bug")

    tel.register_span_enricher(broken)

    @engine.function_task
    async def t() -> int:
        return 1

    async with engine.workflow_scope(name="wf"):
        with tel.span_scope("prepare inputs", {"files": 3}):
            pass
        first = t()
        await first
    second = t()
    await second
    await engine.shutdown()
    spans = by_name(list(exporter.get_finished_spans()))
    stages = sorted(s.attributes["campaign.stage"] for s in spans["task t"])
    assert stages == [f"stage-{first.id}", f"stage-{second.id}"]
    (custom,) = spans["span prepare inputs"]
    (wf,) = spans["workflow wf"]
    assert parent_of(custom) == wf.context.span_id
    assert custom.attributes["files"] == 3
    assert custom.attributes[names.LEVEL] == names.LEVEL_SPAN


# ---------------------------------------------------------------- events


def lifecycle(events: list[Event], uid: str) -> list[str]:
    return [e.event_type for e in events if e.task_id == uid]


DONE_ORDER = [
    "TaskCreated",
    "asyncflow.TaskResolved",
    "TaskQueued",
    "TaskSubmitted",
    "TaskStarted",
    "TaskCompleted",
]


async def test_events_in_lifecycle_order_for_every_state(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    tel, _ = await start(engine, tmp_path)
    seen: list[Event] = []
    tel.subscribe(seen.append)
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()

    @engine.function_task
    async def ok(*deps: Any) -> int:
        return 1

    @engine.executable_task
    async def bad() -> str:
        return ""

    @engine.function_task(backend="nowhere")
    async def lost() -> None:
        return None

    @engine.block
    async def blk() -> Any:
        return await ok()

    done = ok()
    failed = bad()
    dep_failed = ok(failed)
    cancelled = ok(gate)
    cancelled.cancel()
    routed = lost()
    block = blk()
    async with engine.workflow_scope("wf-x", name="typed"):
        scoped = ok()
    await asyncio.gather(
        done, failed, dep_failed, cancelled, routed, block, scoped, return_exceptions=True
    )
    gate.cancel()
    assert lifecycle(seen, done.uid) == DONE_ORDER
    assert lifecycle(seen, failed.uid) == ["TaskCreated", "asyncflow.TaskResolved", "TaskFailed"]
    assert lifecycle(seen, dep_failed.uid) == ["TaskCreated", "TaskFailed"]
    assert lifecycle(seen, cancelled.uid) == ["TaskCreated", "TaskCanceled"]
    assert lifecycle(seen, routed.uid) == ["TaskCreated", "TaskFailed"]
    assert lifecycle(seen, block.uid) == [
        "TaskCreated",
        "asyncflow.TaskResolved",
        "TaskStarted",
        "TaskCompleted",
    ]
    failure = next(e for e in seen if e.task_id == dep_failed.uid and e.event_type == "TaskFailed")
    assert failure.error_type == "DependencyFailureError"  # type: ignore[attr-defined]
    for event in seen:
        if event.task_id == scoped.uid:
            assert event.attributes[names.WORKFLOW_ID] == "wf-x"
            assert event.backend == "default"
            assert event.session_id == engine.uid
    ids = [e.event_id for e in seen]
    assert len(set(ids)) == len(ids)
    times = [e.event_time for e in seen if e.task_id == done.uid]
    assert times == sorted(times)


async def test_subscribers_sync_async_and_failing(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    tel, _ = await start(engine, tmp_path)
    sync_seen: list[str] = []
    async_seen: list[str] = []

    def failing(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    async def failing_async(event: Event) -> None:
        raise RuntimeError("async subscriber bug")

    async def collect(event: Event) -> None:
        await asyncio.sleep(0)
        async_seen.append(event.event_type)

    tel.subscribe(failing)
    tel.subscribe(failing_async)
    tel.subscribe(lambda e: sync_seen.append(e.event_type))
    unsubscribe = tel.subscribe(collect)

    @engine.function_task
    async def t() -> int:
        return 1

    assert await t() == "Dummy Output"
    await engine.shutdown()
    assert sync_seen[:6] == DONE_ORDER
    assert async_seen[:6] == DONE_ORDER
    unsubscribe()


async def test_user_events_and_emit_from_threads(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    tel, _ = await start(engine, tmp_path)
    assigned = define_event(
        "campaign.ResourceAssigned", workflow_type="", instance="", resource="", priority=0
    )
    received: list[Event] = []
    tel.subscribe(
        lambda e: received.append(e) if e.event_type == "campaign.ResourceAssigned" else None
    )

    def burst(thread_no: int) -> None:
        for i in range(500):
            tel.emit(assigned(workflow_type="train", instance=f"{thread_no}-{i}", resource="gpu:0"))

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    deadline = asyncio.get_running_loop().time() + 10
    while len(received) < 4000 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    await engine.shutdown()
    assert len(received) == 4000
    assert len({e.instance for e in received}) == 4000  # type: ignore[attr-defined]
    assert len({e.event_id for e in received}) == 4000
    lines = [
        r
        for r in read_checkpoint(tel.checkpoint_file, ["event"])
        if r["name"] == "campaign.ResourceAssigned"
    ]
    assert len(lines) == 4000
    assert lines[0]["resource"] == "gpu:0" and lines[0]["session_id"] == engine.uid
    with pytest.raises(ValueError, match="must contain a dot"):
        define_event("NoDot")
    with pytest.raises(ValueError, match="shadow"):
        define_event("x.Y", task_id="")
    with pytest.raises(ValueError, match="engine event"):
        define_event("asyncflow.TaskResolved")
    with pytest.raises(TypeError, match="Event"):
        tel.emit({"not": "an event"})  # type: ignore[arg-type]


# ---------------------------------------------------------------- checkpoint file


async def test_checkpoint_file_has_every_span_once(engine: WorkflowEngine, tmp_path: Path) -> None:
    tel, exporter = await start(engine, tmp_path, checkpoint_interval=0.05)

    @engine.function_task
    async def t(i: int) -> int:
        return i

    async with engine.workflow_scope(name="sweep"):
        await asyncio.gather(*(t(i) for i in range(200)))
    await asyncio.sleep(0.1)
    await engine.shutdown()
    path = tel.checkpoint_file
    assert path.name.startswith(f"{engine.uid}.") and path.name.endswith(".telemetry.jsonl")
    lines = path.read_text().splitlines()
    assert all(line.startswith('{"section":"') for line in lines)
    assert json.loads(lines[0])[names.SECTION] == names.SECTION_HEADER
    # Layout 2: a header, six small lines per task (docs/telemetry.md).
    assert 6 * 200 <= len(lines) < 7 * 200
    rss = tel.checkpoint_writer_peak_rss  # reported by the writer process as it exited
    assert rss is not None and 0 < rss < 100 * 2**20
    records = list(read_checkpoint(path))
    spans = [r for r in records if r["section"] == "span"]
    assert len(spans) == len({s["span_id"] for s in spans}) == 200 + 2  # tasks, workflow, session
    assert len(spans) == len(exporter.get_finished_spans())
    # The file and the OTel spans say the same thing about every span.
    otel = {f"{s.context.span_id:016x}": s for s in exporter.get_finished_spans()}
    for span in spans:
        twin = otel[span["span_id"]]
        assert span["name"] == twin.name
        assert span["start_ns"] == twin.start_time and span["end_ns"] == twin.end_time
        assert span["attributes"] == {
            k: list(v) if isinstance(v, tuple) else v for k, v in twin.attributes.items()
        }
        assert [e["name"] for e in span["events"]] == [e.name for e in twin.events]
    keys = {
        "name",
        "span_id",
        "trace_id",
        "parent_span_id",
        "start_ns",
        "end_ns",
        "start_time_s",
        "end_time_s",
        "duration_ms",
        "status_code",
        "status_description",
        "attributes",
        "events",
    }
    assert all(keys <= set(s) for s in spans)
    events = [r for r in records if r["section"] == "event"]
    assert events[0]["name"] == "SessionStarted" and events[-1]["name"] == "SessionEnded"
    for event in events:
        assert set(names.EVENT_BASE_FIELDS) <= set(event)
        assert event["trace_id"] == spans[0]["trace_id"]
    metrics = [r for r in records if r["section"] == "metric"]
    assert len(metrics) >= 2
    assert metrics[-1]["tasks_by_state"] == {"completed": 200}
    assert tel.read_traces()[-1]["name"] == "session"
    assert len(tel.task_spans()) == 200


async def test_checkpoint_survives_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    out = tmp_path / "out"
    script.write_text(
        "import asyncio, sys\n"
        "from asyncflow import WorkflowEngine\n"
        "async def main():\n"
        f"    engine = await WorkflowEngine.create(dry_run=True, work_dir={str(tmp_path)!r})\n"
        f"    tel = await engine.start_telemetry(checkpoint_path={str(out)!r})\n"
        "    @engine.function_task\n"
        "    async def t(i):\n"
        "        return i\n"
        "    n = 0\n"
        "    while True:\n"
        "        await asyncio.gather(*(t(i) for i in range(500)))\n"
        "        n += 1\n"
        "        if n == 3:\n"
        "            print('ready', flush=True)\n"
        "asyncio.run(main())\n"
    )
    import os
    import signal
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, env={**os.environ}
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    assert line.strip() == b"ready"
    files = list(out.glob("*.telemetry.jsonl"))
    deadline = asyncio.get_running_loop().time() + 10
    while not (files and files[0].stat().st_size > 0):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
        files = list(out.glob("*.telemetry.jsonl"))
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    text = files[0].read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline may be torn
    assert len(complete) > 100
    parsed = [json.loads(line) for line in complete]
    ended = [r["uid"] for r in parsed if r["section"] == "task" and "ended" in r]
    assert ended and len(ended) == len(set(ended))
    # The writer may still be writing what it was sent: read what was taken.
    taken = tmp_path / f"taken{names.CHECKPOINT_SUFFIX}"
    taken.write_text("".join(line + "\n" for line in complete))
    span_ids = [r["span_id"] for r in read_checkpoint(taken, ["span"])]
    assert len(span_ids) == len(set(span_ids)) == len(ended)


async def test_a_killed_run_keeps_the_steps_its_running_tasks_took(tmp_path: Path) -> None:
    """Every event line is written when it happens, not when the task ends."""
    import os
    import signal
    import sys

    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(
        "import asyncio\n"
        "from asyncflow import LocalExecutionBackend, WorkflowEngine\n"
        "async def main():\n"
        "    backend = await LocalExecutionBackend()\n"
        f"    engine = await WorkflowEngine.create(backend=backend, work_dir={str(tmp_path)!r})\n"
        f"    await engine.start_telemetry(checkpoint_path={str(out)!r})\n"
        "    @engine.function_task\n"
        "    async def stuck():\n"
        "        await asyncio.sleep(600)\n"
        "    fut = stuck()\n"
        "    while fut.state != 'RUNNING':\n"
        "        await asyncio.sleep(0.01)\n"
        "    await asyncio.sleep(1.0)  # the writer sends at least every 0.25 s\n"
        "    print(fut.uid, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, env={**os.environ}
    )
    assert proc.stdout is not None
    uid = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode().strip()
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    events = [r["name"] for r in read_checkpoint(out, ["event"]) if r.get("task_id") == uid]
    assert events == [
        "TaskCreated",
        "asyncflow.TaskResolved",
        "TaskQueued",
        "TaskSubmitted",
        "TaskStarted",
    ]


# ---------------------------------------------------------------- session facts


async def test_service_name_and_separate_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "md-campaign")
    one = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    two = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    tel_one, exp_one = await start(one, tmp_path)
    tel_two, exp_two = await start(two, tmp_path)
    assert await one.start_telemetry() is tel_one

    @one.function_task
    async def a() -> None:
        return None

    @two.function_task
    async def b() -> None:
        return None

    await asyncio.gather(a(), b(), b())
    await asyncio.gather(one.shutdown(), two.shutdown())
    spans_one, spans_two = exp_one.get_finished_spans(), exp_two.get_finished_spans()
    assert {s.name for s in spans_one} == {"session", "task a"}
    assert {s.name for s in spans_two} == {"session", "task b"}
    assert {s.context.trace_id for s in spans_one}.isdisjoint(
        {s.context.trace_id for s in spans_two}
    )
    assert spans_one[0].resource.attributes["service.name"] == "md-campaign"
    assert spans_one[0].resource.attributes["service.instance.id"] == one.uid
    assert tel_one.checkpoint_file != tel_two.checkpoint_file


@pytest.mark.parametrize(
    ("attributes", "service"),
    [
        ("service.name = spaced", "spaced"),
        ("deployment.environment=prod,service.name=a%20b", "a b"),
        ("app.service.name=x", "asyncflow"),
    ],
)
async def test_service_name_from_resource_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attributes: str, service: str
) -> None:
    """The SDK's own parsing of OTEL_RESOURCE_ATTRIBUTES decides, not a substring test."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", attributes)
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    _, exporter = await start(engine, tmp_path)
    await engine.shutdown()
    (session,) = exporter.get_finished_spans()
    assert session.resource.attributes["service.name"] == service
    assert session.resource.attributes["service.instance.id"] == engine.uid


async def test_concurrent_starts_share_one_telemetry(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        one, two = await asyncio.gather(
            engine.start_telemetry(checkpoint_path=tmp_path / "t"),
            engine.start_telemetry(checkpoint_path=tmp_path / "t"),
        )
        assert one is two is engine.telemetry
    finally:
        await engine.shutdown()
    assert len(list((tmp_path / "t").glob(f"*{names.CHECKPOINT_SUFFIX}"))) == 1
    started = [r for r in read_checkpoint(tmp_path / "t") if r.get("name") == "SessionStarted"]
    assert len(started) == 1


async def test_start_after_stop_is_a_new_telemetry(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)

    @engine.function_task
    async def t() -> None:
        return None

    try:
        first = await engine.start_telemetry()
        await t()
        await first.stop()
        await t()  # recorded by nobody
        second = await engine.start_telemetry()
        assert second is not first and engine.telemetry is second
        await t()
    finally:
        await engine.shutdown()
    assert first.summary()["tasks_by_state"] == {"completed": 1}
    assert second.summary()["tasks_by_state"] == {"completed": 1}
    assert len(first.task_spans()) == len(second.task_spans()) == 1


async def test_telemetry_restarted_within_a_second_writes_a_file_of_its_own(
    tmp_path: Path,
) -> None:
    """Stopped and started again within the same second, the two sessions of
    an engine went to the same ``<uid>.<epoch>`` file (two headers, one
    after the other's end); the second now starts in the next second, in a
    file of its own named by its true start, both read back whole."""
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)

    @engine.function_task
    async def t() -> None:
        return None

    try:
        first = await engine.start_telemetry(checkpoint_path=tmp_path / "t")
        await t()
        await first.stop()
        second = await engine.start_telemetry(checkpoint_path=tmp_path / "t")
        await t()
    finally:
        await engine.shutdown()
    assert first.checkpoint_file is not None and second.checkpoint_file is not None
    assert first.checkpoint_file != second.checkpoint_file
    for tel in (first, second):
        lines = Path(tel.checkpoint_file).read_text().splitlines()
        assert sum('"section":"header"' in line for line in lines) == 1
        # The name's second is the session's true start (runs are ordered by it).
        (started,) = [
            e["event_time"]
            for e in read_checkpoint(tel.checkpoint_file, sections=["event"])
            if e["name"] == "SessionStarted"
        ]
        epoch = Path(tel.checkpoint_file).name.removesuffix(names.CHECKPOINT_SUFFIX)
        assert int(epoch.rpartition(".")[2]) == int(started)
        spans = read_checkpoint(tel.checkpoint_file, sections=["span"])
        tasks = [r for r in spans if r["attributes"].get(names.LEVEL) == names.LEVEL_TASK]
        assert len(tasks) == 1


async def test_shutdown_while_telemetry_starts_stops_what_it_starts(tmp_path: Path) -> None:
    """``shutdown()`` while a ``start_telemetry`` was still starting (here it
    waits for the next second, a restart within one): the telemetry it then
    started kept running on the shut-down engine, its writer and progress
    reporter too."""
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    await asyncio.sleep(1.02 - time.time() % 1)  # early in a second: the restart falls in it
    first = await engine.start_telemetry(checkpoint_path=tmp_path / "t")
    await first.stop()
    again = asyncio.ensure_future(
        engine.start_telemetry(checkpoint_path=tmp_path / "t", progress=True)
    )
    await asyncio.sleep(0.05)  # it waits for the next second now
    await asyncio.wait_for(engine.shutdown(), 30)
    second = await asyncio.wait_for(again, 30)
    assert second.stopped
    assert engine._progress is None  # its progress reporter was stopped too
    assert second.checkpoint_file is not None
    assert "SessionEnded" in Path(second.checkpoint_file).read_text()


async def test_slow_async_subscriber_cannot_hold_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from asyncflow.telemetry import manager

    monkeypatch.setattr(manager, "SUBSCRIBER_GRACE", 0.3)
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    tel = await engine.start_telemetry(checkpoint_path=tmp_path / "t")
    stuck = asyncio.Event()

    async def slow(event: Event) -> None:
        if event.event_type == "TaskCompleted":
            await stuck.wait()

    tel.subscribe(slow)

    @engine.function_task
    async def t() -> None:
        return None

    await t()
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(engine.shutdown(), 10)
    assert asyncio.get_running_loop().time() - started < 5
    assert "still running after" in caplog.text
    assert any(r.get("name") == "SessionEnded" for r in read_checkpoint(tmp_path / "t"))


@pytest.mark.parametrize("field", ["section", "name", "trace_id", "span_id", "event_time"])
def test_user_event_fields_cannot_shadow_line_keys(field: str) -> None:
    with pytest.raises(ValueError, match=f"event field '{field}' would shadow"):
        define_event("campaign.Bad", **{field: ""})


async def test_default_service_name_metrics_and_otlp_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    tel, exporter = await start(engine, tmp_path)

    @engine.function_task
    async def t() -> int:
        return 1

    async with engine.workflow_scope(name="train"):
        await asyncio.gather(*(t() for _ in range(5)))
    points = tel.read_metrics()
    durations = [p for p in points if p["name"] == names.METRIC_TASK_DURATION]
    assert sum(p["count"] for p in durations) == 5
    assert durations[0]["explicit_bounds"] == list(names.DURATION_BUCKETS)
    for point in points:
        assert names.TASK_UID not in point["attributes"]
        assert names.WORKFLOW_ID not in point["attributes"]
        assert set(point["attributes"]) <= set(names.METRIC_ATTRIBUTES[point["name"]])
    assert {p["name"] for p in points} >= {
        names.METRIC_TASK_DURATION,
        names.METRIC_TASK_QUEUE_DURATION,
        names.METRIC_TASKS_ACTIVE,
        names.METRIC_WORKFLOW_DURATION,
        names.METRIC_WORKFLOWS_ACTIVE,
        names.METRIC_NODE_CPU,
        names.METRIC_NODE_MEMORY,
    }
    await engine.shutdown()
    assert exporter.get_finished_spans()[0].resource.attributes["service.name"] == "asyncflow"
    path = tel.export_as_otlp(tmp_path / "run.otlp.json")
    doc = json.loads(path.read_text())
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(spans) == 5 + 2
    assert {a["key"] for a in doc["resourceSpans"][0]["resource"]["attributes"]} >= {"service.name"}


# ---------------------------------------------------------------- robustness


async def test_telemetry_problems_never_stop_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from asyncflow.telemetry._sampler import _Gpus

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(prometheus_port=port, resource_poll_interval=0.05)
        assert tel.prometheus_port is None
        assert f"no /metrics endpoint on 127.0.0.1:{port}" in caplog.text

        @engine.function_task
        async def t() -> int:
            return 1

        assert await asyncio.gather(*(t() for _ in range(10))) == ["Dummy Output"] * 10
        # No GPU here: no GPU value, no series, and nothing logged about it.
        assert _Gpus().utilisation() == []
        points = tel.read_metrics()
        assert not [p for p in points if p["name"] == names.METRIC_NODE_GPU]
        assert "GPU" not in caplog.text and "nvml" not in caplog.text.lower()
    finally:
        await engine.shutdown()
        taken.close()


async def test_a_scope_inside_a_scope_is_one_of_its_members(tmp_path: Path) -> None:
    """The outer workflow's span ends after the inner one, failed when it
    failed (it ended at its own last task, and said completed)."""
    release = threading.Event()
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry()

        @engine.function_task
        async def slow_fail() -> None:
            release.wait(30)
            raise ValueError("boom")

        @engine.function_task
        async def quick() -> int:
            return 1

        async with engine.workflow_scope(name="outer"):
            q = quick()
            async with engine.workflow_scope(name="inner"):
                s = slow_fail()
        assert await q == 1

        def ended() -> dict[str, dict[str, Any]]:
            return {
                t["name"]: t
                for t in tel.read_traces()
                if t["attributes"].get(names.LEVEL) == names.LEVEL_WORKFLOW
            }

        assert ended() == {}  # both scopes exited; a task of the inner one runs
        release.set()
        with pytest.raises(ValueError):
            await s
    finally:
        release.set()
        await engine.shutdown()
    spans = ended()
    task = next(t for t in tel.read_traces() if t["name"] == "task slow_fail")
    for name in ("workflow outer", "workflow inner"):
        assert spans[name]["attributes"][names.WORKFLOW_RESULT] == names.RESULT_FAILED
        assert spans[name]["end_ns"] >= task["end_ns"]
    assert spans["workflow outer"]["end_ns"] >= spans["workflow inner"]["end_ns"]
