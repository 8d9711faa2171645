"""The critical path of a hand-built DAG, slot lanes and the tasks waiting for a slot."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

pytest.importorskip("plotly", reason="needs the dashboard extra")

from asyncflow.dashboard import figures as f
from asyncflow.dashboard import paths
from asyncflow.dashboard.model import Run, RunBuilder
from asyncflow.telemetry import names as n

from ..ui import records as r


def span(
    uid: str,
    created: float,
    resolved: float,
    started: float,
    finished: float,
    depends_on: tuple[str, ...] = (),
    slots: list[str] | None = None,
    workflow: str = "wf-a",
) -> dict[str, Any]:
    out = r.task_span(
        uid,
        workflow,
        "simulate",
        0,
        slots,
        started,
        finished,
        created=created,
        depends_on=depends_on,
        name="ABCDE"[int(uid[-1]) - 1] if uid[-1].isdigit() else uid,
    )
    out["events"] = [
        {"name": n.SPAN_EVENT_RESOLVED, "time_ns": r.ns(resolved)},
        {"name": n.SPAN_EVENT_STARTED, "time_ns": r.ns(started)},
    ]
    return out


def dag() -> Run:
    """A, B -> C (needs A and B); B -> D; C, D -> E.

    ====  =======  ========  =======  ========
    task  created  resolved  started  finished
    ====  =======  ========  =======  ========
    A     0        0         0.5      2
    B     0        0         0.5      1
    C     0        2.1       2.5      5
    D     0        1.1       1.2      3
    E     0        5.2       6        8
    ====  =======  ========  =======  ========

    A ends after B, so C waited for A; E waited for C (5 > 3): the path is
    A -> C -> E. Makespan 8 s: run 1.5 + 2.5 + 2 = 6 s, queue wait
    0.5 + 0.4 + 0.8 = 1.7 s, the rest (0.3 s) dependency wait.
    """
    builder = RunBuilder("dag")
    builder.add_span(r.session_span(9.0))
    builder.add_span(span("task.000001", 0, 0, 0.5, 2, slots=["cpu:0"]))
    builder.add_span(span("task.000002", 0, 0, 0.5, 1, slots=["cpu:1"]))
    builder.add_span(
        span("task.000003", 0, 2.1, 2.5, 5, ("task.000001", "task.000002"), slots=["cpu:0"])
    )
    builder.add_span(span("task.000004", 0, 1.1, 1.2, 3, ("task.000002",), slots=["cpu:1"]))
    builder.add_span(
        span("task.000005", 0, 5.2, 6, 8, ("task.000003", "task.000004"), slots=["cpu:1"])
    )
    return builder.snapshot()


def test_the_critical_path_of_a_hand_built_dag() -> None:
    path = paths.critical_path(dag())
    assert path is not None
    assert [t.name for t in path.tasks] == ["A", "C", "E"]
    assert path.makespan == pytest.approx(8.0, abs=1e-6)
    assert path.run_time == pytest.approx(6.0, abs=1e-6)
    assert path.queue_wait == pytest.approx(1.7, abs=1e-6)
    assert path.dependency_wait == pytest.approx(0.3, abs=1e-6)
    assert path.breakdown() == (
        "makespan 8.000 s along 3 task(s): run time 6.000 s, queue wait 1.700 s, "
        "dependency wait 0.300 s"
    )


def test_no_critical_path_before_a_task_ended() -> None:
    assert paths.critical_path(RunBuilder("empty").snapshot()) is None


def test_the_critical_path_is_drawn_on_the_timeline_and_the_gantt() -> None:
    run = dag()
    fig = f.campaign_figure(run)
    (trace,) = [t for t in fig.data if t.name == "critical path"]
    runs = [x for x in trace.x if x is not None]
    assert runs == pytest.approx([0.5, 2, 2.5, 5, 6, 8], abs=1e-6)
    assert list(trace.x).count(None) == 3  # the runs only, not lines between them
    assert fig.layout.title.subtitle.text.startswith("Critical path: makespan 8.000 s")
    gantt = f.gantt_figure(run, "wf-a", critical=paths.critical_path(run).uids)  # type: ignore[union-attr]
    (runs,) = [t for t in gantt.data if t.name == n.PHASE_RUN_TIME]
    outlined = {
        custom[1]
        for custom, colour in zip(runs.customdata, runs.marker.line.color, strict=True)
        if colour == "#111"
    }
    assert outlined == {"A", "C", "E"}
    assert "3 on the critical path" in gantt.layout.title.text


def test_slot_lanes_from_assigned_slots() -> None:
    lanes = paths.slot_lanes(dag())
    assert not lanes.inferred
    assert [lane.slot for lane in lanes.lanes] == ["cpu:0", "cpu:1"]
    assert [t.name for t, _, _ in lanes.lanes[0].spans] == ["A", "C"]
    assert [t.name for t, _, _ in lanes.lanes[1].spans] == ["B", "D", "E"]


def test_slot_lanes_are_packed_when_no_slot_was_assigned() -> None:
    builder = RunBuilder("packed")
    builder.add_span(r.session_span(9.0))
    for uid, start, end in (("task.000001", 0, 2), ("task.000002", 1, 3), ("task.000003", 2.5, 4)):
        builder.add_span(span(uid, 0, 0, start, end))
    builder.add_span(  # a GPU task takes a GPU lane
        r.task_span("task.000004", "wf-b", "train", 1, None, 1.0, 2.0)
    )
    lanes = paths.slot_lanes(builder.snapshot())
    assert lanes.inferred
    got = {lane.slot: [t.name for t, _, _ in lane.spans] for lane in lanes.lanes}
    assert got == {"gpu:0": ["step"], "cpu:0": ["A", "C"], "cpu:1": ["B"]}
    assert [lane.slot for lane in lanes.lanes] == ["gpu:0", "cpu:0", "cpu:1"]


def test_a_task_asking_for_absurdly_many_slots_takes_a_bounded_number_of_lanes() -> None:
    """A broken file's count (2**62 cpus) must not open lanes for ever."""
    builder = RunBuilder("huge")
    builder.add_span(r.session_span(9.0))
    builder.add_span(span("task.000001", 0, 0, 0, 2))
    run = builder.snapshot()
    huge = run.tasks[0]._replace(cpus=2**62)
    lanes = paths.slot_lanes(dataclasses.replace(run, tasks=(huge,)))
    assert len(lanes.lanes) == paths.MOST_LANES
    f.slots_figure(dataclasses.replace(run, tasks=(huge,)))


