"""The aggregated campaign timeline is drawn from a :class:`Timeline` alone, as it was drawn before.

A reader that gives a run's timeline as columns gives it a lazy task
sequence: taking the tasks one by one would cost what the columns save. The
figure of many tasks (aggregated, or a few of them left by a filter) is
built here from runs whose ``tasks`` refuse iteration and allow only a
handful of look-ups, and compared with ``tests/data/campaign_figure.json``:
the JSON of the same figures as the code before this change drew them
(commit a18a1d7, the tasks read record by record), without the template,
which is plotly's own (compared with plotly's).

The runs hold what the figure has to get right: several backends, GPU and
CPU slots, retries on other slots, failures and their cascades,
cancellations, cache hits, tasks waiting, queued and running, blocks,
recorded slot snapshots, and names that are markup (``<b>``, quotes, ``&``).
After a deliberate change to the figure, rewrite the data file with
``python -m tests.unit.test_dashboard_campaign`` and say why in the commit.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from asyncflow.dashboard import _timeline, figures, paths
from asyncflow.dashboard._columns import Timeline, timeline_of
from asyncflow.dashboard._plot import TEMPLATE
from asyncflow.dashboard.model import (
    STATE_CANCELED,
    STATE_COMPLETED,
    STATE_FAILED,
    STATE_PENDING,
    STATE_RUNNING,
    Attempt,
    Run,
    SlotSnapshot,
    SpanRecord,
)
from asyncflow.telemetry import names as n

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "campaign_figure.json"
TYPES = ("simulate", "<b>analyze</b>", 'train "x" & y')
NAMES = ("step", "<i>prep</i>", '"quoted" & co')
BACKENDS = ("local", "dask <one>")


def hostile_run(instances: int, *, snapshots: bool = False) -> Run:
    """Chains of five tasks per instance, with every kind of task the figure draws."""
    start, end = 1_000.0, 1_100.0
    tasks: list[SpanRecord] = []
    workflows: list[SpanRecord] = []
    blocks: list[SpanRecord] = []
    for i in range(instances):
        kind = TYPES[i % 3]
        wf = f"wf-{i:03d}" if i % 7 else f"wf-{i:03d} <a href='x'>&amp;</a>"
        t0 = start + (i * 37 % 50) * 0.8
        workflows.append(SpanRecord(wf, "workflow", kind, wf, kind, created=t0, finished=t0 + 9))
        previous: tuple[str, ...] = ()
        for j in range(5):
            uid = f"task.{i:03d}.{j}"
            created = t0 + j * 0.5
            resolved: float | None = created + 0.1 * (i % 3)
            started: float | None = resolved + 0.05 * j if resolved is not None else None
            finished: float | None = started + 0.2 + 0.1 * (i % 4) if started else None
            gpus = 1 if kind == TYPES[2] else 0
            slots: tuple[str, ...] = ()
            if i % 2:
                slots = (f"gpu:{i % 2}",) if gpus else (f"cpu:{(i + j) % 4}",)
            fields: dict[str, Any] = {}
            state, error, message = STATE_COMPLETED, "", ""
            roll = (i * 5 + j) % 23
            if roll == 1:
                state, error, message = STATE_FAILED, "ValueError", "bad <script>x</script> & more"
            elif roll == 2 and previous:
                state, error, started, finished = STATE_FAILED, "DependencyFailureError", None, t0
                message = "a dependency failed"
            elif roll == 3:
                state = STATE_CANCELED  # canceled while it ran
            elif roll == 4:
                state, started, finished = STATE_CANCELED, None, created + 1  # never ran
            elif roll == 5:
                state, finished = STATE_RUNNING, None
            elif roll == 6:
                state, started, finished = STATE_PENDING, None, None  # queued
            elif roll == 7:
                state, resolved, started, finished = STATE_PENDING, None, None, None  # waiting
            elif roll == 8:  # a result from the cache
                started = None
                fields = {"cache": n.CACHE_HIT, "cache_source": f"earlier <b>{uid}</b>"}
            elif roll == 9:
                started = None  # completed without running, no cache hit
            elif roll == 10 and started is not None and finished is not None:
                # Retried: the first attempt ran on another slot.
                first = (f"gpu:{2 + i % 3}",) if gpus else (f"cpu:{5 + i % 3}",)
                fields = {
                    "attempts": (
                        Attempt(1, started, started + 0.1, "RuntimeError", "<i>try</i>", first),
                        Attempt(2, started + 0.3, finished + 0.3, "", "", slots),
                    )
                }
                finished += 0.3
            tasks.append(
                SpanRecord(
                    uid,
                    "task",
                    NAMES[(i + j) % 3],
                    wf,
                    kind,
                    backend=BACKENDS[j % 2],
                    state=state,
                    created=created,
                    resolved=resolved,
                    started=started,
                    finished=finished,
                    slots=slots,
                    cpus=1,
                    gpus=gpus,
                    error_type=error,
                    message=message,
                    depends_on=previous,
                    **fields,
                )
            )
            previous = (uid,)
    # A block outside any workflow, its tasks in a row of their own, and a bare task.
    blocks.append(SpanRecord("block.1", "block", "<b>stage</b>", "block.1", created=start + 2))
    tasks += [
        SpanRecord(
            f"task.b.{j}",
            "task",
            "in <block>",
            "block.1",
            created=start + 2 + j,
            resolved=start + 2 + j,
            started=start + 2.5 + j,
            finished=start + 3 + j,
            state=STATE_COMPLETED,
            backend=BACKENDS[0],
        )
        for j in range(3)
    ]
    tasks.append(
        SpanRecord(
            "task.free",
            "task",
            "free & easy",
            created=start + 1,
            resolved=start + 1,
            started=start + 1.5,
            finished=start + 60,
            state=STATE_COMPLETED,
        )
    )
    recorded = (
        SlotSnapshot(start + 5, BACKENDS[0], n.KIND_CPU, 3, 5),
        SlotSnapshot(start + 5, BACKENDS[1], n.KIND_CPU, 1, 3),
        SlotSnapshot(start + 5, BACKENDS[1], n.KIND_GPU, 1, 1),
    )
    return Run(
        source="hostile",
        tasks=tuple(tasks),
        blocks=tuple(blocks),
        workflows=tuple(workflows),
        slot_snapshots=recorded if snapshots else (),
        start=start,
        end=end,
        priorities={TYPES[0]: 2, TYPES[1]: 1},
    )


# Instances, recorded slot snapshots, and the busy steps' points (fewer than
# the steps: their envelope, and a smaller data file).
RUNS = {
    "few rows": (24, False, _timeline.MAX_STEPS),
    "many rows": (170, False, 50),
    "recorded slots": (60, True, 50),
}
VIEWS: dict[str, dict[str, Any]] = {
    "all": {},
    "types": {"types": [TYPES[1], TYPES[2]]},
    "states": {"states": ["failed", "dependency-failed", "queued", "waiting", "canceled"]},
    "window": {"window": (10.0, 30.0)},
    "given capacity": {"capacity": {"gpu": 6, "cpu": 16}},
}
# Up to BAR_LIMIT tasks: a bar per task, from the records.
LABELLED: dict[str, dict[str, Any]] = {
    "all": {},
    "states": {"states": ["failed", "dependency-failed", "queued", "waiting", "canceled"]},
}

# Filters that leave a few tasks of a run of many: bars again, for those tasks.
FEW_LIMIT = 60
FEW_OF_MANY: dict[str, dict[str, Any]] = {
    "states": VIEWS["states"],
    "one type": {"types": [TYPES[1]], "capacity": {"gpu": 6}},
    "nothing": {"types": ["nothing"]},
}


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """The figure's JSON as Dash sends it, without plotly's template."""
    out: dict[str, Any] = json.loads(pio.to_json(fig, validate=False))
    out["layout"].pop("template")
    return out


def drawn_before() -> dict[str, Any]:
    """What the data file holds: every view of every run, from the records."""
    out = {}
    for name, (instances, snapshots, points) in RUNS.items():
        run = hostile_run(instances, snapshots=snapshots)
        for view, options in VIEWS.items():
            fig = figures.campaign_figure(run, bar_limit=10, max_steps=points, **options)
            out[f"{name}: {view}"] = figure_json(fig)
    run = hostile_run(RUNS["few rows"][0])
    for view, options in LABELLED.items():
        out[f"labelled: {view}"] = figure_json(figures.campaign_figure(run, **options))
    for view, options in FEW_OF_MANY.items():
        fig = figures.campaign_figure(run, bar_limit=FEW_LIMIT, **options)
        out[f"few of many: {view}"] = figure_json(fig)
    return out


class LazyTasks(Sequence[SpanRecord]):
    """Tasks as a columnar reader gives them: counted at once, never walked."""

    def __init__(self, tasks: Sequence[SpanRecord], allowed: int) -> None:
        self._tasks = tasks
        self.allowed = allowed

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[SpanRecord]:
        raise AssertionError("the figure walked the tasks")

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, int):
            raise AssertionError("the figure took a slice of the tasks")
        self.allowed -= 1
        if self.allowed < 0:
            raise AssertionError("the figure took more than a handful of tasks")
        return self._tasks[index]


def lazy(run: Run, allowed: int) -> tuple[Run, Timeline]:
    """``run`` with lazy tasks, and its timeline whose records come from them."""
    tl = timeline_of(run)
    tasks = LazyTasks(run.tasks, allowed)
    lazy_run = dataclasses.replace(run, tasks=tasks)  # type: ignore[arg-type]
    return lazy_run, dataclasses.replace(tl, run=lazy_run, record=tasks.__getitem__)


@pytest.fixture(scope="module")
def before() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(GOLDEN.read_text())
    return found


@pytest.mark.parametrize("name", list(RUNS))
def test_the_figure_from_columns_is_the_one_drawn_from_records(
    name: str, before: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    instances, snapshots, points = RUNS[name]
    run = hostile_run(instances, snapshots=snapshots)
    # A handful: the critical path's tasks, the retried ones, those that completed
    # without running (their marks say whether the cache gave the result).
    critical = paths.critical_path(run)
    assert critical is not None
    retried = sum(bool(t.attempts) for t in run.tasks)
    never_ran = sum(t.state == STATE_COMPLETED and t.started is None for t in run.tasks)
    handful = len(critical.tasks) + retried + never_ran
    assert retried and never_ran and handful < len(run.tasks) / 4
    template = json.loads(pio.to_json(go.Figure(layout={"template": TEMPLATE})))
    for view, options in VIEWS.items():
        lazy_run, tl = lazy(run, handful)
        monkeypatch.setattr(_timeline, "timeline_of", lambda _run, tl=tl: tl)
        fig = figures.campaign_figure(lazy_run, bar_limit=10, max_steps=points, **options)
        assert figure_json(fig) == before[f"{name}: {view}"], view
        shipped = json.loads(pio.to_json(fig, validate=False))["layout"]["template"]
        assert shipped == template["layout"]["template"]


def test_the_labelled_figure_is_the_one_drawn_before(before: dict[str, Any]) -> None:
    """Up to BAR_LIMIT tasks, a bar per task: the same frame, busy slots and table."""
    run = hostile_run(RUNS["few rows"][0])
    for view, options in LABELLED.items():
        fig = figures.campaign_figure(run, **options)
        assert figure_json(fig) == before[f"labelled: {view}"], view


def test_a_few_tasks_of_many_are_drawn_from_their_records_alone(
    before: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter that leaves up to ``bar_limit`` tasks of a larger run: a bar per
    task, from those tasks' records; the rest from the columns."""
    run = hostile_run(RUNS["few rows"][0])
    assert len(run.tasks) > FEW_LIMIT
    critical = paths.critical_path(run)
    assert critical is not None
    retried = sum(bool(t.attempts) for t in run.tasks)
    for view, options in FEW_OF_MANY.items():
        lazy_run, tl = lazy(run, FEW_LIMIT + len(critical.tasks) + retried)
        monkeypatch.setattr(_timeline, "timeline_of", lambda _run, tl=tl: tl)
        fig = figures.campaign_figure(lazy_run, bar_limit=FEW_LIMIT, **options)
        assert figure_json(fig) == before[f"few of many: {view}"], view
    assert not any(t.type == "scattergl" for t in fig.data)


@pytest.mark.parametrize("bar_limit", [10, _timeline.BAR_LIMIT])
def test_plotly_checking_the_figure_changes_nothing(bar_limit: int) -> None:
    """The figure is built as data that plotly does not check: checked, it is the same.

    Plotly's checks reject a property or value it does not know and coerce
    the values it keeps; the figure's data must be what they would have made.
    """
    for instances, snapshots, points in RUNS.values():
        run = hostile_run(instances, snapshots=snapshots)
        for options in VIEWS.values():
            fig = figures.campaign_figure(run, bar_limit=bar_limit, max_steps=points, **options)
            checked = go.Figure(fig.to_plotly_json())  # raises on anything plotly rejects
            assert json.loads(pio.to_json(checked)) == json.loads(pio.to_json(fig)), options


if __name__ == "__main__":  # rewrite the data file (a deliberate change to the figure)
    GOLDEN.write_text(json.dumps(drawn_before(), sort_keys=True) + "\n")
    sys.exit(0)
