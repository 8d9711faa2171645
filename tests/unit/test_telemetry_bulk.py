"""Instant tasks' durations, counted into the histograms in bulk (``InstantTotals``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from asyncflow.telemetry import names
from asyncflow.telemetry._aggregate import FOLD_AT, Histograms, InstantTotals, consistent
from asyncflow.telemetry._recorder import Recorder


class _Task:
    """A task as the observer sees it (the TaskInfo protocol)."""

    uid = "task.000003"
    name = "train"
    kind = "function"
    workflow_id = None
    workflow_name = None
    task_description: dict[str, Any] = {}


class _Sink:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def write(self, record: tuple[Any, ...]) -> None:
        self.records.append(record)


def _points(hist: Histograms) -> list[tuple[Any, ...]]:
    return [
        (tuple(sorted(p["attributes"].items())), p["count"], p["bucket_counts"])
        for p in hist.points()
    ]


@pytest.mark.parametrize("tasks", [5, FOLD_AT + 7])
def test_instant_tasks_count_as_if_counted_one_by_one(tasks: int) -> None:
    """Tasks ready as they were created that ran for no time (a dry run)
    leave their totals to be counted in bulk: the histograms, as read, and
    the run statistics hold what counting each task at its end gives, both
    while the values are held and once they are folded into the rows."""
    recorder = Recorder("sess", "node", tasks, None)
    recorder.attach(_Sink())
    bounds = recorder.task_duration.bounds
    spans = [recorder.task_created(_Task(), "noop", None, None, True) for _ in range(tasks)]
    recorder.submitted_all(spans)
    now = time.time_ns()
    for number, span in enumerate(spans):
        # Totals spread over the buckets: from microseconds to minutes.
        span.span_start = span.span_resolved = now - 1_000 * 3 ** (number % 17)
        recorder.completed(span, False, ())
    shape = spans[0].span_shape
    assert shape is not None and shape.instant is not None
    # The first task of its kind took the one-by-one way; the rest are held
    # until FOLD_AT of them are.
    assert len(shape.instant.values) == (tasks - 1) % FOLD_AT

    expected = {
        name: Histograms(name, hist.labels, bounds)
        for name, hist in (
            ("total", recorder.task_duration),
            ("queue", recorder.queue_duration),
            ("run", recorder.run_duration),
        )
    }
    for span in spans:
        if span is not spans[0]:  # it waited its whole time and ran for none
            assert span.span_started == span.span_end and span.span_resolved == span.span_start
        expected["total"].record(shape.keys()[1], (span.span_end - span.span_start) / 1e9)
        expected["queue"].record(shape.keys()[0], (span.span_started - span.span_resolved) / 1e9)
        expected["run"].record(shape.keys()[2], (span.span_end - span.span_started) / 1e9)
    for name, hist in (
        ("total", recorder.task_duration),
        ("queue", recorder.queue_duration),
        ("run", recorder.run_duration),
    ):
        assert _points(hist) == _points(expected[name]), name
        (point,) = hist.points()
        (want,) = expected[name].points()
        assert point["sum"] == pytest.approx(want["sum"], rel=1e-12), name
    first_run = (spans[0].span_end - spans[0].span_started) / 1e9
    assert recorder.run_totals() == [tasks, first_run, 0.0, first_run]
    assert recorder.active_tasks[(names.STATE_PENDING, "noop")] == 0


def test_a_reader_never_sees_values_in_the_row_and_held_at_once() -> None:
    """A reader on another thread waits while the loop's thread folds, so a
    value counts once: in the row or among the held values, never both."""
    hists = tuple(Histograms(name, ("k",), (1.0, 2.0)) for name in ("q", "t", "r"))
    rows = (hists[0].row(("a",)), hists[1].row(("a",)), hists[2].row(("a",)))
    totals = InstantTotals(rows, hists, (("a",), ("a",), ("a",)), [0, 0.0, 0.0, 0.0])  # type: ignore[arg-type]
    totals.values.extend([500_000_000, 1_500_000_000])
    totals.folds += 1  # as fold() does, before it moves the values
    got: list[tuple[list[Any], list[list[int]]]] = []
    reader = threading.Thread(target=lambda: got.append(consistent(rows[1], [totals])))
    reader.start()
    try:
        # Half-way through a fold: the values in the row, and still held.
        rows[1][0] += 1
        rows[1][1] += 1
        rows[1][-2] += 2
        assert not got
        del totals.values[:]
        totals.folds += 1
    finally:
        reader.join(10)
    ((row, held),) = got
    assert (row[:2], row[-2], held) == ([1, 1], 2, [[]])
    assert hists[1].points()[0]["count"] == 2


def test_fold_moves_the_values_into_every_row_once() -> None:
    hists = tuple(Histograms(name, ("k",), (1.0, 2.0)) for name in ("q", "t", "r"))
    rows = (hists[0].row(("a",)), hists[1].row(("a",)), hists[2].row(("a",)))
    stats: list[float] = [3, 1.5, 0.25, 0.75]
    totals = InstantTotals(rows, hists, (("a",), ("a",), ("a",)), stats)  # type: ignore[arg-type]
    totals.values.extend([500_000_000, 1_500_000_000, 9_000_000_000])
    before = [hist.points() for hist in hists]
    totals.fold()
    assert totals.values == [] and totals.folds == 2
    assert [hist.points() for hist in hists] == before  # as read: the same
    assert rows[0][:-1] == rows[1][:-1] == [1, 1, 1, 3]
    assert rows[1][-1] == pytest.approx(11.0)
    assert rows[2] == [3, 0, 0, 3, 0.0]  # ran for no time
    assert stats == [6, 1.5, 0.0, 0.75]
