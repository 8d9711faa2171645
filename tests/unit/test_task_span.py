"""A task's span kept on the task itself (telemetry/_task_span.py): its
fields after each hook, the rare parts made only when needed, the span
readers see, and the engine's futures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asyncflow.telemetry import names
from asyncflow.telemetry._recorder import Recorder
from asyncflow.telemetry._spans import LiveSpan, span_dict
from asyncflow.telemetry._task_span import TaskSpan, live_span, span_status

SPAN_FIELDS = [f for f in TaskSpan.__annotations__ if f.startswith("span_")]


class _Task:
    """A task as the engine makes it: fixed fields, room for its span's."""

    __slots__ = (
        "kind",
        "name",
        "task_description",
        "uid",
        "workflow_id",
        "workflow_name",
        *SPAN_FIELDS,
    )

    def __init__(self, uid: str = "task.000003") -> None:
        self.uid = uid
        self.name = "train"
        self.kind = names.TYPE_FUNCTION
        self.workflow_id = "wf-1"
        self.workflow_name = "training"
        self.task_description = {"cpus": 2, "gpus": 1}


class _Sink:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def write(self, record: tuple[Any, ...]) -> None:
        self.records.append(record)


def _recorder() -> Recorder:
    recorder = Recorder("sess", "node", 10, None)
    recorder.attach(_Sink())
    return recorder


def test_the_span_fields_are_every_slot_the_engine_gives_a_task() -> None:
    from asyncflow.engine._future import TaskFuture

    assert SPAN_FIELDS and set(SPAN_FIELDS) <= set(TaskFuture.__slots__)


@pytest.mark.parametrize("ready", [False, True])
@pytest.mark.parametrize("in_workflow", [False, True])
def test_a_task_span_is_the_task_with_its_fields_after_each_hook(
    ready: bool, in_workflow: bool
) -> None:
    recorder = _recorder()
    workflow = recorder.workflow_started("wf-1", "training", None) if in_workflow else None
    task = _Task()
    span = recorder.task_created(task, "gpu", None, "wf-1" if in_workflow else None, ready)
    assert span is task  # no object of its own
    start = task.span_start
    assert task.span_id and start and task.span_ids and task.span_ids % 8 == 0
    parent = workflow.span_id if workflow is not None else recorder.session.span_id
    assert task.span_parent == parent
    assert (task.span_resolved, task.span_queued) == ((start, start) if ready else (0, 0))
    assert (task.span_submitted, task.span_started, task.span_end) == (0, 0, 0)
    assert task.span_shape.span_name == "task train" and task.span_shape.backend == "gpu"
    assert task.span_owner is workflow and task.span_depends_on == ()
    assert task.span_more is None
    assert span_status(task) == ("", names.STATUS_UNSET, "")
    if not ready:
        recorder.ready(task)
        assert task.span_resolved == task.span_queued >= start
    recorder.submitted_all([task])
    assert task.span_submitted >= task.span_queued
    recorder.started(task)
    assert task.span_started >= task.span_submitted
    recorder.completed(task, True, ("task.000001",))
    assert task.span_end >= task.span_started and task.span_depends_on == ("task.000001",)
    assert task.span_more is None  # completed plainly: nothing more made
    assert span_status(task) == (names.RESULT_COMPLETED, names.STATUS_OK, "")
    assert task.span_owner is None  # the workflow is let go of
    assert recorder.ring[-1] is task


def test_live_span_is_what_a_span_object_of_the_task_would_hold() -> None:
    """Every field of the ``LiveSpan`` a reader gets holds the value the
    span object the recorder made per task held (its own, or the default)."""
    recorder = _recorder()
    workflow = recorder.workflow_started("wf-1", "training", None)
    task = _Task()
    recorder.task_created(task, "gpu", None, "wf-1", True)
    live = live_span(task)
    made = LiveSpan(1, 2, names.LEVEL_TASK, "task train")
    own = {
        "span_id": task.span_id,
        "parent": workflow.span_id,
        "level": names.LEVEL_TASK,
        "name": "task train",
        "start_ns": task.span_start,
        "t_resolved": task.span_start,
        "t_queued": task.span_start,
        "id_base": task.span_ids,
        "uid": "task.000003",
        "workflow_id": "wf-1",
        "backend": "gpu",
        "owner": workflow,
        "fut": task,
        "shape": task.span_shape,
    }
    for slot in LiveSpan.__slots__:
        expected = own[slot] if slot in own else getattr(made, slot)
        assert getattr(live, slot) == expected, slot