def test_tasks_waiting_for_a_slot_over_time() -> None:
    # resolved -> started: A, B 0 -> 0.5; D 1.1 -> 1.2; C 2.1 -> 2.5; E 5.2 -> 6
    times, values = paths.waiting_for_slots(dag())
    steps = dict(zip(times, values, strict=True))
    assert steps[0.0] == 2
    assert values[times.index(pytest.approx(0.5, abs=1e-6))] == 0
    assert values[times.index(pytest.approx(2.1, abs=1e-6))] == 1
    assert values[times.index(pytest.approx(5.2, abs=1e-6))] == 1
    assert values[-1] == 0 and times[-1] == pytest.approx(9.0)


def test_the_slot_lanes_figure() -> None:
    fig = f.slots_figure(dag())
    assert list(fig.layout.yaxis.ticktext) == ["cpu:0", "cpu:1"]
    bars = [t for t in fig.data if t.type == "bar"]
    assert sum(len(t.x) for t in bars) == 5
    assert fig.layout.title.subtitle.text.startswith("Critical path: makespan")
    waiting = next(t for t in fig.data if t.name == "tasks waiting for a slot")
    assert max(waiting.y) == 2
    large = f.slots_figure(dag(), bar_limit=1)
    assert {t.type for t in large.data} == {"scattergl", "scatter"}


def test_clock_axes_show_clock_time() -> None:
    import datetime

    run = dag()
    fig = f.clock_axes(f.campaign_figure(run), run.start)
    assert fig.layout.xaxis.type == "date" and fig.layout.xaxis2.type == "date"
    offset = datetime.datetime.fromtimestamp(run.start).astimezone().utcoffset()
    assert offset is not None
    zero_ms = (run.start + offset.total_seconds()) * 1000
    bars = [t for t in fig.data if t.type == "bar"]
    starts = sorted(b for t in bars for b in t.base)
    assert starts[0] == pytest.approx(zero_ms + 500, abs=1)  # A and B start 0.5 s in
    widths = sorted(x for t in bars for x in t.x)
    assert widths[-1] == pytest.approx(2500, abs=1)  # C ran 2.5 s: milliseconds on a date axis
    busy = next(t for t in fig.data if t.name == "CPU busy")
    assert "%{x|%H:%M:%S.%L}" in busy.hovertemplate
    assert fig.layout.xaxis2.title.text.startswith("clock time")
    # The figure it came from is unchanged (the server keeps it for other pages).
    assert f.campaign_figure(run).layout.xaxis.type != "date"
    large = f.clock_axes(f.campaign_figure(run, bar_limit=1), run.start)
    line = next(t for t in large.data if t.type == "scattergl")
    assert min(v for v in f.values_of(line.x) if v == v) >= zero_ms


def test_the_waiting_count_of_a_large_run_is_bounded() -> None:
    from asyncflow.dashboard import compute as c

    builder = RunBuilder("many")
    builder.add_span(r.session_span(5000.0))
    for i in range(3000):  # 6,000 changes of the waiting count
        one = r.task_span(f"task.{i + 1:06d}", "wf-a", "simulate", 0, None, i + 0.75, i + 1.0)
        one["events"] = [
            {"name": n.SPAN_EVENT_RESOLVED, "time_ns": r.ns(i + 0.25)},
            {"name": n.SPAN_EVENT_STARTED, "time_ns": r.ns(i + 0.75)},
        ]
        builder.add_span(one)
    fig = f.slots_figure(builder.snapshot())
    waiting = next(t for t in fig.data if t.name == "tasks waiting for a slot")
    assert len(waiting.x) <= c.ENVELOPE_POINTS
    assert max(waiting.y) == 1  # each bin keeps its peak
