"""A live run drawn by its true state at "now"; the phases; root failures vs cascades."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("plotly", reason="needs the dashboard extra")

from asyncflow.dashboard import compute as c
from asyncflow.dashboard import figures as f
from asyncflow.dashboard.model import Run, RunBuilder, phases, status
from asyncflow.telemetry import names as n

from ..ui import records as r

FAILURE_TRACES = {"failed", "failed, never ran", "skipped: a dependency failed", "canceled"}


def live_run() -> Run:
    """Seven tasks in one workflow, the session still running at T0 + 10 s.

    ============  =========================================  =================
    task          what happened                               status at "now"
    ============  =========================================  =================
    task.000001   created 1, resolved 1.5, started 2, ended 4 completed
    task.000002   created 1, resolved 2, started 3, ended 5   failed (ValueError)
    task.000003   created 1, ended 5.5 (dependency 2 failed)   dependency-failed
    task.000004   created 2, resolved 4, started 6            running
    task.000005   created 2, resolved 7                       queued
    task.000006   created 3                                   waiting
    task.000007   created 3, ended 8 (canceled, never ran)    canceled
    ============  =========================================  =================
    """
    builder = RunBuilder("live")
    builder.session_bounds(r.T0)
    builder.add_span(
        r.task_span("task.000001", "wf-a", "simulate", 0, ["cpu:0"], 2.0, 4.0, created=1.0)
    )
    failed = r.task_span(
        "task.000002", "wf-a", "simulate", 0, ["cpu:1"], 3.0, 5.0, "failed", created=1.0
    )
    builder.add_span(failed)
    cascade = r.task_span(
        "task.000003",
        "wf-a",
        "simulate",
        0,
        None,
        None,
        5.5,
        "failed",
        created=1.0,
        depends_on=("task.000002",),
    )
    cascade["attributes"][n.ERROR_TYPE] = "DependencyFailureError"
    cascade["events"] = []
    builder.add_span(cascade)
    canceled = r.task_span("task.000007", "wf-a", "simulate", 0, None, None, 8.0, created=3.0)
    canceled["attributes"][n.TASK_RESULT] = n.RESULT_CANCELED
    canceled["events"] = []
    builder.add_span(canceled)
    for uid, created in (("task.000004", 2.0), ("task.000005", 2.0), ("task.000006", 3.0)):
        builder.task_created(
            uid, r.T0 + created, "local", "wf-a", "", False, name="step", workflow_type="simulate"
        )
    builder.task_step("task.000004", n.SPAN_EVENT_RESOLVED, r.T0 + 4.0)
    builder.task_started("task.000004", r.T0 + 6.0)
    builder.task_step("task.000005", n.SPAN_EVENT_RESOLVED, r.T0 + 7.0)
    builder.session_bounds(r.T0)
    builder.task_assigned("task.000004", r.T0 + 10.0, ["cpu:2"])  # "now" is T0 + 10
    return builder.snapshot()


EXPECTED = {
    "task.000001": "completed",
    "task.000002": "failed",
    "task.000003": "dependency-failed",
    "task.000004": "running",
    "task.000005": "queued",
    "task.000006": "waiting",
    "task.000007": "canceled",
}


def by_uid(run: Run) -> dict[str, Any]:
    return {t.uid: t for t in run.tasks}


def test_each_task_has_its_true_state_at_now() -> None:
    run = live_run()
    assert run.rel(run.end) == pytest.approx(10.0)
    assert {t.uid: status(t) for t in run.tasks} == EXPECTED


def test_phases_of_a_hand_built_task() -> None:
    # task_span: resolved = created + 0.1, submitted = created + 0.3
    task = by_uid(live_run())["task.000001"]
    got = phases(task)
    assert got[n.PHASE_DEPENDENCY_WAIT] == pytest.approx(0.1, abs=1e-6)
    assert got[n.PHASE_QUEUE_WAIT] == pytest.approx(2.0 - 1.1, abs=1e-6)
    assert got[n.PHASE_ENGINE_QUEUE] == pytest.approx(0.2, abs=1e-6)
    assert got[n.PHASE_BACKEND_QUEUE] == pytest.approx(2.0 - 1.3, abs=1e-6)
    assert got[n.PHASE_RUN_TIME] == pytest.approx(2.0, abs=1e-6)
    assert got[n.PHASE_TOTAL] == pytest.approx(3.0, abs=1e-6)
    # The main phases follow each other: they add up to the total.
    assert sum(got[p] or 0.0 for p in n.MAIN_PHASES) == pytest.approx(got[n.PHASE_TOTAL])
    # Steps not reached: no phase, not a zero.
    waiting = phases(by_uid(live_run())["task.000006"])
    assert waiting[n.PHASE_DEPENDENCY_WAIT] is None and waiting[n.PHASE_RUN_TIME] is None


def test_phase_definitions_are_the_documented_steps() -> None:
    assert n.PHASES[n.PHASE_DEPENDENCY_WAIT] == (n.STEP_CREATED, n.STEP_RESOLVED)
    assert n.PHASES[n.PHASE_QUEUE_WAIT] == (n.STEP_RESOLVED, n.STEP_STARTED)
    assert n.PHASES[n.PHASE_RUN_TIME] == (n.STEP_STARTED, n.STEP_ENDED)
    assert n.PHASES[n.PHASE_TOTAL] == (n.STEP_CREATED, n.STEP_ENDED)
    with pytest.raises(KeyError):
        n.phase_seconds("duration", {})


def _traces_holding(fig: Any) -> dict[str, set[str]]:
    """Trace name -> uids of the tasks it draws."""
    out: dict[str, set[str]] = {}
    for trace in fig.data:
        if trace.customdata is not None:
            out.setdefault(trace.name, set()).update(str(x[0]) for x in trace.customdata)
    return out


def test_the_live_timeline_draws_no_unfinished_task_as_failed() -> None:
    run = live_run()
    fig = f.campaign_figure(run)
    held = _traces_holding(fig)
    unfinished = {uid for uid, s in EXPECTED.items() if s in ("running", "queued", "waiting")}
    for name, uids in held.items():
        if name in FAILURE_TRACES:
            assert not uids & unfinished, name
    assert held["waiting for dependencies"] == {"task.000006"}
    assert held["queued for a slot or backend"] == {"task.000005"}
    assert held["skipped: a dependency failed"] == {"task.000003"}
    assert held["canceled, never ran"] == {"task.000007"}
    assert "failed, never ran" not in held  # the root failure ran: a bar with a red outline
    (bar_trace,) = [t for t in fig.data if t.name == "simulate"]
    ends = {
        custom[0]: base + x
        for custom, base, x in zip(bar_trace.customdata, bar_trace.base, bar_trace.x, strict=True)
    }
    assert ends["task.000004"] == pytest.approx(10.0)  # the running bar grows up to now
    (queued,) = [t for t in fig.data if t.name == "queued for a slot or backend"]
    assert queued.base[0] == pytest.approx(7.0) and queued.x[0] == pytest.approx(3.0)


def test_the_large_timeline_marks_only_tasks_that_ended() -> None:
    run = live_run()
    fig = f.campaign_figure(run, bar_limit=1)
    marks = {t.name: f.values_of(t.x) for t in fig.data if getattr(t, "mode", None) == "markers"}
    assert marks.keys() == {"failed", "skipped: a dependency failed", "canceled"}
    assert marks["failed"] == pytest.approx([5.0])
    lines = {t.name for t in fig.data if getattr(t, "mode", None) == "lines"}
    assert {"waiting for dependencies", "queued for a slot or backend"} <= lines


def _hover_of(fig: Any, uid: str) -> str:
    for trace in fig.data:
        if trace.customdata is None or trace.hovertext is None:
            continue
        for custom, text in zip(trace.customdata, trace.hovertext, strict=True):
            if custom[0] == uid:
                return str(text)
    raise AssertionError(f"{uid} has no hover")


def test_the_hover_gives_phases_not_start_plus_end() -> None:
    run = live_run()
    for fig in (f.campaign_figure(run), f.gantt_figure(run, "wf-a")):
        done = _hover_of(fig, "task.000001")
        assert "run time: 2.000 s" in done
        assert "dependency wait: 0.100 s" in done
        assert "queue wait: 0.900 s" in done
        assert f"start: {f.clock(r.T0 + 2.0)} (+2.000 s)" in done
        assert "slots: cpu:0" in done and "workflow: wf-a (simulate)" in done
        failed = _hover_of(fig, "task.000002")
        assert "state: failed" in failed
        assert "error: ValueError: evaluation set is empty" in failed
        running = _hover_of(fig, "task.000004")
        assert "run time: 4.000 s so far" in running and "state: running" in running
        assert "dependency wait: 7.000 s so far" in _hover_of(fig, "task.000006")
        assert "queue wait: 3.000 s so far" in _hover_of(fig, "task.000005")


def test_hover_escapes_recorded_strings() -> None:
    builder = RunBuilder("escape")
    span = r.task_span("task.000001", "wf-a", "t", 0, None, 1.0, 2.0, "failed")
    span["attributes"][n.TASK_NAME] = "<img src=x onerror=alert(1)>"
    span["status_description"] = "<script>bad()</script>"
    builder.add_span(span)
    text = _hover_of(f.campaign_figure(builder.snapshot()), "task.000001")
    assert "<img" not in text and "<script>" not in text
    assert "&lt;script&gt;" in text


def test_root_failures_are_told_apart_from_cascades() -> None:
    run = live_run()
    summary = c.summarize(run)
    assert summary.states["failed"] == 1 and summary.states["dependency-failed"] == 1
    assert [f[0] for f in summary.failures] == ["ValueError"]
    assert summary.cascades == 1
    assert c.failure_sentence(summary.states) == ("1 failed, 1 skipped because a dependency failed")
    tables = {title.split(":")[0]: rows for title, _, rows in c.summary_tables(summary)}
    failures = tables["Failures by error type"]
    assert [row[:2] for row in failures] == [["ValueError", "1"], ["dependency-failed", "1"]]
    titles = [title for title, _, _ in c.summary_tables(summary)]
    assert "Failures by error type: 1 failed, 1 skipped because a dependency failed" in titles
    # Filtering by state uses the same states.
    (row,) = c.timeline_rows(run, states=["dependency-failed"])
    assert [t.uid for t in row.tasks] == ["task.000003"]
