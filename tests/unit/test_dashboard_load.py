"""The layout 2 reader's short ways give what the general ways give.

Reading a checkpoint file into records takes three short ways on the bulk
of a large file: a task line with one step's time sets that field alone
(``dict.update`` did), a task that went through every step becomes its
record by one look-up of every field (``_making._any_task_record`` handles
any task), and the finished tasks of a read are handed to the builder at
once (``RunBuilder.add_record`` takes one). Each is held here to the way it
stands in for, on the layout 2 twin of the fixture and on lines made to
fall off the short way (fields in another order, a line after the end,
odd types, a uid seen twice, live tasks). A large read hands its records
to the collector's oldest generation (``_base.gc_paused``).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncflow.dashboard import _base, open_source
from asyncflow.dashboard._checkpoint import CheckpointParser
from asyncflow.dashboard._making import _any_task_record, _strings
from asyncflow.dashboard.model import RunBuilder, SpanRecord, task_record
from asyncflow.telemetry import names as n

from .test_checkpoint_layouts import comparable, layout2_lines

T0 = 1_796_536_086_366_335_295
HEADER = '{"section":"header","layout":2,"session_id":"s","node_id":"vm","trace_id":"t"}'


def created(uid: str, t: int = T0, **extra: Any) -> dict[str, Any]:
    return {
        n.SECTION: n.SECTION_TASK,
        n.TL_UID: uid,
        n.TL_CREATED: t,
        n.TL_EVENT_ID: 16,
        n.TL_SPAN: "537ac47f70881b4b",
        n.TL_PARENT: "6c18966144056c7e",
        n.TL_BACKEND: "default",
        n.TL_WORKFLOW_ID: "wf-07154d27",
        n.TL_LEVEL: n.LEVEL_TASK,
        n.TL_NAME: "step",
        n.TL_WORKFLOW_NAME: "simulate",
        n.TL_TYPE: n.TYPE_FUNCTION,
        n.TL_CPUS: 1,
        n.TL_GPUS: 1,
        **extra,
    }


def step(uid: str, key: str, t: int) -> dict[str, Any]:
    return {n.SECTION: n.SECTION_TASK, n.TL_UID: uid, key: t}


def ended(uid: str, t: int, **extra: Any) -> dict[str, Any]:
    return {
        n.SECTION: n.SECTION_TASK,
        n.TL_UID: uid,
        n.TL_ENDED: t,
        n.TL_RESULT: n.RESULT_COMPLETED,
        n.TL_STATUS: n.STATUS_OK,
        **extra,
    }


def whole_task(task_uid: str, **extra: Any) -> dict[str, Any]:
    """A task's lines merged: every step."""
    uid = task_uid
    task = created(uid)
    for i, key in enumerate(n.TL_STEPS):
        task[key] = T0 + 1000 * (i + 1)
    task.update(ended(uid, T0 + 9000))
    task.update(extra)
    return task


# ---------------------------------------------------------------- task_record


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {n.TL_DEPENDS_ON: ["task.000001", "task.000002"]},
        {n.TL_DEPENDS_ON: ["task.000001", 7, None]},  # not all strings
        {n.TL_SLOTS: ["gpu:0", "cpu:3"], n.TL_ASSIGNED: T0 + 3500},
        {n.TL_ERROR_TYPE: "ValueError", n.TL_DESCRIPTION: "bad", n.TL_RESULT: n.RESULT_FAILED},
        {n.TL_RESULT: n.RESULT_FAILED, n.TL_EXCEPTION: {n.EXCEPTION_TYPE: "KeyError"}},
        {n.TL_RESULT: n.RESULT_CANCELED, n.TL_STATUS: n.STATUS_ERROR},
        {n.TL_ATTRIBUTES: {n.TASK_CACHE: n.CACHE_HIT, n.CACHE_SOURCE_SESSION: "s"}},
        {n.TL_ATTRIBUTES: {"user.key": [1, 2]}},
        {n.TL_ATTEMPT_ENDED: T0 + 5000, "attempts": [(T0 + 5000, {n.ATTEMPT_NUMBER: 1})]},
        {n.TL_TYPE: n.TYPE_EXECUTABLE, n.TL_CPUS: 4, n.TL_GPUS: 0},
        {n.TL_TYPE: "unknown kind"},
        {n.TL_CPUS: True, n.TL_GPUS: "2"},  # odd counts, as the general way reads them
        {n.TL_SPAN: 12, n.TL_PARENT: None},
        {n.TL_ERROR_TYPE: 3, n.TL_DESCRIPTION: None},
    ],
)
def test_a_task_of_every_step_is_the_record_the_general_way_makes(extra: dict[str, Any]) -> None:
    task = whole_task("task.000009", **extra)
    assert task_record(task) == _any_task_record(task)