def test_the_rare_parts_are_made_only_for_a_task_that_has_them() -> None:
    recorder = _recorder()
    plain, slotted, retried, cached, failed, cancelled = (_Task(f"task.{i}") for i in range(6))
    for task in (plain, slotted, retried, cached, failed, cancelled):
        recorder.task_created(task, "gpu", None, None, True)
        recorder.submitted_all([task])
    recorder.assigned(slotted, ["gpu:0"])
    recorder.started(slotted)
    recorder.attempt_ended(retried, 1, 0, RuntimeError("flaky"), True)
    recorder.cached(cached, names.CACHE_MISS, None, None)
    # Slots are the task's own field: every task of a slot-aware backend has
    # them, so they make no SpanMore.
    assert [t.span_more is None for t in (plain, slotted, failed, cancelled)] == [True] * 4
    assert slotted.span_slots == ("gpu:0",) and plain.span_slots == ()
    assert retried.span_more is not None and retried.span_more.attempt_events
    assert cached.span_more is not None and cached.span_more.extra == {
        names.TASK_CACHE: names.CACHE_MISS
    }
    for task in (plain, slotted, retried, cached):
        recorder.completed(task, task is slotted, ())
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        recorder.task_finished(failed, names.RESULT_FAILED, exc, False, ())
    recorder.task_finished(cancelled, names.RESULT_CANCELED, None, True, ())
    assert plain.span_more is None
    for task in (slotted, retried, cached):
        assert span_status(task) == (names.RESULT_COMPLETED, names.STATUS_OK, "")
    more = failed.span_more
    assert more is not None and more.error_type == "ValueError" and more.exception is not None
    assert span_status(failed)[:2] == (names.RESULT_FAILED, names.STATUS_ERROR)
    assert span_status(cancelled) == (
        names.RESULT_CANCELED,
        names.STATUS_ERROR,
        "canceled: engine shut down",
    )
    spans = {s["attributes"][names.TASK_UID]: s for s in recorder.traces()}
    assert spans["task.1"]["attributes"][names.TASK_SLOTS] == ["gpu:0"]
    assert spans["task.2"]["attributes"][names.TASK_ATTEMPTS] == 1
    assert spans["task.4"]["attributes"][names.ERROR_TYPE] == "ValueError"
    assert [e["name"] for e in spans["task.4"]["events"]][-1] == names.SPAN_EVENT_EXCEPTION
    assert spans["task.0"]["status_code"] == names.STATUS_OK


def test_a_reader_gets_the_span_as_the_task_says_it_at_that_moment() -> None:
    """Subscribers get each event as it happens with the span as it is then;
    span processors a span dict of the finished task."""
    seen: list[tuple[str, int, int]] = []
    ended: list[dict[str, Any]] = []
    recorder = Recorder("sess", "node", 10, ended.append)
    recorder.attach(_Sink())
    recorder.subscribers_active = True
    recorder.deliver = lambda name, rec, t, extra, event_id: seen.append(
        (name, rec.t_submitted, rec.t_started)
    )
    task = _Task()
    recorder.task_created(task, "gpu", None, None, True)
    recorder.submitted_all([task])
    recorder.completed(task, False, ())
    assert [name for name, _, _ in seen] == [
        names.EVENT_TASK_CREATED,
        names.EVENT_TASK_RESOLVED,
        names.EVENT_TASK_QUEUED,
        names.EVENT_TASK_SUBMITTED,
        names.EVENT_TASK_STARTED,
        names.EVENT_TASK_COMPLETED,
    ]
    assert seen[0][1:] == (0, 0) and seen[3][1:] == (task.span_submitted, 0)
    assert seen[-1][1:] == (task.span_submitted, task.span_started)
    (span,) = ended
    assert span == span_dict(live_span(task), recorder.trace_hex)
    assert span["attributes"][names.TASK_RESULT] == names.RESULT_COMPLETED


async def test_the_engine_keeps_a_task_span_on_its_future() -> None:
    """With telemetry on the recorder's hooks get the future itself, which
    lets go of itself and its workflow when it ends; with it off no span
    field is ever set."""
    from asyncflow import WorkflowEngine
    from asyncflow.backends import NoopExecutionBackend

    engine = await WorkflowEngine.create(backend=NoopExecutionBackend())
    try:

        @engine.function_task
        async def step(*args: Any) -> None:
            return None

        before = step()
        await before
        assert not any(hasattr(before, f) for f in SPAN_FIELDS)
        await engine.start_telemetry(span_buffer=4)
        async with engine.workflow_scope(name="wf"):
            first = step()
            second = step(first)
            assert first._tel is first and first.span_end == 0
            await asyncio.gather(first, second)
        futures = [step() for _ in range(5)]
        await asyncio.gather(*futures)
        for fut in (first, second, *futures):
            assert fut._tel is None and fut.span_owner is None and fut.span_more is None
            assert fut.span_end >= fut.span_started > 0
        assert second.span_depends_on == (first.uid,)
        assert second.span_parent == first.span_parent != engine.telemetry._recorder.session.span_id
        ring = list(engine.telemetry._recorder.ring)
        assert ring == futures[1:]  # the futures themselves, the last 4
        uids = [s["attributes"][names.TASK_UID] for s in engine.telemetry.read_traces()]
        assert uids == [f.uid for f in futures[1:]]
    finally:
        await engine.shutdown()
