"""The aggregated campaign timeline drawn from columns is the one drawn record by record.

``_columns.timeline_of`` takes a run's records apart into arrays and
``_webgl`` draws the timeline of many tasks from them. Each part is held to
its record-by-record counterpart: the rows to ``compute.timeline_rows``,
the busy slots to ``compute.busy_steps``, the configuration table to
``compute.configuration``, the critical path to ``paths.critical_path``,
and the segments to :func:`reference_segments` below, the segments as the
dashboard drew them before the columns (a loop over the records), on the
layout 1 fixture, its layout 2 twin, every cut of it (tasks waiting, queued
and running), a torn last line, and a synthetic run of 600 instances (rows
sharing a line, a sub-line per type).
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.io as pio
import pytest

from asyncflow.dashboard import _busy as b
from asyncflow.dashboard import _webgl as w
from asyncflow.dashboard import compute as c
from asyncflow.dashboard import figures as f
from asyncflow.dashboard import open_source, paths
from asyncflow.dashboard._attempts import CACHE_HIT_NAME
from asyncflow.dashboard._columns import rows_of, timeline_of
from asyncflow.dashboard._plot import merge_segments, type_colours, typed_array
from asyncflow.dashboard.model import (
    STATE_CANCELED,
    STATE_COMPLETED,
    STATE_FAILED,
    STATE_PENDING,
    STATE_QUEUED,
    STATE_RUNNING,
    STATE_WAITING,
    Run,
    SpanRecord,
    status,
)
from asyncflow.telemetry import names as n

from .test_checkpoint_layouts import LAYOUT1, layout2_lines

_MARKS = {
    STATE_FAILED: "failed",
    "dependency-failed": "skipped: a dependency failed",
    STATE_CANCELED: "canceled",
}


def reference_segments(
    rows: list[c.Row], run: Run, height: int, window: tuple[float, float] | None
) -> tuple[list[dict[str, Any]], int]:
    """The aggregated timeline's traces, computed record by record (x, y and names)."""
    colours = type_colours(c.workflow_types(run))
    group = max(1, math.ceil(len(rows) / w.ROW_PIXELS))
    now = run.rel(run.end)
    low, high = window if window is not None else (-math.inf, math.inf)
    pixel = (high - low) / w.PIXELS if window is not None else now / w.PIXELS
    spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    waiting: dict[str, dict[tuple[int, str], list[tuple[float, float]]]] = {
        STATE_WAITING: defaultdict(list),
        STATE_QUEUED: defaultdict(list),
    }
    marks: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in _MARKS}
    never: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    for index, row in enumerate(rows):
        key = (index // group, row.workflow_type)
        line = spans[key]
        for task in row.tasks:
            span = None
            if task.started is not None:
                end = task.finished if task.finished is not None else run.end
                span = (run.rel(task.started), run.rel(end))
                if span[1] >= low - pixel and span[0] <= high + pixel:
                    line.append((span[0], max(span[1], span[0] + pixel)))
            state = status(task)
            if state in marks:
                end = run.rel(task.finished if task.finished is not None else run.end)
                if low <= end <= high:
                    marks[state][0].append(end)
                    marks[state][1].append(index)
            elif span is None and state in waiting:
                begin = run.rel(task.resolved if task.resolved is not None else task.created)
                if now >= low - pixel and begin <= high + pixel:
                    waiting[state][key].append((begin, max(now, begin + pixel)))
            elif span is None and state == STATE_COMPLETED:
                # Completed without running: a cache hit, or a cross.
                end = run.rel(task.finished if task.finished is not None else run.end)
                if low <= end <= high:
                    hit = task.cache == n.CACHE_HIT
                    never[hit][0].append(end)
                    never[hit][1].append(index)
    kinds = sorted(colours)
    out: list[dict[str, Any]] = []
    drawn = 0
    for state, found in waiting.items():
        xs, ys, count = merge_segments(found, kinds, group, pixel)
        if count:
            drawn += count
            out.append(
                {
                    "x": typed_array([x for v in xs.values() for x in v]),
                    "y": typed_array([y for v in ys.values() for y in v]),
                    "legendgroup": state,
                }
            )
    xs, ys, count = merge_segments(spans, kinds, group, pixel)
    drawn += count
    out += [
        {"x": typed_array(xs[k]), "y": typed_array(ys[k]), "legendgroup": k} for k in sorted(xs)
    ]
    for state, (mark_x, mark_y) in marks.items():
        if mark_x:
            out.append({"x": typed_array(mark_x), "y": typed_array(mark_y), "legendgroup": state})
    hit_x, hit_y = never[True]
    if hit_x:
        out.append({"x": hit_x, "y": [float(y) for y in hit_y], "legendgroup": CACHE_HIT_NAME})
    ran_x, ran_y = never[False]
    if ran_x:
        out.append(
            {"x": typed_array(ran_x), "y": typed_array(ran_y), "legendgroup": STATE_COMPLETED}
        )
    return out, drawn


def drawn(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """x, y and legend group of each trace, as its JSON gives them."""
    return [{k: json.loads(json.dumps(t))[k] for k in ("x", "y", "legendgroup")} for t in traces]


def assert_same_timeline(run: Run, views: list[dict[str, Any]]) -> None:
    tl = timeline_of(run)
    all_rows = rows_of(tl)
    colours = type_colours(c.workflow_types(run))
    # Configuration, busy slots, capacities, critical path: as the records give them.
    assert w.configuration(tl, all_rows) == c.configuration(run)
    for kind in c.KINDS:
        times, values = b.busy_steps(tl, kind)
        whole = c.busy_steps(run, kind)
        assert c.Steps(times.tolist(), values.tolist()) == whole
        for points in (2, 7, 50):
            assert b.steps(tl, kind, points) == (whole.peak, c.envelope(whole, points))
    busy = {kind: c.busy_steps(run, kind) for kind in c.KINDS}
    peaks = {kind: steps.peak for kind, steps in busy.items()}
    for given in (None, {"gpu": 3}):
        assert b.capacities(tl, given, peaks) == c.capacities(run, given, steps=busy)
    found = w.critical_path(tl)
    want = paths.critical_path(run)
    assert (found[0] if found else None) == want
    for view in views:
        types, states = view.get("types"), view.get("states")
        window = view.get("window")
        rows = c.timeline_rows(run, types, states)
        mine = rows_of(tl, types, states)
        assert mine.keys == [r.key for r in rows]
        assert mine.types == [r.workflow_type for r in rows]
        assert mine.starts == [r.start for r in rows]
        assert [tl.uids[i] for i in mine.tasks] == [t.uid for r in rows for t in r.tasks]
        if not rows:
            continue
        traces, count = w.segment_traces(tl, mine, colours, 640, window)
        assert (drawn(traces), count) == reference_segments(rows, run, 640, window), view


VIEWS: list[dict[str, Any]] = [
    {},
    {"states": ["completed", "running"]},
    {"states": ["failed", "dependency-failed", "waiting", "queued", "canceled"]},
    {"types": ["simulate"]},
    {"window": (0.05, 0.4)},
    {"window": (3.0, 9.0), "states": ["running", "queued", "waiting", "completed"]},
]


@pytest.fixture
def layout2(tmp_path: Path) -> Path:
    path = tmp_path / "run.telemetry.jsonl"
    path.write_text("".join(layout2_lines()))
    return path


def test_the_fixture_run_of_either_layout(layout2: Path) -> None:
    """Failures and a cascade, a retried task, a block, slots, cache hits, workflows."""
    for path in (LAYOUT1, layout2):
        run = open_source(path).poll()
        assert run.blocks and any(t.slots for t in run.tasks)
        assert_same_timeline(run, VIEWS)


def test_every_cut_of_the_run_and_a_torn_last_line(layout2: Path, tmp_path: Path) -> None:
    """A live view: tasks waiting, queued and running at every point of the run."""
    lines = layout2_lines()
    cut = tmp_path / "cut.telemetry.jsonl"
    live = 0
    for k in range(2, len(lines)):
        torn = lines[k][: len(lines[k]) // 2]
        cut.write_text("".join(lines[:k]) + torn)
        run = open_source(cut).poll()
        assert any("incomplete" in p for p in run.problems) == bool(torn)
        assert_same_timeline(run, VIEWS[:1] if k % 3 else VIEWS[2:3])
        live += sum(t.finished is None for t in run.tasks)
    assert live > 50


def synthetic_run(instances: int, seed: int = 7) -> Run:
    """Chains of four tasks per instance; some failed, cascaded, canceled, unfinished."""
    rng = random.Random(seed)
    tasks: list[SpanRecord] = []
    workflows: list[SpanRecord] = []
    start, now = 1_000.0, 1_060.0
    for i in range(instances):
        kind = ("simulate", "analyze", "train")[i % 3]
        wf = f"wf-{i:04d}"
        t = start + rng.uniform(0, 40)
        workflows.append(
            SpanRecord(wf, "workflow", kind, wf, kind, created=t, finished=t + 10, span_id=wf)
        )
        previous: list[str] = []
        for j in range(4):
            uid = f"task.{i:04d}.{j}"
            created = t + j * 0.01
            resolved = created + rng.uniform(0, 1)
            started = resolved + rng.uniform(0, 2)
            finished: float | None = started + rng.choice([0.0001, 0.5, 3.0])
            state, error = STATE_COMPLETED, ""
            roll = rng.random()
            fields: dict[str, Any] = {"resolved": resolved, "started": started}
            if roll < 0.05:
                state, error = STATE_FAILED, "ValueError"
            elif roll < 0.08:
                state, error, fields = STATE_FAILED, "DependencyFailureError", {}
            elif roll < 0.1:
                state, fields = STATE_CANCELED, {"resolved": resolved}
            elif roll < 0.13:
                state, finished, fields = STATE_PENDING, None, {}
            elif roll < 0.16:
                state, finished, fields = STATE_PENDING, None, {"resolved": resolved}
            elif roll < 0.2:
                state, finished = STATE_RUNNING, None
            elif roll < 0.23:  # completed without running: a result from the cache
                fields = {"resolved": resolved, "cache": n.CACHE_HIT}
            elif roll < 0.24:  # completed without running, no cache hit
                fields = {"resolved": resolved}
            gpus = 1 if kind == "train" else 0
            slots = (f"gpu:{i % 3}",) if gpus and roll > 0.5 else ()
            tasks.append(
                SpanRecord(
                    uid,
                    "task",
                    "step",
                    wf,
                    kind,
                    state=state,
                    created=created,
                    finished=finished,
                    error_type=error,
                    depends_on=tuple(previous),
                    gpus=gpus,
                    slots=slots,
                    **fields,
                )
            )
            previous = [uid]
    return Run(tasks=tuple(tasks), workflows=tuple(workflows), start=start, end=now, priorities={})


def test_a_run_of_many_instances_sharing_lines() -> None:
    run = synthetic_run(600)
    assert math.ceil(len(c.timeline_rows(run)) / w.ROW_PIXELS) > 1
    assert {status(t) for t in run.tasks} >= {"waiting", "queued", "running", "canceled"}
    assert_same_timeline(run, VIEWS)


def test_the_figure_of_many_tasks_is_the_aggregated_one() -> None:
    run = synthetic_run(600)
    fig = f.campaign_figure(run)
    assert {t.type for t in fig.data} >= {"scattergl", "table"}
    assert "aggregated to screen resolution" in fig.layout.title.text
    layout = json.loads(pio.to_json(fig))["layout"]
    assert layout["meta"]["rows"] == [r.key for r in c.timeline_rows(run)]


@pytest.mark.parametrize("instances", [30, 600])
def test_cache_hits_are_marked_whether_or_not_the_timeline_is_aggregated(instances: int) -> None:
    """API.md section 10: a result from the cache shows, with every task drawn or aggregated."""
    run = synthetic_run(instances)
    hits = [t for t in run.tasks if t.cache == n.CACHE_HIT and t.started is None]
    assert hits
    marks = []
    for bar_limit in (0, 10 * len(run.tasks)):
        fig = f.campaign_figure(run, bar_limit=bar_limit)
        assert ("aggregated" in fig.layout.title.text) == (bar_limit == 0)
        found = [t for t in fig.data if t.name == CACHE_HIT_NAME]
        assert len(found) == 1
        marks.append(sorted(zip(found[0].x, found[0].y, found[0].hovertext, strict=True)))
    assert marks[0] == marks[1]
    assert len(marks[0]) == len(hits)
    assert {text.split(" ")[0] for _, _, text in marks[0]} == {t.uid for t in hits}


def test_columns_of_mapping_values_match_the_records() -> None:
    run = synthetic_run(30)
    tl = timeline_of(run)
    by_uid: Mapping[str, SpanRecord] = {t.uid: t for t in run.tasks}
    for i, uid in enumerate(tl.uids):
        task = by_uid[uid]
        assert tl.record(i) is task
        assert tl.cpus[i] == task.slot_count("cpu") and tl.gpus[i] == task.slot_count("gpu")
        assert math.isnan(tl.started[i]) == (task.started is None)