@pytest.mark.parametrize(
    "change",
    [
        {n.TL_LEVEL: n.LEVEL_BLOCK},
        {n.TL_RESULT: "exploded"},
        {n.TL_NAME: 5},
        {n.TL_WORKFLOW_ID: None},
        {n.TL_BACKEND: None},
        {n.TL_UID: 42},
    ],
)
def test_a_task_off_the_short_way_is_read_the_general_way(change: dict[str, Any]) -> None:
    task = whole_task("task.000009", **change)
    assert task_record(task) == _any_task_record(task)
    for key in (*n.TL_STEPS, n.TL_CREATED, n.TL_SPAN):
        partial = dict(task)
        del partial[key]
        assert task_record(partial) == _any_task_record(partial), key


@pytest.mark.parametrize(
    "change",
    [{n.TL_ENDED: "late"}, {n.SPAN_EVENT_RESOLVED: None}, {n.SPAN_EVENT_STARTED: [1]}],
)
def test_a_time_of_the_wrong_type_still_raises(change: dict[str, Any]) -> None:
    """As before the short way: the line that ends such a task is counted as bad."""
    task = whole_task("task.000009", **change)
    with pytest.raises(TypeError):
        task_record(task)


def test_a_task_record_is_a_span_record_of_every_field() -> None:
    record = task_record(whole_task("task.000009", **{n.TL_DEPENDS_ON: ["task.000001"]}))
    assert type(record) is SpanRecord and len(record) == len(SpanRecord._fields)
    assert record.uid == "task.000009" and record.depends_on == ("task.000001",)
    assert record.created == T0 / 1e9 and record.finished == (T0 + 9000) / 1e9
    assert (record.kind, record.cpus, record.gpus, record.state) == ("function", 1, 1, "completed")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a", "b"], ("a", "b")),
        (["a", 1, None], ("a", "1", "None")),
        (("a", 2), ("a", "2")),
        ("a", ("a",)),
        ([], ()),
        (None, ()),
        (5, ()),
    ],
)
def test_strings_of_any_value(value: Any, expected: tuple[str, ...]) -> None:
    assert _strings(value) == expected


# ---------------------------------------------------------------- the line loop


class ReferenceParser(CheckpointParser):
    """The layout 2 loop as it was: ``dict.update`` per line, a record handed over per task.

    A task line ``n.record_problem`` objects to is skipped, as every reader does.
    """

    def _feed_layout2(self, lines: list[str]) -> None:
        live = self._tasks
        for line in lines:
            try:
                fields = json.loads(line)
                uid = fields[n.TL_UID] if fields[n.SECTION] == n.SECTION_TASK else None
            except ValueError:
                fields = object() if line.strip() else None
                uid = None
            except (TypeError, KeyError, IndexError):
                uid = None
            if uid is None:
                if fields is not None:
                    self._reference_other(fields, line)
                continue
            if type(uid) is not str or n.record_problem(fields) is not None:
                self._bad(line)
                continue
            self.records += 1
            task = live.get(uid)
            if task is None:
                task = live[uid] = fields
            else:
                task.update(fields)
            if n.TL_ENDED in fields:
                del live[uid]
                try:
                    self.builder.add_record(task_record(task))
                except (TypeError, ValueError, AttributeError):
                    self._bad(line)
            elif n.TL_ATTEMPT_ENDED in fields:
                attempts = task.setdefault("attempts", [])
                attempts.append((fields[n.TL_ATTEMPT_ENDED], fields.get(n.TL_ATTEMPT) or {}))

    def _reference_other(self, record: Any, line: str) -> None:
        if not isinstance(record, dict) or n.record_problem(record) is not None:
            self._bad(line)
            return
        self.records += 1
        section = record[n.SECTION]
        if section == n.SECTION_SPAN:
            self.builder.add_span(record)
        elif section == n.SECTION_METRIC:
            self.builder.add_metric_snapshot(record)
        elif section == n.SECTION_EVENT:
            self._other_event(record)


def read(parser_type: type[CheckpointParser], feeds: list[list[str]]) -> dict[str, Any]:
    """What a parser of ``parser_type`` makes of the lines, fed and polled as given."""
    builder = RunBuilder("test")
    parser = parser_type(builder)
    seen = []
    for lines in feeds:
        parser.feed(lines)
        parser.flush()
        seen.append(comparable(builder.snapshot()))
    return {
        "runs": seen,
        "version": builder.version,
        "records": parser.records,
        "bad": (parser.bad_lines, parser.first_bad),
    }


