"""Each attempt of a retried task on its own slots: the record's ``runs``, the
slots it ever held, and the capacity seen from them (by records and by columns)."""

from __future__ import annotations

import plotly.graph_objects as go

from asyncflow.dashboard import _busy as b
from asyncflow.dashboard import compute as c
from asyncflow.dashboard._attempts import add_attempts_and_hits
from asyncflow.dashboard._columns import timeline_of
from asyncflow.dashboard._making import _attempt
from asyncflow.dashboard.model import STATE_COMPLETED, Attempt, Run, SpanRecord
from asyncflow.telemetry import names as n


def retried(**kw: object) -> SpanRecord:
    fields: dict[str, object] = {
        "uid": "task.000001",
        "level": n.LEVEL_TASK,
        "name": "train",
        "state": STATE_COMPLETED,
        "created": 9.0,
        "started": 10.0,
        "finished": 13.0,
        "gpus": 1,
        "slots": ("gpu:0",),
        "attempts": (
            Attempt(1, 10.0, 11.0, "RuntimeError", "bad GPU", ("gpu:3",)),
            Attempt(2, 12.0, 13.0, slots=("gpu:0",)),
        ),
    }
    fields.update(kw)
    return SpanRecord(**fields)  # type: ignore[arg-type]


def test_each_attempt_runs_on_its_own_slots() -> None:
    task = retried()
    assert task.runs(20.0) == ((10.0, 11.0, ("gpu:3",)), (12.0, 13.0, ("gpu:0",)))
    assert task.held(20.0) == ((10.0, 11.0), (12.0, 13.0))
    assert task.all_slots() == ("gpu:0", "gpu:3")


def test_an_attempt_without_recorded_slots_runs_on_the_task_s() -> None:
    """Files written before attempts recorded their slots."""
    task = retried(attempts=(Attempt(1, 10.0, 11.0, "E"), Attempt(2, 12.0, 13.0)))
    assert task.runs(20.0) == ((10.0, 11.0, ("gpu:0",)), (12.0, 13.0, ("gpu:0",)))
    assert task.all_slots() == ("gpu:0",)
    plain = retried(attempts=())
    assert plain.runs(20.0) == ((10.0, 13.0, ("gpu:0",)),)
    assert plain.all_slots() == ("gpu:0",)


def test_the_attempt_event_gives_its_slots() -> None:
    event = {
        "time_ns": 11_000_000_000,
        "attributes": {
            n.ATTEMPT_NUMBER: 1,
            n.ATTEMPT_STARTED: 10_000_000_000,
            n.ATTEMPT_SLOTS: ["gpu:3", "cpu:1"],
        },
    }
    assert _attempt(event).slots == ("gpu:3", "cpu:1")
    event["attributes"][n.ATTEMPT_SLOTS] = "gpu:3"  # not a list: none
    assert _attempt(event).slots == ()


def test_the_capacity_seen_counts_an_earlier_attempt_s_slot() -> None:
    """No capacity recorded: the highest slot index any attempt ran on, plus one
    (gpu:3 was only the first attempt's), by records and by columns."""
    run = Run(source="test", tasks=(retried(),), start=9.0, end=13.0, ended=True)
    assert c.capacities(run)[n.KIND_GPU] == c.Capacity(4, "observed")
    tl = timeline_of(run)
    peaks = {kind: b.steps(tl, kind, 50)[0] for kind in c.KINDS}
    assert b.capacities(tl, None, peaks)[n.KIND_GPU] == c.Capacity(4, "observed")


def test_an_attempt_s_hover_says_where_it_ran() -> None:
    fig = go.Figure()
    add_attempts_and_hits(fig, [retried()], 9.0, 13.0)
    hovers = " ".join(text for trace in fig.data for text in trace.hovertext)
    assert "attempt 1 of 2, 1.000 s on gpu:3, RuntimeError: bad GPU" in hovers
    assert "attempt 2 of 2, 1.000 s on gpu:0, succeeded" in hovers
