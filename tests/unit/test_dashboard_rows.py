"""Timeline rows: one per workflow instance, however deep its blocks nest, live or finished."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asyncflow import NoopExecutionBackend, WorkflowEngine
from asyncflow.dashboard import compute as c
from asyncflow.dashboard import open_source
from asyncflow.dashboard._checkpoint import CheckpointParser
from asyncflow.dashboard.model import Run, RunBuilder
from asyncflow.dashboard.sources import CheckpointSource
from asyncflow.telemetry import names as n
from asyncflow.telemetry import read_checkpoint

from ..ui import records as r

SESSION = r.session_span()["span_id"]


def workflow_span(wf_id: str, wf_type: str, span_id: str, parent: str = SESSION) -> dict[str, Any]:
    """A workflow span as the checkpoint file writes it."""
    return {
        **r.session_span(),
        "name": n.span_name(n.LEVEL_WORKFLOW, wf_type),
        "span_id": span_id,
        "parent_span_id": parent,
        "attributes": {
            n.LEVEL: n.LEVEL_WORKFLOW,
            n.WORKFLOW_ID: wf_id,
            n.WORKFLOW_NAME: wf_type,
            n.WORKFLOW_RESULT: "completed",
        },
    }


def block_span(uid: str, name: str, span_id: str, parent: str, wf_type: str = "") -> dict[str, Any]:
    """A block span: like the engine's, its workflow id is its own uid."""
    attrs: dict[str, Any] = {
        n.LEVEL: n.LEVEL_BLOCK,
        n.WORKFLOW_ID: uid,
        n.BLOCK_UID: uid,
        n.TASK_RESULT: "completed",
    }
    if wf_type:
        attrs[n.WORKFLOW_NAME] = wf_type
    return {
        **r.session_span(),
        "name": n.span_name(n.LEVEL_BLOCK, name),
        "span_id": span_id,
        "parent_span_id": parent,
        "attributes": attrs,
    }


def task_in(uid: str, scope: str, parent: str, t: float = 1.0) -> dict[str, Any]:
    """A task span registered under ``scope`` (a workflow id or a block uid)."""
    return {**r.task_span(uid, scope, "sim", 0, None, t, t + 1.0), "parent_span_id": parent}


def created(uid: str, scope: str, span_id: str, t: float = 0.5) -> dict[str, Any]:
    """The ``TaskCreated`` line of a task or block registered under ``scope``."""
    level = n.LEVEL_BLOCK if uid.startswith("block.") else n.LEVEL_TASK
    return {
        "section": n.SECTION_EVENT,
        "name": n.EVENT_TASK_CREATED,
        "event_type": n.EVENT_TASK_CREATED,
        "event_id": 1,
        "event_time": r.T0 + t,
        "emit_time": r.T0 + t,
        "session_id": "s",
        "node_id": "node-1",
        "trace_id": r.TRACE,
        "backend": "local",
        "task_id": uid,
        "attributes": {
            n.WORKFLOW_ID: scope,
            n.LEVEL: level,
            n.TASK_NAME: "step" if level == n.LEVEL_TASK else uid,
            n.WORKFLOW_NAME: "sim",
        },
        "span_id": span_id,
    }


def lines(*records: dict[str, Any]) -> list[str]:
    """Records as the writer's compact lines."""
    return [json.dumps(rec, separators=(",", ":")) for rec in records]


def built(*spans: dict[str, Any]) -> Run:
    builder = RunBuilder("rows")
    builder.add_span(r.session_span())
    for span in spans:
        builder.add_span(span)
    return builder.snapshot()


def rows_of(run: Run) -> list[tuple[str, str, list[str]]]:
    """``(key, type, task uids)`` of every timeline row."""
    return [
        (row.key, row.workflow_type, sorted(t.uid for t in row.tasks))
        for row in c.timeline_rows(run)
    ]


# Inside wf-1: block.000001 > block.000002 > block.000003, a task at every depth.
NESTED = [
    task_in("task.000004", "block.000003", "00000000000000b3"),
    block_span("block.000003", "deepest", "00000000000000b3", "00000000000000b2", "sim"),
    task_in("task.000005", "block.000002", "00000000000000b2"),
    block_span("block.000002", "inner", "00000000000000b2", "00000000000000b1", "sim"),
    task_in("task.000006", "block.000001", "00000000000000b1"),
    block_span("block.000001", "outer", "00000000000000b1", "00000000000000a1", "sim"),
    task_in("task.000007", "wf-1", "00000000000000a1", t=2.0),
    workflow_span("wf-1", "sim", "00000000000000a1"),
]
NESTED_TASKS = ["task.000004", "task.000005", "task.000006", "task.000007"]


def test_nested_blocks_share_their_workflows_row() -> None:
    run = built(*NESTED)  # in the order the file has them: inner spans end first
    assert rows_of(run) == [("wf-1", "sim", NESTED_TASKS)]
    assert [(x.workflow_type, x.instances, x.tasks) for x in c.configuration(run)] == [
        ("sim", 1, 4)
    ]
    assert c.summarize(run).workflows == 1
    assert [x.uid for x in c.workflow_records(run, "wf-1") if x.level == n.LEVEL_BLOCK] == [
        "block.000001",
        "block.000002",
        "block.000003",
    ]