def as_lines(*records: dict[str, Any] | str) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r, separators=(",", ":")) for r in records]


ODD_LINES = as_lines(
    HEADER,
    created("task.000001"),
    step("task.000001", n.SPAN_EVENT_RESOLVED, T0 + 10),
    # The time first and the uid last: a three-key line whose last key is no step.
    {n.SPAN_EVENT_QUEUED: T0 + 20, n.SECTION: n.SECTION_TASK, n.TL_UID: "task.000001"},
    {n.TL_UID: "task.000001", n.SPAN_EVENT_SUBMITTED: T0 + 30, n.SECTION: n.SECTION_TASK},
    step("task.000001", n.SPAN_EVENT_STARTED, T0 + 40),
    step("task.000001", n.SPAN_EVENT_STARTED, T0 + 45),  # a step written twice: the last counts
    # An end with nothing else: three keys, the last is the end.
    step("task.000001", n.TL_ENDED, T0 + 50),
    step("task.000001", n.SPAN_EVENT_RESOLVED, T0 + 60),  # a line after the end
    created("task.000002"),
    step("task.000002", n.TL_ATTEMPT_ENDED, T0 + 70),  # an attempt with no attributes
    step("task.000002", n.SPAN_EVENT_STARTED, T0 + 80),
    ended("task.000002", T0 + 90),
    created("task.000003"),
    step("task.000003", n.SPAN_EVENT_RESOLVED, "soon"),  # a time of the wrong type
    ended("task.000003", T0 + 100),
    step("task.000004", n.SPAN_EVENT_STARTED, T0 + 110),  # steps of a task never created
    created("task.000005"),
    step("task.000005", n.SPAN_EVENT_STARTED, T0 + 115),  # running at the end of the read
    {n.SECTION: n.SECTION_TASK, n.TL_UID: ["task.000006"], n.SPAN_EVENT_STARTED: 1},
    {n.SECTION: n.SECTION_TASK, n.TL_UID: 7, n.SPAN_EVENT_STARTED: 1},
    {n.SECTION: n.SECTION_TASK, n.TL_UID: "task.000008", "extra": True},
    created("task.000009"),
    ended("task.000009", T0 + 120),
    created("task.000009", T0 + 130),  # the same uid again: recorded twice
    ended("task.000009", T0 + 140),
    "",
    "not json",
)


def test_odd_task_lines_read_as_the_update_loop_read_them() -> None:
    assert read(CheckpointParser, [ODD_LINES]) == read(ReferenceParser, [ODD_LINES])


@pytest.mark.parametrize("seed", range(6))
def test_the_fixture_read_in_any_pieces_reads_as_the_update_loop_read_it(seed: int) -> None:
    """The layout 2 twin of the fixture and the odd lines, fed in random pieces."""
    lines = [line.rstrip("\n") for line in layout2_lines()] + ODD_LINES[1:]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(lines)), 8))
    feeds = [lines[a:b] for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]
    assert read(CheckpointParser, feeds) == read(ReferenceParser, feeds)


WRONGLY_SHAPED = [
    {n.SPAN_EVENT_RESOLVED: "soon"},
    {n.SPAN_EVENT_STARTED: 1.5},
    {n.SPAN_EVENT_QUEUED: True},
    {n.TL_ASSIGNED: 1.5, n.TL_SLOTS: ["cpu:9"]},
    {n.TL_CREATED: "now", n.TL_NAME: "renamed"},
    {n.TL_ENDED: 1.5, n.TL_RESULT: n.RESULT_FAILED},
    {n.TL_ENDED: T0, n.TL_RESULT: n.RESULT_FAILED, n.TL_ATTRIBUTES: ["not", "an", "object"]},
    {n.TL_ATTEMPT_ENDED: T0, n.TL_ATTEMPT: "first"},
    {n.TL_UID: ""},
]


