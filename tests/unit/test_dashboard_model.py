"""Pure parsing: checkpoint lines, OTLP/JSON, Jaeger and Tempo bodies, into records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncflow.dashboard import _otlp
from asyncflow.dashboard._checkpoint import CheckpointParser
from asyncflow.dashboard.model import RunBuilder, span_record
from asyncflow.telemetry import names as n

from ..ui import records as r

DATA = Path(__file__).resolve().parents[1] / "ui" / "data"


def lines(*records: dict[str, object]) -> list[str]:
    return [json.dumps(rec, separators=(",", ":")) for rec in records]


def event(name: str, uid: str, t: float, **extra: object) -> dict[str, object]:
    return {
        "section": n.SECTION_EVENT,
        "name": name,
        "event_type": name,
        "event_id": 1,
        "event_time": r.T0 + t,
        "emit_time": r.T0 + t,
        "session_id": "s",
        "node_id": "node-1",
        "trace_id": r.TRACE,
        "backend": "local",
        "task_id": uid,
        "attributes": {n.WORKFLOW_ID: "wf-a"},
        "span_id": "00000000000000aa",
        **extra,
    }


def test_span_record_reads_every_field() -> None:
    span = r.task_span("task.000007", "wf-a", "simulate", 2, ["gpu:0", "gpu:1"], 1.0, 3.0, "failed")
    rec = span_record(span)
    assert rec is not None
    assert (rec.uid, rec.level, rec.name, rec.workflow_id, rec.workflow_type) == (
        "task.000007",
        "task",
        "step",
        "wf-a",
        "simulate",
    )
    assert (rec.state, rec.error_type, rec.message) == (
        "failed",
        "ValueError",
        "evaluation set is empty",
    )
    assert rec.started == pytest.approx(r.T0 + 1.0) and rec.finished == pytest.approx(r.T0 + 3.0)
    assert rec.resolved == pytest.approx(r.T0 + 0.6)
    assert rec.slots == ("gpu:0", "gpu:1") and rec.gpus == 2 and rec.cpus == 1
    assert rec.slot_count("gpu") == 2 and rec.slot_count("cpu") == 0
    assert span_record(r.session_span()) is None


def test_requested_counts_stand_in_for_missing_slots() -> None:
    rec = span_record(r.task_span("task.000001", "wf", "t", 3, None, 1.0, 2.0))
    assert rec is not None and rec.slots == ()
    assert rec.slot_count("gpu") == 3 and rec.slot_count("cpu") == 1


def test_live_tasks_come_from_events_until_their_span_arrives() -> None:
    builder = RunBuilder("live")
    parser = CheckpointParser(builder)
    parser.feed(
        lines(
            event(n.EVENT_SESSION_STARTED, "", 0.0),
            event(n.EVENT_TASK_CREATED, "task.000001", 0.5),
            event(n.EVENT_TASK_CREATED, "task.000002", 0.6),
            event(n.EVENT_TASK_STARTED, "task.000001", 1.0),
            event(n.EVENT_RESOURCE_ASSIGNED, "task.000001", 0.9, slots=["gpu:3"], cpus=1, gpus=1),
        )
    )
    parser.flush()
    run = builder.snapshot()
    states = {t.uid: (t.state, t.slots, t.started) for t in run.tasks}
    assert states == {
        "task.000001": ("running", ("gpu:3",), r.T0 + 1.0),
        "task.000002": ("pending", (), None),
    }
    assert run.start == r.T0 and not run.ended
    parser.feed(lines(r.task_span("task.000001", "wf-a", "sim", 1, None, 1.0, 2.0)))
    parser.flush()
    first = builder.snapshot().tasks[0]
    assert first.state == "completed"
    assert first.slots == ("gpu:3",)  # kept from the assignment event


def test_events_of_finished_tasks_are_not_parsed() -> None:
    builder = RunBuilder("finished")
    parser = CheckpointParser(builder)
    created = lines(event(n.EVENT_TASK_CREATED, "task.000001", 0.5))[0]
    # A line that would not parse proves it was skipped, not parsed.
    broken = created.replace('"event_time"', '"event_time":,')
    parser.feed([broken, *lines(r.task_span("task.000001", "wf-a", "sim", 1, None, 1.0, 2.0))])
    parser.flush()
    assert parser.bad_lines == 0 and len(builder.snapshot().tasks) == 1


def test_bad_lines_are_counted_not_fatal() -> None:
    builder = RunBuilder("bad")
    parser = CheckpointParser(builder)
    parser.feed(["not json at all", '{"section":"span","name":', "", *lines(r.session_span())])
    assert parser.bad_lines == 2 and parser.first_bad == "not json at all"
    assert builder.snapshot().ended


def test_resource_updates_metrics_and_campaign_priorities() -> None:
    builder = RunBuilder("samples")
    parser = CheckpointParser(builder)
    update = event(n.EVENT_RESOURCE_UPDATE, "", 1.0, cpu_percent=12.5, memory_percent=40.0)
    update["gpu_percent"] = None
    assigned = event("campaign.ResourceAssigned", "", 0.1, workflow_type="train", priority=5)
    parser.feed(lines(update, assigned, r.metric_snapshot()))
    run = builder.snapshot()
    (sample,) = run.samples
    assert (sample.node, sample.cpu, sample.memory, sample.gpu) == ("node-1", 12.5, 40.0, None)
    assert run.priorities == {"train": 5}
    assert {(s.kind, s.busy + s.idle) for s in run.slot_snapshots} == {("gpu", 4), ("cpu", 8)}


def test_blocks_in_a_workflow_share_its_row() -> None:
    from asyncflow.dashboard import compute as c

    builder = RunBuilder("blocks")
    workflow = {
        **r.session_span(),
        "name": "workflow wfb",
        "span_id": "00000000000000a1",
        "attributes": {
            n.LEVEL: n.LEVEL_WORKFLOW,
            n.WORKFLOW_ID: "wf-1",
            n.WORKFLOW_NAME: "wfb",
            n.WORKFLOW_RESULT: "completed",
        },
    }
    block = {
        **r.session_span(),
        "name": "block blk",
        "span_id": "00000000000000b1",
        "parent_span_id": "00000000000000a1",
        "attributes": {
            n.LEVEL: n.LEVEL_BLOCK,
            n.WORKFLOW_ID: "block.000001",
            n.BLOCK_UID: "block.000001",
            n.WORKFLOW_NAME: "wfb",
            n.TASK_RESULT: "completed",
        },
    }
    builder.add_span(workflow)
    builder.add_span(block)
    builder.add_span(r.task_span("task.000002", "block.000001", "wfb", 0, None, 1.0, 2.0))
    run = builder.snapshot()
    (row,) = c.timeline_rows(run)
    assert (row.key, row.workflow_type) == ("wf-1", "wfb")
    records = c.workflow_records(run, "wf-1")
    assert [(x.level, x.uid) for x in records] == [
        ("block", "block.000001"),
        ("task", "task.000002"),
    ]


def test_otlp_ids_hex_or_base64_and_any_values() -> None:
    assert _otlp.hex_id("S/kvNXezTaajzpKdDg5HNg==", 16) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert _otlp.hex_id("4BF92F3577B34DA6A3CE929D0E0E4736", 16) == r.TRACE
    assert _otlp.any_value({"intValue": "42"}) == 42
    assert _otlp.any_value({"arrayValue": {"values": [{"stringValue": "gpu:1"}]}}) == ["gpu:1"]
    assert _otlp.any_value({"boolValue": True}) is True


@pytest.mark.parametrize(
    "body", ["jaeger_v3_trace.json", "tempo_trace.json"], ids=["jaeger", "tempo"]
)
def test_jaeger_and_tempo_bodies_give_checkpoint_shaped_spans(body: str) -> None:
    spans = _otlp.spans_from_document(json.loads((DATA / body).read_text()))
    builder = RunBuilder(body)
    for span in spans:
        builder.add_span(span)
    run = builder.snapshot()
    assert len(run.tasks) == 8 and len(run.workflows) == 8 and run.ended
    assert {t.workflow_type for t in run.tasks} == {"simulate", "analyze", "train", "evaluate"}
    assert all(len(s["span_id"]) == 16 and len(s["trace_id"]) == 32 for s in spans)
    failed = [t for t in run.tasks if t.state == "failed"]
    assert [(t.error_type, t.message) for t in failed] == [
        ("ValueError", "evaluation set is empty")
    ]
    assert all(t.started is not None and t.resolved is not None for t in run.tasks)
    assert any(t.slots for t in run.tasks)


def test_newest_trace_and_tempo_search() -> None:
    spans = _otlp.spans_from_document(json.loads((DATA / "jaeger_v3_traces.json").read_text()))
    assert len({s["trace_id"] for s in spans}) == 2
    newest = _otlp.newest_trace(spans)
    assert len(newest) == 17 and len({s["trace_id"] for s in newest}) == 1
    ids = _otlp.tempo_trace_ids(json.loads((DATA / "tempo_search.json").read_text()))
    assert ids[0] == newest[0]["trace_id"] and len(ids) == 2
    with pytest.raises(ValueError, match="resourceSpans"):
        _otlp.spans_from_document({"data": []})
    assert _otlp.api_error(json.loads((DATA / "jaeger_v3_not_found.json").read_text())) == (
        "No traces found"
    )
