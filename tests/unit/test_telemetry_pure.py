"""Telemetry's pure parts: names, histograms, line rendering, checkpoint reading."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from asyncflow.telemetry import names
from asyncflow.telemetry._aggregate import Histograms
from asyncflow.telemetry._layout import Layout1Records
from asyncflow.telemetry._records import expand
from asyncflow.telemetry._render import LineRenderer
from asyncflow.telemetry.checkpoint import CheckpointWriter, read_checkpoint

T0 = 1_764_400_000_123_456_789


def test_prometheus_names_follow_the_exporter_translation() -> None:
    assert names.prometheus_label(names.TASK_NAME) == "asyncflow_task_name"
    assert names.prometheus_label(names.ERROR_TYPE) == "error_type"
    assert names.prometheus_series(names.METRIC_TASK_DURATION) == (
        "asyncflow_task_duration_seconds_bucket",
        "asyncflow_task_duration_seconds_sum",
        "asyncflow_task_duration_seconds_count",
    )
    assert names.prometheus_series(names.METRIC_TASKS_ACTIVE) == ("asyncflow_tasks_active",)
    assert set(names.PROMETHEUS_NAMES) == set(names.METRIC_ATTRIBUTES)
    for labels in names.METRIC_ATTRIBUTES.values():
        assert names.TASK_UID not in labels and names.WORKFLOW_ID not in labels
    assert names.span_name("task", "simulate") == "task simulate"
    assert names.span_name("session") == "session"


def test_histograms_bucket_like_prometheus() -> None:
    hist = Histograms("x", ("a", "b"), (0.1, 1.0))
    hist.record(("k", ""), 0.1)  # on the bound: that bucket (le="0.1")
    hist.record(("k", ""), 0.5)
    hist.record(("k", ""), 7.0)  # above every bound: +Inf
    (point,) = hist.points()
    assert point["bucket_counts"] == [1, 1, 1]
    assert point["count"] == 3 and point["sum"] == pytest.approx(7.6)
    assert point["attributes"] == {"a": "k"}  # empty values left out
    assert hist.take_pending() == []  # nothing tracked without a reader
    hist.track = True
    hist.record(("k", "z"), 2.0)
    hist.record(("k", ""), 3.0)
    hist.record(("k", "z"), 4.0)
    assert sorted(hist.take_pending()) == [(("k", ""), [3.0]), (("k", "z"), [2.0, 4.0])]
    assert hist.take_pending() == []


def render_task(renderer: LineRenderer, *, failed: bool = False) -> list[dict[str, object]]:
    shape = ("K", 3, "task", "train", "function", "gpu", "training", 1, 2)
    created = ("C", "task.000007", 56, T0, 3, "wf-1", 0xABC, 0xDEF)
    steps = [("E", "task.000007", T0 + 10 * (i + 1), offset) for i, offset in enumerate((1, 2, 3))]
    started = ("S", "task.000007", T0 + 40)
    finished = (
        "F",
        "task.000007",
        "TaskFailed" if failed else "TaskCompleted",
        "KeyError" if failed else "",
        T0 + 100,
        "ERROR" if failed else "OK",
        'bad "key"' if failed else "",
        T0 + 10,
        T0 + 20,
        T0 + 30,
        T0 + 40,
        "failed" if failed else "completed",
        ("task.000001",),
        {"user.tag": "x"},
        ("gpu:1", "cpu:0"),
        ("KeyError", 'bad "key"', "Traceback ...\nKeyError: 'bad \"key\"'\n") if failed else None,
    )
    assigned = ("A", "task.000007", T0 + 35, {"slots": ["gpu:1", "cpu:0"], "cpus": 1, "gpus": 1})
    assert renderer.render(shape) == ""  # kept for the created lines that name it
    text = (
        renderer.render(created)
        + "".join(renderer.render(step) for step in steps)
        + renderer.render(assigned)
        + renderer.render(started)
        + renderer.render(finished)
    )
    assert text.endswith("\n")
    # Read back as layout 1's records, as every reader sees them.
    layout = Layout1Records()
    layout.records(json.loads(renderer.header()))
    return [record for line in text.splitlines() for record in layout.records(json.loads(line))]


def test_a_task_is_six_small_lines_and_the_last_repeats_nothing() -> None:
    renderer = LineRenderer("sess", "node-1", "ab" * 16)
    header = json.loads(renderer.header())
    assert header == {
        names.SECTION: names.SECTION_HEADER,
        names.HEADER_LAYOUT: names.CHECKPOINT_LAYOUT,
        names.HEADER_SESSION_ID: "sess",
        names.HEADER_NODE_ID: "node-1",
        names.HEADER_TRACE_ID: "ab" * 16,
    }
    steps = [("E", "task.000007", T0 + 10 * (i + 1), offset) for i, offset in enumerate((1, 2, 3))]
    lines = [json.loads(renderer.render(step)) for step in steps]
    lines.append(json.loads(renderer.render(("S", "task.000007", T0 + 40))))
    assert lines == [
        {"section": "task", "uid": "task.000007", step: T0 + 10 * (i + 1)}
        for i, step in enumerate(names.TL_STEPS)
    ]
    done = (
        *("F", "task.000007", "TaskCompleted", "", T0 + 100, "OK", ""),
        *(T0 + 10, T0 + 20, T0 + 30, T0 + 40, "completed", (), None, ("cpu:0",), None),
    )
    # The steps and slots were on earlier lines: the last line has none of them.
    assert json.loads(renderer.render(done)) == {
        "section": "task",
        "uid": "task.000007",
        "ended": T0 + 100,
        "result": "completed",
        "status": "OK",
    }
    attempt = ("T", "task.000007", T0 + 50, {names.ATTEMPT_NUMBER: 1})
    assert json.loads(renderer.render(attempt)) == {
        "section": "task",
        "uid": "task.000007",
        "attempt_ended": T0 + 50,
        "attempt": {names.ATTEMPT_NUMBER: 1},
    }


def test_task_records_render_to_events_and_one_span() -> None:
    renderer = LineRenderer("sess", "node-1", "ab" * 16)
    lines = render_task(renderer)
    assert lines[4]["name"] == "asyncflow.ResourceAssigned"
    assert lines[4]["slots"] == ["gpu:1", "cpu:0"] and lines[4]["gpus"] == 1
    del lines[4]
    assert [r["section"] for r in lines] == ["event"] * 6 + ["span"]
    # In lifecycle order: every step is written when it happens.
    assert [r["name"] for r in lines[:6]] == [
        "TaskCreated",
        "asyncflow.TaskResolved",
        "TaskQueued",
        "TaskSubmitted",
        "TaskStarted",
        "TaskCompleted",
    ]
    assert [r["event_time"] for r in lines[:6]] == sorted(r["event_time"] for r in lines[:6])
    for event in lines[:6]:
        assert set(names.EVENT_BASE_FIELDS) <= set(event)
        assert event["event_type"] == event["name"]
        assert event["task_id"] == "task.000007" and event["backend"] == "gpu"
        assert event["attributes"][names.WORKFLOW_ID] == "wf-1"
        assert event["span_id"] == f"{0xABC:016x}" and event["trace_id"] == "ab" * 16
    # The created line names the task for live views; the others carry only its workflow.
    assert lines[0]["attributes"] == {
        names.WORKFLOW_ID: "wf-1",
        names.LEVEL: "task",
        names.TASK_NAME: "train",
        names.WORKFLOW_NAME: "training",
        names.TASK_TYPE: "function",
        names.TASK_CPUS: 1,
        names.TASK_GPUS: 2,
    }
    assert all(e["attributes"] == {names.WORKFLOW_ID: "wf-1"} for e in lines[1:6])
    assert lines[0]["event_time"] == pytest.approx(T0 / 1e9)
    assert len({e["event_id"] for e in lines[:6]}) == 6
    span = lines[6]
    assert span["name"] == "task train" and span["parent_span_id"] == f"{0xDEF:016x}"
    assert span["start_ns"] == T0 and span["end_ns"] == T0 + 100
    assert span["duration_ms"] == pytest.approx(100 / 1e6)
    assert [e["name"] for e in span["events"]] == list(names.SPAN_EVENTS)
    attrs = span["attributes"]
    assert attrs[names.TASK_NAME] == "train" and attrs[names.WORKFLOW_NAME] == "training"
    assert attrs[names.TASK_GPUS] == 2 and attrs[names.TASK_DEPENDS_ON] == ["task.000001"]
    assert attrs[names.TASK_RESULT] == "completed" and attrs["user.tag"] == "x"
    assert attrs[names.TASK_SLOTS] == ["gpu:1", "cpu:0"]
    assert names.ERROR_TYPE not in attrs


def test_failed_task_renders_error_type_and_escaped_message() -> None:
    lines = render_task(LineRenderer('se"ss', "node", "cd" * 16), failed=True)
    del lines[1]  # the ResourceAssigned line
    assert lines[0]["session_id"] == 'se"ss'
    assert lines[5]["name"] == "TaskFailed" and lines[5]["error_type"] == "KeyError"
    span = lines[6]
    assert span["status_code"] == "ERROR" and span["status_description"] == 'bad "key"'
    assert span["attributes"][names.ERROR_TYPE] == "KeyError"
    # The OTel exception event, after the lifecycle events, at the span's end.
    exception = span["events"][-1]
    assert exception["name"] == names.SPAN_EVENT_EXCEPTION
    assert exception["time_ns"] == span["end_ns"]
    assert exception["attributes"] == {
        names.EXCEPTION_TYPE: "KeyError",
        names.EXCEPTION_MESSAGE: 'bad "key"',
        names.EXCEPTION_STACKTRACE: "Traceback ...\nKeyError: 'bad \"key\"'\n",
    }


def test_other_records() -> None:
    renderer = LineRenderer("s", "n", "ef" * 16)
    span = ("workflow x", 5, None, T0, T0 + 9, "UNSET", "", {"k": [1, 2]}, [])
    record = json.loads(renderer.render(("P", span)))
    assert record["parent_span_id"] is None and record["attributes"] == {"k": [1, 2]}
    assert renderer.render(("L", '{"section":"metric"}')) == '{"section":"metric"}\n'
    event = json.loads(renderer.session_event("SessionStarted", T0, 8, 5))
    assert event["task_id"] is None and event["span_id"] == f"{5:016x}"
    with pytest.raises(ValueError, match="unknown"):
        renderer.render(("Z",))


def test_reader_skips_torn_and_garbage_lines(tmp_path: Path) -> None:
    path = tmp_path / "run.telemetry.jsonl"
    path.write_text(
        '{"section":"event","name":"A"}\n'
        "not json at all\n"
        '{"section":"span","name":"s"}\n'
        '{"section":"event","name":"B"}\n'
        '{"section":"span","na'
    )
    assert [r["name"] for r in read_checkpoint(path)] == ["A", "s", "B"]
    assert [r["name"] for r in read_checkpoint(path, ["span"])] == ["s"]
    assert [r["name"] for r in read_checkpoint(tmp_path, ["event"])] == ["A", "B"]


def test_thread_writer_renders_records(tmp_path: Path) -> None:
    path = tmp_path / "t.telemetry.jsonl"
    writer = CheckpointWriter(path, LineRenderer("s", "n", "01" * 16), flush_interval=0.01)
    writer.write_record({"section": "metric", "v": 1})
    writer.write(("P", ("session", 1, None, T0, T0 + 1, "UNSET", "", {}, [])))
    writer.close()
    writer.close()
    records = list(read_checkpoint(path))
    assert [r["section"] for r in records] == ["metric", "span"]


class _Task:
    """A task as the observer sees it (the TaskInfo protocol)."""

    uid = "task.000003"
    name = "train"
    kind = "function"
    workflow_id = "wf-1"
    workflow_name = "training"
    task_description = {"cpus": 2, "gpus": 1}


class _Sink:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def write(self, record: tuple[Any, ...]) -> None:
        self.records.append(record)


def test_recorder_records_follow_the_declared_layout() -> None:
    from asyncflow.telemetry import _records as r
    from asyncflow.telemetry._recorder import Recorder
    from asyncflow.telemetry.observer import TaskObserver

    recorder = Recorder("sess", "node", 10, None)
    observer: TaskObserver = recorder  # the recorder is the engine's observer
    sink = _Sink()
    recorder.attach(sink)
    span = observer.task_created(_Task(), "gpu", None, None)
    observer.resolved(span)
    observer.queued(span)
    observer.submitted_all([span])
    observer.assigned(span, ["gpu:0", "cpu:1"])
    observer.started(span)
    observer.task_finished(span, names.RESULT_COMPLETED, None, False, ("task.000001",))
    assert [record[0] for record in sink.records][:2] == [r.SHAPE, r.CREATED_PACKED]
    records = [r.expand(record) for record in sink.records]  # packed ones as plain ones
    kinds = [record[0] for record in records]
    assert kinds == [
        *(r.SHAPE, r.CREATED, r.STEP, r.STEP, r.SUBMITTED_ALL, r.ASSIGNED, r.STARTED, r.FINISHED)
    ]
    shape = r.Shape._make(records[0])
    assert (shape.level, shape.name, shape.task_kind) == (names.LEVEL_TASK, "train", "function")
    assert (shape.backend, shape.workflow_name, shape.cpus, shape.gpus) == ("gpu", "training", 2, 1)
    created = r.Created._make(records[1])
    assert (created.uid, created.shape, created.workflow_id) == ("task.000003", shape.shape, "wf-1")
    assert (created.span_id, created.parent_id) == (span.span_id, span.span_parent)
    assert (created.t_ns, created.id_base) == (span.span_start, span.span_ids)
    assert created.id_base % 8 == 0 and created.parent_id
    steps = [r.Step._make(record) for record in records[2:4]]
    assert [s.offset for s in steps] == [r.ID_RESOLVED, r.ID_QUEUED]
    assert [s.t_ns for s in steps] == [span.span_resolved, span.span_queued]
    assert records[4] == (r.SUBMITTED_ALL, span.span_submitted, ("task.000003",))
    assigned = r.Assigned._make(records[5])
    assert assigned.fields == {"slots": ["gpu:0", "cpu:1"], "cpus": 2, "gpus": 1}
    assert r.Started._make(records[6]).t_ns == span.span_started
    # It had slots: the whole Finished record.
    done = r.Finished._make(records[7])
    assert (done.final_event, done.result, done.status) == (
        names.EVENT_TASK_COMPLETED,
        names.RESULT_COMPLETED,
        names.STATUS_OK,
    )
    assert done.depends_on == ("task.000001",) and done.slots == ("gpu:0", "cpu:1")
    assert (done.t_started, done.end_ns) == (span.span_started, span.span_end)
    # A second task of the same kind: no Shape again; with nothing to say
    # but its end, it ends with a Completed record.
    again = observer.task_created(_Task(), "gpu", None, None)
    observer.started(again)
    observer.task_finished(again, names.RESULT_COMPLETED, None, False, ())
    assert [record[0] for record in sink.records[8:]] == [
        *(r.CREATED_PACKED, r.STARTED, r.COMPLETED_PACKED)
    ]
    records = [r.expand(record) for record in sink.records]
    assert [record[0] for record in records[8:]] == [r.CREATED, r.STARTED, r.COMPLETED]
    assert r.Created._make(records[8]).shape == shape.shape
    completed = r.Completed._make(records[10])
    assert completed == (
        r.COMPLETED,
        "task.000003",
        again.span_end,
        (),
        again.span_resolved,
        again.span_queued,
        again.span_submitted,
        again.span_started,
    )
    # The renderer writes one line per record but the Shape; the last ends the task.
    renderer = LineRenderer("sess", "node", recorder.trace_hex)
    lines = "".join(renderer.render(record) for record in sink.records).splitlines()
    assert len(lines) == 10 and names.TL_ENDED in json.loads(lines[6])
    assert json.loads(lines[-1]) == {
        "section": "task",
        "uid": "task.000003",
        names.TL_ENDED: again.span_end,
        names.TL_RESULT: names.RESULT_COMPLETED,
        names.TL_STATUS: names.STATUS_OK,
    }
    assert json.loads(lines[7])[names.TL_NAME] == "train"  # the second created line


@pytest.mark.parametrize("parent", [None, 1, 2**64 - 1])
@pytest.mark.parametrize("workflow_id", [None, "", 'w"f\u00e9'])
def test_packed_records_expand_to_the_plain_ones(
    parent: int | None, workflow_id: str | None
) -> None:
    """Every packed record expands to the plain record the recorder sent
    before packing, field for field, at the edges of each field's range;
    any other record is left as it is."""
    from asyncflow.telemetry import _records as r

    t = 1_796_536_086_366_335_295  # a time in ns
    span_id, shape, base = 2**64 - 1, 2**32 - 1, 2**40
    created = r.CREATED_INTS.pack(base, t, shape, span_id, parent or 0)
    for packed, plain in ((r.CREATED_PACKED, r.CREATED), (r.CREATED_READY_PACKED, r.CREATED_READY)):
        expected = (plain, "task.1", base, t, shape, workflow_id, span_id, parent)
        assert expand((packed, "task.1", workflow_id, created)) == expected
    steps = (t + 1, 0, t + 3, t + 4)
    ended = r.ENDED_INTS.pack(t + 9, *steps)
    with_span = r.ENDED_SPAN_INTS.pack(t + 9, *steps, span_id, parent or 0, t, shape)
    for packed, plain in ((r.COMPLETED_PACKED, r.COMPLETED), (r.INSTANT_PACKED, r.INSTANT)):
        expected = (plain, "task.1", t + 9, ("a", "b"), *steps)
        assert expand((packed, "task.1", ("a", "b"), ended)) == expected
        expected = (plain, "task.1", t + 9, (), *steps, span_id, parent, t, shape, workflow_id)
        assert expand((packed, "task.1", (), workflow_id, with_span)) == expected
    # Ready as it was created (resolved and queued at its start) and started as it ended.
    ready = r.READY_ENDED_INTS.pack(t + 9, t + 4, t)
    expected = (r.INSTANT, "task.1", t + 9, ("a",), t, t, t + 4, t + 9)
    assert expand((r.INSTANT_READY_PACKED, "task.1", ("a",), ready)) == expected
    ready = r.READY_ENDED_SPAN_INTS.pack(t + 9, t + 4, t, span_id, parent or 0, shape)
    expected = (r.INSTANT, "task.1", t + 9, (), t, t, t + 4, t + 9)
    expected += (span_id, parent, t, shape, workflow_id)
    assert expand((r.INSTANT_READY_PACKED, "task.1", (), workflow_id, ready)) == expected
    for record in ((r.STEP, "task.1", t, r.ID_QUEUED), (r.SUBMITTED_ALL, t, ("task.1",))):
        assert expand(record) is record


def test_a_large_batch_is_submitted_in_small_records() -> None:
    """The tasks of one submit_tasks call share a submitted record, a few
    at a time: the telemetry process renders a frame of records at once,
    and a frame must hold no more lines for a batch of a million tasks."""
    from asyncflow.telemetry import _records as r
    from asyncflow.telemetry._recorder import Recorder

    recorder = Recorder("sess", "node", 10, None)
    sink = _Sink()
    recorder.attach(sink)
    spans = [recorder.task_created(_Task(), "gpu", None, None, True) for _ in range(10)]
    for number, span in enumerate(spans):
        span.uid = f"task.{number:06d}"
    del sink.records[:]
    recorder.submitted_all(spans)
    per = r.SUBMITTED_PER_RECORD
    assert [record[0] for record in sink.records] == [r.SUBMITTED_ALL] * -(-10 // per)
    assert all(len(record[2]) <= per for record in sink.records)
    lines = "".join(
        LineRenderer("sess", "node", recorder.trace_hex).render(x) for x in sink.records
    )
    assert [json.loads(line) for line in lines.splitlines()] == [
        {"section": "task", "uid": span.uid, names.SPAN_EVENT_SUBMITTED: span.span_submitted}
        for span in spans
    ]


@pytest.mark.parametrize("ran", [False, True])
@pytest.mark.parametrize("in_workflow", [False, True])
@pytest.mark.parametrize("mode", ["combined", "created ready"])
@pytest.mark.parametrize("task_spans", [True, False])
def test_completed_is_started_and_task_finished_in_one_call(
    ran: bool, in_workflow: bool, mode: str, task_spans: bool
) -> None:
    """The engine's common way (``ready`` or ``task_created(ready=True)``,
    ``submitted_all`` and ``completed``) records what the single hooks
    record: the same records, events, histograms, counts and spans, the
    first task of a kind and the ones after it."""
    from asyncflow.telemetry._recorder import Recorder
    from asyncflow.telemetry._spans import LiveSpan
    from asyncflow.telemetry._task_span import live_span

    def run(combined: bool) -> tuple[Recorder, _Sink, list[tuple[str, int]]]:
        recorder = Recorder("sess", "node", 10, None)
        sink = _Sink()
        recorder.attach(sink)
        recorder.task_spans = task_spans  # with OTLP on: the span's fields too
        events: list[tuple[str, int]] = []
        # A subscriber's events, up to the end (with one, the end takes the
        # single hooks' way whatever the engine calls).
        recorder.subscribers_active = True
        recorder.deliver = lambda name, rec, t, extra, event_id: events.append(
            (name, event_id - rec.id_base)
        )
        workflow = recorder.workflow_started("wf-1", "training", None) if in_workflow else None
        spans = []
        for _ in range(3):
            ready = combined and mode == "created ready"
            scope = "wf-1" if in_workflow else None
            span = recorder.task_created(_Task(), "gpu", None, scope, ready)
            if combined and not ready:
                recorder.ready(span)
            elif not combined:
                recorder.resolved(span)
                recorder.queued(span)
            spans.append(span)
        if combined:
            recorder.submitted_all(spans)
        for span in spans:
            if not combined:
                recorder.submitted_all([span])  # one by one
        recorder.subscribers_active = False
        for span in spans:
            if ran:
                recorder.started(span)
            if combined:
                recorder.completed(span, ran, ("task.000001",))
            else:
                if not ran:
                    recorder.started(span)
                recorder.task_finished(span, names.RESULT_COMPLETED, None, False, ("task.000001",))
        if workflow is not None:
            recorder.workflow_ended(workflow, None)
        return recorder, sink, events

    (one, one_sink, one_events), (two, two_sink, two_events) = run(False), run(True)
    assert sorted(two_events) == sorted(one_events)
    assert Counter(offset for _, offset in one_events) == {0: 3, 1: 3, 2: 3, 3: 3}

    def kinds(sink: _Sink) -> Counter[str]:
        # A Ready record is a resolved and a queued step; an Instant one a
        # start and a Completed; a Completed with more fields also a TaskSpan;
        # a CreatedReady one a Created and two steps.
        # Packed records count as their plain kinds; the tasks submitted at
        # once as a submitted step each.
        out: Counter[str] = Counter()
        for record in map(expand, sink.records):
            if record[0] == "B":
                out.update(["E"] * len(record[2]))
                continue
            out.update(
                {"R": ["E", "E"], "I": ["S", "D"], "Q": ["C", "E", "E"]}.get(record[0], [record[0]])
            )
            if record[0] in ("D", "I") and len(record) > 8:
                out.update(["O"])
        return out

    assert kinds(two_sink) == kinds(one_sink)
    assert ("q" in {r[0] for r in two_sink.records}) == (mode == "created ready")
    sent = {r[0] for r in two_sink.records}
    assert bool({"i", "j"} & sent) == (not ran)
    # Ready as it was created and ran for no time: the times that says are left out.
    assert ("j" in sent) == (not ran and mode == "created ready")
    renderer = LineRenderer("sess", "node", one.trace_hex)
    lines = [
        sorted(json.loads(line))
        for sink in (one_sink, two_sink)
        for line in "".join(renderer.render(r) for r in sink.records).splitlines()
    ]
    assert sorted(lines[: len(lines) // 2]) == sorted(lines[len(lines) // 2 :])  # same lines
    for attribute in ("task_duration", "queue_duration", "run_duration"):
        points = [
            {k: v for k, v in p.items() if k not in ("sum", "bucket_counts")}
            for p in getattr(two, attribute).points()
        ]
        assert points == [
            {k: v for k, v in p.items() if k not in ("sum", "bucket_counts")}
            for p in getattr(one, attribute).points()
        ], attribute
        assert [p["count"] for p in getattr(two, attribute).points()] == [3]
    assert two.run_totals()[0] == one.run_totals()[0] == 3
    assert two.active_tasks == one.active_tasks == {("pending", "gpu"): 0, ("running", "gpu"): 0}
    assert two.spans_finished == one.spans_finished
    assert [s["status_code"] for s in two.traces()] == [s["status_code"] for s in one.traces()]
    for task in two.ring:
        span = task if isinstance(task, LiveSpan) else live_span(task)
        if span.level == names.LEVEL_TASK:
            assert span.t_resolved == span.t_queued > 0 and span.t_started >= span.t_submitted
            assert span.end_ns >= span.t_started and span.result == names.RESULT_COMPLETED
            assert span.depends_on == ("task.000001",)
            if mode == "created ready":  # resolved and queued as it was created
                assert span.t_resolved == span.start_ns


@pytest.mark.parametrize("slow", [False, True])
def test_a_task_that_never_reported_running_leaves_the_live_counts_at_zero(slow: bool) -> None:
    """``completed(span, ran=True)`` of a task that never started (a cache
    hit, a later attempt on a backend that reports no running): it was
    pending, it is no more. The common way took it off the running count,
    which went negative; the single hooks' way did it right."""
    from asyncflow.telemetry._recorder import Recorder

    recorder = Recorder("sess", "node", 10, None)
    recorder.attach(_Sink())
    if slow:  # a subscriber: the single hooks' way
        recorder.subscribers_active = True
        recorder.deliver = lambda *args: None
    # One of the kind ran (the common way is open to the kind from then on)...
    span = recorder.task_created(_Task(), "gpu", None, None, True)
    recorder.submitted_all([span])
    recorder.started(span)
    recorder.completed(span, True, ())
    for _ in range(3):  # ... then three end that never reported running
        span = recorder.task_created(_Task(), "gpu", None, None, True)
        recorder.submitted_all([span])
        recorder.completed(span, True, ())
    assert recorder.active_tasks == {
        (names.STATE_PENDING, "gpu"): 0,
        (names.STATE_RUNNING, "gpu"): 0,
    }