@pytest.mark.parametrize("before", [n.TL_CREATED, n.TL_ENDED])
@pytest.mark.parametrize("fields", WRONGLY_SHAPED)
def test_a_wrongly_shaped_task_line_is_skipped_alone(fields: dict[str, Any], before: str) -> None:
    """TELEMETRY.md section 5: the line is skipped and counted; its task keeps its other lines.

    One line inserted into a real run's file, before one of a task's lines:
    the file reads as it does without that line, and the line is counted.
    """
    lines = [line.rstrip("\n") for line in layout2_lines()]
    at = next(
        i
        for i, line in enumerate(lines)
        if line.startswith('{"section":"task","uid":"task.000001"') and f'"{before}":' in line
    )
    bad = as_lines({n.SECTION: n.SECTION_TASK, n.TL_UID: "task.000001", **fields})[0]
    good = read(CheckpointParser, [lines])
    assert good["bad"] == (0, "")
    with_bad = read(CheckpointParser, [[*lines[:at], bad, *lines[at:]]])
    assert with_bad["runs"] == good["runs"]
    assert with_bad["bad"] == (1, bad[:60] + ("..." if len(bad) > 60 else ""))
    assert with_bad["records"] == good["records"]


# ---------------------------------------------------------------- add_records


def record(uid: str, level: str = n.LEVEL_TASK, **fields: Any) -> SpanRecord:
    fields = {"created": 1.0, "finished": 2.0, **fields}
    return SpanRecord(uid=uid, level=level, **fields)


def built(records: list[SpanRecord], *, at_once: bool, live: bool) -> dict[str, Any]:
    builder = RunBuilder("test")
    if live:  # tasks seen running before their records arrive
        builder.task_created("t2", 0.5, "local", "wf", "ab", block=False)
        builder.task_assigned("t2", 0.6, ["gpu:0"])
        builder.task_created("b1", 0.5, "", "wf", "cd", block=True)
    if at_once:
        builder.add_records(records)
    else:
        for rec in records:
            builder.add_record(rec)
    run = builder.snapshot()
    return {**dataclasses.asdict(run), "finished": sorted(builder._finished)}


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize(
    "records",
    [
        [],
        [record("t1"), record("t2", created=0.25), record("t3", finished=9.0)],
        [record("t1", slots=("cpu:0",)), record("t1")],  # recorded twice: keeps the slots
        [record("t1"), record("b1", n.LEVEL_BLOCK), record("wf", n.LEVEL_WORKFLOW)],
        [record("t2"), record("t3", finished=None), record("t4")],  # one still running
        [record("t2"), record("t5", created=-1.0, finished=99.0)],
    ],
)
def test_records_at_once_are_the_records_one_by_one(live: bool, records: list[SpanRecord]) -> None:
    assert built(records, at_once=True, live=live) == built(records, at_once=False, live=live)


# ---------------------------------------------------------------- the collector after a read


def many_tasks(path: Path, count: int) -> None:
    lines = [HEADER]
    for i in range(count):
        uid = f"task.{i:06d}"
        lines += as_lines(
            created(uid),
            *(step(uid, key, T0 + k) for k, key in enumerate(n.TL_STEPS)),
            ended(uid, T0 + 10),
        )
    path.write_text("\n".join(lines) + "\n")


def in_oldest_generation(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector on, nothing frozen (and so again afterwards)."""
    was_enabled = gc.isenabled()
    gc.enable()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if not was_enabled:
        gc.disable()


def test_a_large_read_hands_its_records_to_the_oldest_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector: None
) -> None:
    monkeypatch.setattr(_base, "PROMOTE_AT", 1_000)
    many_tasks(tmp_path / "run.telemetry.jsonl", 2_000)
    run = open_source(tmp_path / "run.telemetry.jsonl").poll()
    # A finished file's records are made when first asked for: all at once.
    records = list(run.tasks)
    assert len(records) == 2_000 and gc.isenabled()
    assert gc.is_tracked(records[-1])  # a named tuple stays tracked...
    assert in_oldest_generation(records[-1])  # ...but young passes no longer walk it
    assert gc.get_freeze_count() == 0


def test_a_small_read_or_frozen_objects_are_left_to_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector: None
) -> None:
    many_tasks(tmp_path / "small.telemetry.jsonl", 200)
    gc.collect()
    run = open_source(tmp_path / "small.telemetry.jsonl").poll()
    assert not in_oldest_generation(list(run.tasks)[-1])  # under PROMOTE_AT young objects
    monkeypatch.setattr(_base, "PROMOTE_AT", 1_000)
    many_tasks(tmp_path / "large.telemetry.jsonl", 2_000)
    kept: list[object] = []
    gc.freeze()  # someone's frozen objects: a read must not thaw them
    run = open_source(tmp_path / "large.telemetry.jsonl").poll()
    assert not in_oldest_generation(list(run.tasks)[-1])
    assert not any(o is kept for g in range(3) for o in gc.get_objects(generation=g))
