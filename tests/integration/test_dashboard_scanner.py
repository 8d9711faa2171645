"""A finished checkpoint file read by the compiled scanner is the run the Python reader reads.

The run is as varied as a campaign gets: CPU and GPU slots, chains in
workflow instances, blocks, a failure and its cascade, a retried task, a
cache hit, a failed executable, a cancelled task, tasks outside any
workflow, and names with quotes, markup, backslashes and non-ASCII text.
Each file is read twice, by the scanner and with it switched off, and the
runs, their campaign timelines' columns and the figures must be the same.
Files the scanner must not take (a killed run, lines the writer never
writes) are read the Python way, with the same result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io as pio
import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.dashboard import _choices as ch
from asyncflow.dashboard import _finished, _table, figures, open_source, paths, sources
from asyncflow.dashboard import compute as c
from asyncflow.dashboard._columns import timeline_of
from asyncflow.dashboard.model import Run

pytestmark = pytest.mark.skipif(
    _finished.SCANNER is None and os.environ.get("CI") != "true",
    reason="the compiled scanner is not built here (no C compiler at install)",
)

NAMES = ("simulate", 'ana"lyze <i>x</i>', "tr\u00e4nen \u2713 \\ path")


async def record_run(tmp_path: Path) -> Path:
    backend = await LocalExecutionBackend(cpus=2, gpus=2)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:
        tel = await engine.start_telemetry(
            checkpoint_path=tmp_path / "run", checkpoint_interval=0.05
        )
        tries = {"n": 0}

        @engine.function_task
        async def step(*_: Any) -> int:
            return 1

        @engine.function_task
        async def broken(*_: Any) -> int:
            raise ValueError('a "quoted" <b>failure</b>\nsecond line \\ and\ta tab')

        @engine.function_task(retries=2)
        async def flaky() -> int:
            tries["n"] += 1
            if tries["n"] < 2:
                raise RuntimeError("first try fails")
            return tries["n"]

        @engine.function_task(cache=True)
        async def stored(x: int) -> int:
            return x

        @engine.executable_task
        async def shell() -> str:
            return f"{sys.executable} -c \"import sys; sys.stderr.write('boom'); sys.exit(3)\""

        @engine.function_task
        async def slow() -> None:
            await asyncio.sleep(0.5)

        @engine.block
        async def stage(x: Any) -> Any:
            return await step(step(x))

        pending: list[Any] = []
        for i in range(12):
            async with engine.workflow_scope(name=NAMES[i % 3]):
                previous = step(task_description={"gpus": 1} if i % 2 else {})
                for _ in range(4):
                    previous = step(previous)
                pending.append(previous)
                if i % 6 == 1:
                    pending.append(step(broken(previous)))  # a failure and its cascade
                if i % 6 == 3:
                    pending.append(stage(previous))
        pending += [flaky(), stored(1), step(), stage(step()), shell()]
        await asyncio.gather(*pending, return_exceptions=True)
        pending = [stored(1)]  # a hit of the first one's result
        waiting = step(slow())  # cancelled while it waits for its dependency
        assert waiting.cancel()
        await asyncio.gather(*pending, waiting, return_exceptions=True)
    assert tel.checkpoint_file is not None
    return Path(tel.checkpoint_file)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return asyncio.run(record_run(tmp_path_factory.mktemp("scanner")))


def read(path: Path, monkeypatch: pytest.MonkeyPatch, scanner: bool) -> tuple[Run, bool]:
    """The run of ``path``, read with or without the scanner, and whether it scanned."""
    with monkeypatch.context() as m:
        if not scanner:
            m.setattr(_finished, "SCANNER", None)
        source = open_source(path)
        run = source.poll()
        assert isinstance(source, sources.CheckpointSource)
        scanned = next(iter(source._tails.values())).scanned
    return run, scanned


def comparable(run: Run) -> dict[str, Any]:
    fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(run)}
    fields["tasks"] = list(run.tasks)
    del fields["version"]
    return fields


def assert_same_columns(a: Run, b: Run) -> None:
    ta, tb = timeline_of(a), timeline_of(b)
    assert list(ta.uids) == list(tb.uids)
    assert (ta.keys, ta.key_types) == (tb.keys, tb.key_types)
    for name in ("key_of", "created", "resolved", "started", "finished", "status", "cpus", "gpus"):
        np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name), err_msg=name)
    assert (ta.slots, ta.held) == (tb.slots, tb.held)
    for x, y in zip(ta.edges, tb.edges, strict=True):
        np.testing.assert_array_equal(x, y)
    assert [ta.record(i) for i in range(len(ta))] == [tb.record(i) for i in range(len(tb))]


def assert_same_read(path: Path, monkeypatch: pytest.MonkeyPatch, scans: bool) -> Run:
    fast, scanned = read(path, monkeypatch, scanner=True)
    slow, parsed = read(path, monkeypatch, scanner=False)
    assert (scanned, parsed) == (scans, False)
    assert comparable(fast) == comparable(slow)
    assert_same_columns(fast, slow)
    return fast


def assert_same_page(fast: Run, slow: Run) -> None:
    """The page's chips, notices, menus and instance records, the same from
    columns as from records, without making the scanned tasks' records."""
    assert isinstance(fast.tasks, _table.TaskTable)
    assert ch.state_counts(fast) == c.count_states(slow.tasks)
    assert c.notices(fast) == c.notices(slow)
    filters: list[tuple[Any, Any]] = [(None, None), (None, ["failed", "completed"])]
    filters += [([NAMES[1]], None), ([NAMES[0], NAMES[2]], ["running", "waiting"])]
    for types, states in filters:
        kinds, shown = ch.instances(fast, types, states)
        rows = c.timeline_rows(slow, types, states)
        assert kinds == c.workflow_types(slow)
        assert [(i.key, i.label) for i in shown] == [(r.key, r.label) for r in rows]
        assert [i.failed for i in shown] == [
            any(t.state == "failed" for t in r.tasks) for r in rows
        ]
        assert (kinds, shown) == ch.instances(slow, types, states)
    for key in [r.key for r in c.timeline_rows(slow)][:8]:
        assert ch.instance_records(fast, key) == c.workflow_records(slow, key)
    assert ch.critical_path(fast) == paths.critical_path(slow)
    for key in [r.key for r in c.timeline_rows(slow)][:3]:
        a, b = figures.gantt_figure(fast, key), figures.gantt_figure(slow, key)
        assert pio.to_json(a) == pio.to_json(b)
    assert fast.tasks._records is None  # no record made of every task


