"""Figure builders on a campaign whose every number is known (no browser)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("plotly", reason="needs the dashboard extra")

import numpy as np

from asyncflow.dashboard import _busy
from asyncflow.dashboard import compute as c
from asyncflow.dashboard import figures as f
from asyncflow.dashboard.model import RunBuilder
from asyncflow.telemetry import names as n

from ..ui import records as r


def traces(fig: Any, kind: str) -> list[Any]:
    return [t for t in fig.data if t.type == kind]


def named(fig: Any, name: str) -> Any:
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


def bars_by_uid(fig: Any) -> dict[str, tuple[int, float, float, str]]:
    """uid -> (row, start, end, colour) of every timeline bar."""
    out = {}
    for trace in traces(fig, "bar"):
        for y, base, x, custom in zip(trace.y, trace.base, trace.x, trace.customdata, strict=True):
            out[custom[0]] = (y, base, base + x, trace.marker.color)
    return out


@pytest.mark.parametrize("slots", [True, False], ids=["slots", "no-slots"])
def test_one_bar_per_task_in_its_row_and_colour(slots: bool) -> None:
    fig = f.campaign_figure(r.campaign(slots=slots))
    bars = bars_by_uid(fig)
    colours = f.type_colours(r.TYPE_OF.values())
    assert sorted(bars) == [t[0] for t in r.TASKS]
    for uid, workflow, wf_type, _, _, started, finished, _ in r.TASKS:
        row, start, end, colour = bars[uid]
        assert row == r.ROWS.index(workflow)
        assert colour == colours[wf_type]
        assert start == pytest.approx(started) and end == pytest.approx(finished)
    axis = fig.layout.yaxis
    assert list(axis.ticktext) == [f"{w} ({r.TYPE_OF[w]})" for w in r.ROWS]


def test_bars_are_labelled_with_slots_or_requests() -> None:
    with_slots = traces(f.campaign_figure(r.campaign()), "bar")
    labels = {t for trace in with_slots for t in trace.text}
    assert {"gpu:0,cpu:0", "gpu:1,cpu:1", "cpu:0"} <= labels
    without = traces(f.campaign_figure(r.campaign(slots=False)), "bar")
    assert {t for trace in without for t in trace.text} == {"1 gpu", "1 cpu"}


def test_failed_task_is_outlined_red() -> None:
    (evaluate,) = [
        t for t in traces(f.campaign_figure(r.campaign()), "bar") if t.name == "evaluate"
    ]
    failed = [custom[2] == "failed" for custom in evaluate.customdata]
    assert [line == f.FAILED for line in evaluate.marker.line.color] == failed
    assert any(failed)


@pytest.mark.parametrize("slots", [True, False], ids=["slots", "no-slots"])
def test_busy_step_functions_have_the_right_values(slots: bool) -> None:
    run = r.campaign(slots=slots)
    gpu, cpu = c.busy_steps(run, n.KIND_GPU), c.busy_steps(run, n.KIND_CPU)
    expected_gpu = {0.5: 0, 1.2: 1, 1.6: 2, 3.5: 2, 4.5: 1, 5.5: 0, 6.8: 0}
    expected_cpu = {0.5: 0, 1.2: 1, 2.0: 2, 3.5: 2, 4.5: 1, 5.5: 1, 6.2: 1, 6.8: 0}
    assert {t: gpu.at(t) for t in expected_gpu} == expected_gpu
    assert {t: cpu.at(t) for t in expected_cpu} == expected_cpu
    # The figure draws the same step functions, as steps.
    fig = f.campaign_figure(run)
    for name, steps in (("GPU busy", gpu), ("CPU busy", cpu)):
        trace = named(fig, name)
        assert trace.line.shape == "hv"
        assert list(trace.x) == steps.times and list(trace.y) == steps.values


def test_capacity_lines_at_recorded_capacities() -> None:
    fig = f.campaign_figure(r.campaign())
    gpu = named(fig, "GPU capacity (recorded)")
    cpu = named(fig, "CPU capacity (recorded)")
    assert set(gpu.y) == {r.GPU_CAPACITY} and set(cpu.y) == {r.CPU_CAPACITY}
    assert gpu.line.dash == cpu.line.dash == "dash"
    assert gpu.yaxis != cpu.yaxis  # GPU on the left axis, CPU on the right


def test_capacity_given_then_observed_when_not_recorded() -> None:
    run = r.campaign(snapshot=False)
    given = f.campaign_figure(run, capacity={"gpu": 3})
    assert set(named(given, "GPU capacity (given)").y) == {3}
    observed = f.campaign_figure(run)
    assert set(named(observed, "GPU capacity (observed)").y) == {2}
    assert set(named(observed, "CPU capacity (observed)").y) == {3}  # slot cpu:2 exists


def test_configuration_table() -> None:
    run = r.campaign()
    table = {row.workflow_type: row for row in c.configuration(run)}
    assert table["simulate"].instances == 2 and table["simulate"].gpus == "1"
    assert table["evaluate"].tasks == 2 and table["evaluate"].gpus == "0"
    (fig_table,) = traces(f.campaign_figure(run), "table")
    assert list(fig_table.cells.values[0]) == ["evaluate", "simulate", "train"]


def test_filters_by_type_and_state() -> None:
    run = r.campaign()
    only_train = bars_by_uid(f.campaign_figure(run, types=["train"]))
    assert list(only_train) == ["task.000003"]
    failed = bars_by_uid(f.campaign_figure(run, states=["failed"]))
    assert list(failed) == ["task.000005"]
    empty = f.campaign_figure(run, types=["nothing"])
    assert "No tasks to show" in empty.layout.annotations[0].text


def test_large_runs_are_aggregated_webgl_segments() -> None:
    builder = RunBuilder("large")
    builder.add_span(r.session_span(end=100.0))
    count = 3_000
    for i in range(count):
        wf = f"wf-{i // 3:04d}"
        builder.add_span(
            r.task_span(
                f"task.{i + 1:06d}", wf, ("a", "b")[i // 3 % 2], 0, None, i * 0.03, i * 0.03 + 0.5
            )
        )
    run = builder.snapshot()
    fig = f.campaign_figure(run, bar_limit=1_000)
    assert not traces(fig, "bar")
    lines = [t for t in traces(fig, "scattergl") if t.mode == "lines"]
    assert {t.name for t in lines} == {"a", "b"}
    xs = [x for t in lines for x in f.values_of(t.x)]
    starts = [x for i, x in enumerate(xs) if i % 3 == 0]
    assert all(math.isnan(x) for x in xs[2::3])  # segments are separated by NaN
    # Aggregated: far fewer segments than tasks, covering the same time.
    assert 0 < len(starts) < count
    assert min(starts) == pytest.approx(0.0) and max(xs[1::3]) == pytest.approx(90.47, abs=0.1)
    assert len(f.values_of(lines[0].x)) == len(f.values_of(lines[0].y))


def test_zooming_an_aggregated_timeline_aggregates_the_window_again() -> None:
    builder = RunBuilder("large")
    builder.add_span(r.session_span(end=100.0))
    count = 3_000
    for i in range(count):  # all in one row: tasks 0.01 s long, 0.03 s apart
        builder.add_span(
            r.task_span(f"task.{i + 1:06d}", "wf-1", "a", 0, None, i * 0.03, i * 0.03 + 0.01)
        )
    run = builder.snapshot()

    def segments(fig: Any) -> list[tuple[float, float]]:
        (line,) = [t for t in traces(fig, "scattergl") if t.mode == "lines"]
        xs = f.values_of(line.x)
        return list(zip(xs[0::3], xs[1::3], strict=True))

    whole = f.campaign_figure(run, bar_limit=1_000)
    assert len(segments(whole)) == 1  # 90 s over 1,500 pixels: one merged line
    zoomed = f.campaign_figure(run, bar_limit=1_000, window=(30.0, 33.0))
    shown = segments(zoomed)
    # 3 s over 1,500 pixels: every task is its own segment again.
    assert len(shown) in (100, 101)
    assert all(lo >= 29.9 and hi <= 33.1 for lo, hi in shown)
    assert all(hi - lo == pytest.approx(0.01, abs=0.003) for lo, hi in shown)
    assert list(zoomed.layout.xaxis.range) == [30.0, 33.0]
    assert "zoomed to 30.000-33.000 s" in zoomed.layout.title.text
    assert zoomed.layout.uirevision == whole.layout.uirevision == "campaign"
    # A nonsense window is ignored rather than drawing nothing.
    assert len(segments(f.campaign_figure(run, bar_limit=1_000, window=(5.0, 5.0)))) == 1


@pytest.mark.parametrize(
    ("relayout", "expected"),
    [
        ({"xaxis.range[0]": 1.5, "xaxis.range[1]": 4}, ("set", (1.5, 4.0))),
        ({"xaxis2.range": [2, 3]}, ("set", (2.0, 3.0))),
        ({"xaxis.autorange": True, "yaxis.autorange": True}, ("reset", None)),
        ({"yaxis.range[0]": 3, "yaxis.range[1]": 9}, ("keep", None)),
        ({"autosize": True}, ("keep", None)),
        ({"xaxis.range[0]": "x", "xaxis.range[1]": 2}, ("keep", None)),
        (None, ("keep", None)),
    ],
)
def test_zoom_window_reads_plotly_relayout_events(relayout: Any, expected: Any) -> None:
    assert f.zoom_window(relayout) == expected


def test_gantt_shows_segments_failures_and_dependencies() -> None:
    builder = RunBuilder("gantt")
    builder.add_span(r.session_span())
    builder.add_span(
        r.task_span("task.000001", "wf-x", "sim", 0, None, 1.0, 2.0, created=0.1, name="prep")
    )
    builder.add_span(
        r.task_span(
            "task.000002",
            "wf-x",
            "sim",
            0,
            None,
            2.5,
            3.0,
            "failed",
            created=0.2,
            depends_on=("task.000001",),
            name="run",
        )
    )
    builder.add_span(
        r.task_span(
            "task.000003",
            "wf-x",
            "sim",
            0,
            None,
            None,
            3.1,
            "failed",
            created=0.3,
            depends_on=("task.000002",),
            name="post",
        )
    )
    fig = f.gantt_figure(builder.snapshot(), "wf-x")
    running = named(fig, n.PHASE_RUN_TIME)
    assert list(running.y) == [0, 1]  # the third task never ran
    assert list(named(fig, n.PHASE_DEPENDENCY_WAIT).x) == pytest.approx([0.1] * 3, abs=1e-6)
    assert list(named(fig, "failed").y) == [1, 2]
    dependency = named(fig, "dependency")
    assert [y for y in dependency.y if y is not None] == [0, 1, 1, 2]
    assert "wf-x" in fig.layout.title.text


def test_utilisation_per_backend_and_samples() -> None:
    builder = RunBuilder("util")
    builder.add_span(r.session_span())
    for span in r.campaign_spans():
        builder.add_span(span)
    builder.add_metric_snapshot(r.metric_snapshot())
    from asyncflow.dashboard.model import ResourceSample

    for i in range(3):
        builder.add_sample(ResourceSample(r.T0 + i, "node-1", 10.0 * i, 50.0, None))
    fig = f.utilisation_figure(builder.snapshot())
    assert list(named(fig, "local GPU busy").y) == c.busy_steps(builder.snapshot(), "gpu").values
    assert set(named(fig, f"local GPU capacity {r.GPU_CAPACITY} (recorded)").y) == {4}
    assert list(named(fig, "node-1 CPU %").y) == [0.0, 10.0, 20.0]
    assert not [t for t in fig.data if t.name == "node-1 GPU %"]


def test_summary_numbers() -> None:
    s = c.summarize(r.campaign())
    assert s.states["completed"] == 4 and s.states["failed"] == 1
    assert s.failures == [("ValueError", 1, "task.000005", "evaluation set is empty")]
    (step,) = s.by_task_name
    assert step.count == 5 and step.max == pytest.approx(2.5)
    assert s.makespan == pytest.approx(6.5 - 0.5)
    # 6.5 GPU-seconds busy of 4 GPUs over the 7 s session
    assert s.occupancy["gpu"] == pytest.approx((0.5 + 5.0 + 1.0) / (4 * 7.0), rel=1e-6)
    fig = f.summary_figure(r.campaign())
    assert list(named(fig, "failed").y) == [1, 0, 0]  # evaluate, simulate, train


def test_notices() -> None:
    builder = RunBuilder("failed run")
    for i in range(2):
        builder.add_span(r.task_span(f"task.00000{i}", "wf", "t", 0, None, 1.0, 2.0, "failed"))
    (text,) = c.notices(builder.snapshot())
    assert text == "Every task of this run failed (2): ValueError x2."
    assert c.notices(RunBuilder("empty").snapshot()) == [
        "No tasks recorded yet: the page updates as the run goes on."
    ]


def test_envelope_keeps_peaks() -> None:
    steps = c.Steps([float(i) for i in range(10_000)], [i % 7 for i in range(10_000)])
    small = c.envelope(steps, 100)
    assert len(small.times) == 100 and small.peak == 6 and min(small.values[:-1]) == 6


def _envelope_by_steps(steps: c.Steps, max_points: int) -> c.Steps:
    """The envelope the plain way: each step raises every bin it covers."""
    if len(steps.times) <= max_points or max_points < 2:
        return steps
    first, last = steps.times[0], steps.times[-1]
    width = (last - first) / (max_points - 1) or 1.0
    peaks = [0] * max_points
    times = steps.times
    for i, value in enumerate(steps.values):
        lo = int((times[i] - first) / width)
        hi = int(((times[i + 1] if i + 1 < len(times) else last) - first) / width)
        for b in range(lo, min(hi, max_points - 1) + 1):
            peaks[b] = max(peaks[b], value)
    return c.Steps([first + b * width for b in range(max_points)], peaks)


@given(
    st.lists(st.tuples(st.floats(0, 1000, allow_nan=False), st.integers(-50, 50)), max_size=400),
    st.integers(2, 60),
)
def test_envelope_is_each_bins_peak(changes: list[tuple[float, int]], max_points: int) -> None:
    deltas: dict[float, int] = {}
    for t, d in changes:
        deltas[t] = deltas.get(t, 0) + d
    times, values = c.level_over_time(deltas, 1000.0)
    steps = c.Steps(times, values)
    assert c.envelope(steps, max_points) == _envelope_by_steps(steps, max_points)
    # The aggregated timeline's, from arrays.
    arrays = np.array(times, dtype=np.float64), np.array(values, dtype=np.int64)
    assert _busy.envelope(*arrays, max_points) == _envelope_by_steps(steps, max_points)