def test_the_outermost_block_is_the_instance_outside_any_scope() -> None:
    run = built(
        task_in("task.000003", "block.000002", "00000000000000b2"),
        block_span("block.000002", "inner", "00000000000000b2", "00000000000000b1"),
        task_in("task.000004", "block.000001", "00000000000000b1"),
        block_span("block.000001", "prepare", "00000000000000b1", SESSION),
    )
    assert rows_of(run) == [("block.000001", "prepare", ["task.000003", "task.000004"])]
    assert c.summarize(run).workflows == 1
    assert [x.uid for x in c.workflow_records(run, "block.000001")] == [
        "block.000002",
        "task.000003",
        "task.000004",
    ]


def test_a_workflow_scope_opened_inside_another_is_an_instance_of_its_own() -> None:
    run = built(
        task_in("task.000002", "wf-inner", "00000000000000a2"),
        workflow_span("wf-inner", "train", "00000000000000a2", "00000000000000a1"),
        task_in("task.000003", "wf-1", "00000000000000a1", t=2.0),
        workflow_span("wf-1", "sim", "00000000000000a1"),
    )
    assert [key for key, _, _ in rows_of(run)] == ["wf-inner", "wf-1"]


def test_live_nested_blocks_join_their_workflow_before_any_span() -> None:
    builder = RunBuilder("live")
    parser = CheckpointParser(builder)
    parser.feed(
        lines(
            created("block.000001", "wf-1", "00000000000000b1"),
            created("task.000002", "block.000001", "00000000000000c2"),
            created("block.000003", "block.000001", "00000000000000b3"),
            created("task.000004", "block.000003", "00000000000000c4"),
            created("task.000005", "wf-1", "00000000000000c5"),
        )
    )
    parser.flush()
    run = builder.snapshot()
    assert rows_of(run) == [("wf-1", "sim", ["task.000002", "task.000004", "task.000005"])]
    assert c.summarize(run).workflows == 1


@pytest.mark.parametrize("same_read", [True, False], ids=["same-read", "later-read"])
def test_a_finished_block_stays_in_its_running_workflow(same_read: bool) -> None:
    """The block's span is written, its workflow's span is not: the created line places it."""
    builder = RunBuilder("live")
    parser = CheckpointParser(builder)
    first = lines(
        created("block.000001", "wf-1", "00000000000000b1"),
        created("task.000002", "block.000001", "00000000000000c2"),
        created("task.000003", "wf-1", "00000000000000c3"),
    )
    rest = lines(
        task_in("task.000002", "block.000001", "00000000000000b1"),
        block_span("block.000001", "stage", "00000000000000b1", "00000000000000a1", "sim"),
    )
    if same_read:
        parser.feed(first + rest)
    else:
        parser.feed(first)
        parser.flush()
        parser.feed(rest)
    parser.flush()
    run = builder.snapshot()
    assert [b.finished is not None for b in run.blocks] == [True]
    assert rows_of(run) == [("wf-1", "sim", ["task.000002", "task.000003"])]


async def _nested_run(directory: Path) -> Path:
    """A real run: a workflow scope holding a block holding a nested block."""
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=directory / "w")
    tel = await engine.start_telemetry(checkpoint_path=directory)

    @engine.function_task
    async def step(i: int) -> int:
        return i

    @engine.block
    async def inner() -> int:
        return await step(2)

    @engine.block
    async def outer() -> int:
        await step(1)
        return await inner()

    async with engine.workflow_scope(workflow_id="wf-1", name="sim"):
        first = step(0)
        await outer()
        await first
    await engine.shutdown()
    assert tel.checkpoint_file is not None
    return Path(tel.checkpoint_file)


async def test_a_real_run_with_nested_blocks_has_one_row(tmp_path: Path) -> None:
    path = await _nested_run(tmp_path)
    run = open_source(tmp_path).poll()
    assert len(run.tasks) == 3 and len(run.blocks) == 2 and run.ended
    ((key, wf_type, tasks),) = rows_of(run)
    assert (key, wf_type, len(tasks)) == ("wf-1", "sim", 3)
    assert [(x.workflow_type, x.instances, x.tasks) for x in c.configuration(run)] == [
        ("sim", 1, 3)
    ]
    assert c.summarize(run).workflows == 1
    # As the run wrote it: read after every line, by one source and by a fresh one each time.
    data = path.read_bytes().splitlines(keepends=True)
    live = tmp_path / "live" / path.name
    live.parent.mkdir()
    live.write_bytes(b"")
    growing = CheckpointSource(live)
    for count in range(1, len(data) + 1):
        with live.open("ab") as f:
            f.write(data[count - 1])
        for source in (growing, CheckpointSource(live)):
            keys = [key for key, _, _ in rows_of(source.poll())]
            assert keys in ([], ["wf-1"]), (count, data[count - 1][:80])


async def test_spans_alone_place_blocks_before_their_workflow_span(tmp_path: Path) -> None:
    """OTLP, Jaeger and Tempo give spans only: block spans name the scope they
    were called in (``asyncflow.block.scope``), so a live run whose workflow
    span is not exported yet still has one row per instance."""
    path = await _nested_run(tmp_path)
    spans = list(read_checkpoint(path, [n.SECTION_SPAN]))
    blocks = [s for s in spans if s["attributes"].get(n.LEVEL) == n.LEVEL_BLOCK]
    assert sorted(s["attributes"][n.BLOCK_SCOPE] for s in blocks) == ["block.000002", "wf-1"]
    builder = RunBuilder("spans only")
    for span in spans:
        if span["attributes"].get(n.LEVEL) != n.LEVEL_WORKFLOW:  # not exported yet
            builder.add_span(span)
    run = builder.snapshot()
    ((key, wf_type, tasks),) = rows_of(run)
    assert (key, wf_type, len(tasks)) == ("wf-1", "sim", 3)