def test_the_scanner_is_built_in_ci() -> None:
    # make test builds it (hatch_build.py); CI has a compiler.
    assert _finished.SCANNER is not None


def test_a_finished_run_reads_the_same_scanned_or_parsed(
    run_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = assert_same_read(run_file, monkeypatch, scans=True)
    assert_same_page(
        read(run_file, monkeypatch, scanner=True)[0], read(run_file, monkeypatch, scanner=False)[0]
    )
    tasks = list(run.tasks)
    assert {t.state for t in tasks} == {"completed", "failed", "canceled"}
    assert any(t.attempts for t in tasks) and any(t.cache == "hit" for t in tasks)
    assert any(t.error_type == "DependencyFailureError" for t in tasks)
    assert any("exit code 3" in t.failure for t in tasks)
    assert any(s.startswith("gpu:") for t in tasks for s in t.slots)
    assert {t.workflow_type for t in tasks} >= set(NAMES) and run.blocks
    assert len(run.workflows) == 12
    # The figures, drawn from the scanner's columns and from records.
    slow, _ = read(run_file, monkeypatch, scanner=False)
    for build in (figures.campaign_figure, figures.utilisation_figure, figures.slots_figure):
        assert pio.to_json(build(run)) == pio.to_json(build(slow)), build.__name__
    for bar_limit in (0, 10**6):  # the aggregated and the labelled timeline
        a = figures.campaign_figure(run, bar_limit=bar_limit)
        b = figures.campaign_figure(slow, bar_limit=bar_limit)
        assert pio.to_json(a) == pio.to_json(b)


def test_a_torn_last_line_and_lines_that_are_no_records(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "odd.telemetry.jsonl"
    lines = run_file.read_bytes().splitlines(keepends=True)
    path.write_bytes(
        b"".join(lines[:5])
        + b"not json at all\n\n[1, 2]\n"
        + b"".join(lines[5:])
        + b'{"section":"event","name":"Sess'
    )
    run = assert_same_read(path, monkeypatch, scans=True)
    assert any("incomplete" in p for p in run.problems)
    assert any("Skipped 2 line(s)" in p for p in run.problems)


def _task_lines(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith(b'{"section":"task"')]


def _edit(lines: list[bytes], how: str) -> list[bytes]:
    """``lines`` with one change the scanner must decline."""
    tasks = _task_lines(lines)
    first, last = tasks[0], tasks[-1]
    out = list(lines)
    if how == "keys reordered":
        out[first] = (
            out[first].replace(b'{"section":"task",', b"{").replace(b"}\n", b',"section":"task"}\n')
        )
    elif how == "spaces":
        out[first] = out[first].replace(b'","', b'", "', 1)
    elif how == "unknown key":
        out[first] = out[first].replace(b"}\n", b',"colour":"red"}\n')
    elif how == "float time":
        out[last] = out[last].replace(b'"ended":', b'"ended":1.5e0,"x_ended":', 1)
    elif how == "a line after the end":
        ended = next(i for i in tasks if b'"ended":' in out[i])
        uid = out[ended].split(b'"uid":"')[1].split(b'"')[0]
        out.append(b'{"section":"task","uid":"' + uid + b'","queued":1796536086366365631}\n')
    elif how == "escaped uid":
        out[first] = out[first].replace(b'"uid":"', b'"uid":"\\u0074', 1)
    elif how == "a time of zero":
        step = next(i for i in tasks if b'"queued":' in out[i])
        out[step] = out[step].split(b'"queued":')[0] + b'"queued":0}\n'
    elif how == "a task span line":
        out.append(
            b'{"section":"span","name":"task x","span_id":"ab","parent_span_id":"",'
            b'"start_ns":1,"end_ns":2,"status_code":"OK","status_description":"",'
            b'"attributes":{"asyncflow.level":"task","asyncflow.task.uid":"task.x"},'
            b'"events":[]}\n'
        )
    return out


@pytest.mark.parametrize(
    "how",
    [
        "keys reordered",
        "spaces",
        "unknown key",
        "float time",
        "a line after the end",
        "escaped uid",
        "a time of zero",
        "a task span line",
    ],
)
def test_what_the_writer_never_writes_is_read_the_python_way(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    path = tmp_path / "edited.telemetry.jsonl"
    path.write_bytes(b"".join(_edit(run_file.read_bytes().splitlines(keepends=True), how)))
    assert_same_read(path, monkeypatch, scans=False)


@pytest.mark.parametrize("cut", [1 / 3, 2 / 3, 0.9])
def test_a_killed_run_reads_the_same_scanned_or_parsed(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: float
) -> None:
    """A run killed part-way: tasks waiting, queued or running, and a torn last line."""
    path = tmp_path / "killed.telemetry.jsonl"
    lines = run_file.read_bytes().splitlines(keepends=True)
    at = int(len(lines) * cut)
    path.write_bytes(b"".join(lines[:at]) + lines[at][:30])
    run = assert_same_read(path, monkeypatch, scans=True)
    slow, _ = read(path, monkeypatch, scanner=False)
    assert_same_page(read(path, monkeypatch, scanner=True)[0], slow)
    assert any(t.finished is None for t in run.tasks) and any(t.finished for t in run.tasks)
    for build in (figures.campaign_figure, figures.utilisation_figure, figures.slots_figure):
        assert pio.to_json(build(run)) == pio.to_json(build(slow)), build.__name__
    assert pio.to_json(figures.campaign_figure(run, bar_limit=0)) == pio.to_json(
        figures.campaign_figure(slow, bar_limit=0)
    )


def test_a_file_that_changes_after_it_was_scanned_is_read_again(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "grows.telemetry.jsonl"
    lines = run_file.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines))
    source = open_source(path)
    first = source.poll()
    assert next(iter(source._tails.values())).scanned
    # Someone appends a task (the writer is gone: the file was thought done).
    path.write_bytes(
        path.read_bytes()
        + b'{"section":"task","uid":"task.late","created":1796536086366335295,'
        + b'"level":"task","name":"late"}\n'
    )
    again = source.poll()
    assert again.version > first.version
    assert "task.late" in {t.uid for t in again.tasks}
    slow, _ = read(path, monkeypatch, scanner=False)
    assert comparable(again) == comparable(slow)


# ---------------------------------------------------------------- hand-written files
# Found by a bug hunt: each read the same both ways, and whether the scanner takes it.

HEADER = b'{"section":"header","layout":2,"session_id":"s","node_id":"vm","trace_id":"t"}\n'
T0 = 1796583140425583383


def _task(uid: bytes, end: bytes = b"", created: bytes = b"") -> list[bytes]:
    """A finished task's lines, as the writer writes them."""
    head = b'{"section":"task","uid":"' + uid + b'",'
    return [
        head
        + b'"created":%d,"id":1,"span":"ab","parent":"cd","backend":"default",' % T0
        + b'"workflow_id":"wf-1","level":"task","name":"step","workflow_name":"w",'
        + b'"type":"function","cpus":1,"gpus":0'
        + created
        + b"}\n",
        *(head + b'"%s":%d}\n' % (step.encode(), T0 + k) for k, step in enumerate(STEPS, 1)),
        head + b'"ended":%d,"result":"completed","status":"OK"' % (T0 + 5) + end + b"}\n",
    ]


STEPS = ("resolved", "queued", "submitted", "started")
HAND_WRITTEN: dict[str, tuple[list[bytes], bool]] = {
    # Uids that differ only in bytes that are not UTF-8 are one task to the
    # Python reader (it reads them with replacements): the scanner declines.
    "a uid not UTF-8": (
        [*_task(b"task.x\xff")[:-1], _task(b"task.x\xfe")[-1]],
        False,
    ),
    "a dependency's uid not UTF-8": (
        [*_task(b"task.1"), *_task(b"task.2", b',"depends_on":["task.1","x\xff"]')],
        False,
    ),
    # A value the scanner checks only when it is read must not be replaced unread.
    "an exception twice on a line": (
        _task(b"task.1", b',"exception":{"x":[}},"exception":{}'),
        False,
    ),
    "attributes on two lines": (
        _task(b"task.1", b',"attributes":{"ok":1}', b',"attributes":{"a":tru}'),
        False,
    ),
    "a span id twice": (
        [
            _task(b"task.1")[0].replace(b'"span":"ab"', b'"span":"\\q"'),
            b'{"section":"task","uid":"task.1","span":"ab"}\n',
            *_task(b"task.1")[1:],
        ],
        False,
    ),
    # A killed run: a task that ended (cancelled) depended on one still running.
    "a dependency on a task that never ended": (
        [
            _task(b"task.1")[0],
            _task(b"task.1")[4],
            _task(b"task.2")[0],
            b'{"section":"task","uid":"task.2","ended":%d,"result":"canceled",' % (T0 + 6)
            + b'"status":"UNSET","depends_on":["task.1"]}\n',
        ],
        True,
    ),
    # A killed run's task that never ended, of a type no task that ended has,
    # in a file whose values hold one text twice ("" stands for the slots).
    "an unfinished task of a type of its own": (
        [
            _task(b"task.1", created=b',"slots":["cpu:0"],"assigned":%d' % (T0 + 1))[0],
            _task(b"task.1")[-1],
            _task(b"task.2")[0]
            .replace(b'"workflow_id":"wf-1"', b'"workflow_id":"wf-2"')
            .replace(b'"workflow_name":"w"', b'"workflow_name":"gamma"'),
        ],
        True,
    ),
}


@pytest.mark.parametrize("case", list(HAND_WRITTEN))
def test_hand_written_files_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    lines, scans = HAND_WRITTEN[case]
    path = tmp_path / "hand.telemetry.jsonl"
    path.write_bytes(HEADER + b"".join(lines))
    run = assert_same_read(path, monkeypatch, scans=scans)
    assert run.tasks
    if scans:
        assert_same_page(
            read(path, monkeypatch, scanner=True)[0], read(path, monkeypatch, scanner=False)[0]
        )


def test_joined_columns_keep_each_text_when_one_comes_twice() -> None:
    """A killed run's columns joined: the scanner's texts may hold one text twice."""
    from asyncflow.dashboard._columns import TaskColumns
    from asyncflow.dashboard._table import _join

    def columns(uids: list[str], codes: list[int], texts: list[str]) -> TaskColumns:
        count = len(uids)
        nothing = np.full(count, np.nan)
        return TaskColumns(
            uids=uids,
            **dict.fromkeys(("created", "resolved", "queued", "submitted", "started"), nothing),
            finished=nothing,
            final=np.full(count, -1),
            cpus=np.ones(count, dtype=np.int64),
            gpus=np.zeros(count, dtype=np.int64),
            slots={},
            attempted=[],
            workflow_ids=np.asarray(codes, dtype=np.int64),
            workflow_id_values=texts,
            kinds=np.asarray(codes, dtype=np.int64),
            kind_values=texts,
            edges=(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)),
            record=lambda i: None,  # type: ignore[arg-type,return-value]
        )

    joined = _join(columns(["a", "b"], [1, 2], ["", "x", ""]), columns(["c"], [0], ["new"]), id)  # type: ignore[arg-type]
    assert [joined.kind_values[k] for k in joined.kinds.tolist()] == ["x", "", "new"]
    assert [joined.workflow_id_values[k] for k in joined.workflow_ids.tolist()] == ["x", "", "new"]
