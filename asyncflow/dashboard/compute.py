"""What the figures show, as plain numbers: rows, busy slots, capacities, summary.

Pure: records in, dataclasses and lists out; no plotly, no I/O. Times are
seconds since the session started.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping

from asyncflow.telemetry import names as n

from .model import (
    FINAL_STATES,
    STATE_DEPENDENCY_FAILED,
    STATE_FAILED,
    STATUSES,
    Run,
    SpanRecord,
    phases,
    status,
)

__all__ = [
    "ENVELOPE_POINTS",
    "KINDS",
    "NO_WORKFLOW",
    "Capacity",
    "DurationStats",
    "Row",
    "Steps",
    "Summary",
    "TypeConfig",
    "busy_steps",
    "capacities",
    "configuration",
    "count_states",
    "envelope",
    "failure_sentence",
    "headline",
    "notices",
    "row_key",
    "summarize",
    "summary_tables",
    "timeline_rows",
    "workflow_records",
    "workflow_types",
]

KINDS = (n.KIND_GPU, n.KIND_CPU)
NO_WORKFLOW = "(no workflow)"
ENVELOPE_POINTS = 2_000  # step functions with more changes show per-bin peaks


@dataclasses.dataclass(frozen=True)
class Row:
    """One workflow instance of the campaign timeline."""

    key: str
    workflow_type: str
    start: float
    tasks: tuple[SpanRecord, ...]

    @property
    def label(self) -> str:
        """``"wf-1a2b (simulate)"``."""
        return f"{self.key} ({self.workflow_type})" if self.workflow_type else self.key


def _enclosing(run: Run) -> dict[str, str]:
    """Block uid -> the id of the workflow or block it was called in (``""``: none known).

    From the parent span when that span is known, else from the block's
    ``scope`` (its created line): a live view has the one or the other.
    """
    by_span = {b.span_id: b.uid for b in run.blocks if b.span_id}
    by_span.update({w.span_id: w.uid for w in run.workflows if w.span_id})
    return {b.uid: by_span.get(b.parent_id) or b.scope for b in run.blocks}


def _instance(uid: str, up: Mapping[str, str], workflows: Collection[str]) -> str:
    """The workflow instance of block ``uid``: up through blocks to a workflow or the top."""
    seen = {uid}
    while True:
        outer = up.get(uid, "")
        if not outer or outer in seen:
            return uid
        if outer in workflows or outer not in up:
            return outer  # a workflow (its span may not be written yet)
        seen.add(outer)
        uid = outer


def row_key(run: Run) -> dict[str, str]:
    """Block uid -> the row (workflow instance) its tasks are drawn in.

    A block gives its tasks its own uid as workflow id. It belongs to the
    innermost ``workflow_scope`` around it, through any depth of blocks, or,
    outside every scope, is an instance of its own when it is the outermost
    block. Other ids (workflow ids) are their own row.
    """
    up = _enclosing(run)
    workflows = {w.uid for w in run.workflows}
    return {uid: _instance(uid, up, workflows) for uid in up}


def _row_types(run: Run, keys: Mapping[str, str]) -> dict[str, str]:
    """Row key -> workflow type, for rows that are a recorded workflow or outermost block."""
    types = {w.uid: w.workflow_type for w in run.workflows}
    for b in run.blocks:
        if keys.get(b.uid) == b.uid:
            types.setdefault(b.uid, b.workflow_type or b.name)
    return types


def timeline_rows(
    run: Run,
    types: Collection[str] | None = None,
    states: Collection[str] | None = None,
) -> list[Row]:
    """The rows of the campaign timeline, in the order their instances started.

    Args:
        run: the run.
        types: only these workflow types (``None``: all).
        states: only tasks in these states (``None``: all), as
            :func:`~asyncflow.dashboard.model.status` names them.
    """
    keys = row_key(run)
    known = _row_types(run, keys)
    grouped: dict[str, list[SpanRecord]] = defaultdict(list)
    row_type: dict[str, str] = {}
    for task in run.tasks:
        wf_id = task.workflow_id
        key = keys.get(wf_id, wf_id) or NO_WORKFLOW
        if not row_type.get(key):
            row_type[key] = known.get(key) or task.workflow_type
        if states is None or status(task) in states:
            grouped[key].append(task)
    rows = [
        Row(key, row_type[key], min([t.created for t in tasks]), tuple(tasks))
        for key, tasks in grouped.items()
        if types is None or row_type[key] in types
    ]
    rows.sort(key=lambda r: (r.start, r.key))
    return rows


def workflow_types(run: Run, rows: Iterable[Row] | None = None) -> list[str]:
    """Every workflow type of the run, sorted (the colour order).

    Args:
        run: the run.
        rows: its unfiltered :func:`timeline_rows`, when already at hand.
    """
    return sorted({r.workflow_type for r in (timeline_rows(run) if rows is None else rows)})


def workflow_records(run: Run, key: str) -> list[SpanRecord]:
    """The tasks and blocks of one timeline row, in the order they were created."""
    keys = row_key(run)
    blocks = [b for b in run.blocks if b.uid != key and keys.get(b.uid, b.uid) == key]
    tasks = [t for t in run.tasks if (keys.get(t.workflow_id, t.workflow_id) or NO_WORKFLOW) == key]
    records = blocks + tasks
    records.sort(key=lambda r: (r.created, r.uid))
    return records


# ---------------------------------------------------------------- busy slots
@dataclasses.dataclass(frozen=True)
class Steps:
    """A step function: ``values[i]`` holds from ``times[i]`` until ``times[i + 1]``."""

    times: list[float]
    values: list[int]

    def at(self, t: float) -> int:
        """The value at time ``t``."""
        i = bisect.bisect_right(self.times, t) - 1
        return self.values[i] if i >= 0 else 0

    @property
    def peak(self) -> int:
        """The largest value."""
        return max(self.values, default=0)


def busy_steps(run: Run, kind: str, backend: str | None = None) -> Steps:
    """Busy slots of ``kind`` over time: assigned slots when known, else requested counts.

    A task holds its slots from ``started`` until ``finished`` (a running one
    until the latest time seen); a task with retries, during each attempt
    (:meth:`SpanRecord.held`).
    """
    deltas: dict[float, int] = defaultdict(int)
    origin, end = run.start, run.end
    prefix = kind + ":"
    gpu, cpu = kind == n.KIND_GPU, kind == n.KIND_CPU
    for task in run.tasks:
        started = task.started
        if started is None or (backend is not None and task.backend != backend):
            continue
        # SpanRecord.slot_count, inline: this runs once per task and kind.
        slots = task.slots
        if slots:
            count = sum(1 for s in slots if s.startswith(prefix))
        else:
            count = task.gpus if gpu else task.cpus if cpu else 0
        if not count:
            continue
        if task.attempts:
            for low, high in task.held(end):
                deltas[low - origin] += count
                deltas[high - origin] -= count
        else:
            deltas[started - origin] += count
            finished = task.finished
            deltas[(finished if finished is not None else end) - origin] -= count
    times, values = level_over_time(deltas, run.rel(end))
    return Steps(times, values)


def level_over_time(deltas: dict[float, int], until: float) -> tuple[list[float], list[int]]:
    """A step function from its changes: ``deltas[t]`` is added at time ``t``.

    Starts at 0 at time 0 (changes before it count there) and holds its
    last level until ``until``.
    """
    times, values = [0.0], [0]
    level = 0
    latest = 0.0
    for t, delta in sorted(deltas.items()):
        level += delta
        if t <= latest:
            values[-1] = level
        else:
            times.append(t)
            values.append(level)
            latest = t
    if until > times[-1]:
        times.append(until)
        values.append(values[-1])
    return times, values


def envelope(steps: Steps, max_points: int, *, bins: list[int] | None = None) -> Steps:
    """At most about ``max_points`` steps: each of equal time bins shows its peak.

    Keeps short bursts visible when a long run has too many changes to draw.
    A step holds from its bin to the bin of the next step, both included.
    ``bins``, when given, are the bins of the steps' times (computed at once
    by a caller that holds them in an array).
    """
    times, values = steps.times, steps.values
    count = len(times)
    if count <= max_points or max_points < 2:
        return steps
    first, last = times[0], times[-1]
    width = (last - first) / (max_points - 1) or 1.0
    # The bin each step starts in (non-decreasing: the times are sorted);
    # a caller with the times in an array computes them at once.
    if bins is None:
        bins = [int((t - first) / width) for t in times]
    last_bin = int((last - first) / width)
    peaks = [0] * max_points
    start = 0  # the first step starting in bin b or later
    for b in range(max_points):
        end = bisect.bisect_left(bins, b + 1, start)
        # The steps starting in this bin, and the one before them, which
        # holds until the bin of the next step.
        peak = max(values[start:end]) if end > start else 0
        if start:
            held_until = bins[start] if start < count else last_bin
            if held_until >= b and values[start - 1] > peak:
                peak = values[start - 1]
        peaks[b] = peak if peak > 0 else 0
        start = end
    return Steps([first + b * width for b in range(max_points)], peaks)


@dataclasses.dataclass(frozen=True)
class Capacity:
    """How many slots of a kind there are, and where that number comes from."""

    value: int
    source: str  # "recorded" (metric snapshots), "given" (an option), "observed" (peak use)


def _slot_index_bound(tasks: Iterable[SpanRecord], kind: str) -> int:
    prefix, bound = kind + ":", 0
    for task in tasks:
        for slot in task.all_slots():
            if slot.startswith(prefix):
                index = slot[len(prefix) :]
                if index.isdigit():
                    bound = max(bound, int(index) + 1)
    return bound


def capacities(
    run: Run,
    given: Mapping[str, int] | None = None,
    backend: str | None = None,
    steps: Mapping[str, Steps] | None = None,
    *,
    observed: Callable[[str], int] | None = None,
) -> dict[str, Capacity]:
    """Capacity per resource kind (of one backend, or summed over all).

    From the run's metric snapshots (busy + idle) when it recorded them, else
    from ``given`` (``{"gpu": 4}``), else the most slots seen in use (or the
    highest slot index assigned, plus one).

    Args:
        run: the run.
        given: capacities to use when the run recorded none.
        backend: one backend's (``None``: all summed).
        steps: the :func:`busy_steps` per kind, when already at hand.
        observed: the last of these per kind, when the caller knows it
            without the task records (the timeline's columns).
    """
    latest: dict[tuple[str, str], int] = {}
    for snap in run.slot_snapshots:
        if backend is None or snap.backend == backend:
            latest[(snap.backend, snap.kind)] = snap.busy + snap.idle
    out: dict[str, Capacity] = {}
    for kind in KINDS:
        recorded = [v for (_, k), v in latest.items() if k == kind]
        if recorded and sum(recorded):
            out[kind] = Capacity(sum(recorded), "recorded")
        elif given and given.get(kind):
            out[kind] = Capacity(int(given[kind]), "given")
        elif observed is not None:
            out[kind] = Capacity(observed(kind), "observed")
        else:
            tasks = [t for t in run.tasks if backend is None or t.backend == backend]
            used = steps[kind] if steps is not None else busy_steps(run, kind, backend)
            seen = max(used.peak, _slot_index_bound(tasks, kind))
            out[kind] = Capacity(seen, "observed")
    return out


def backends(run: Run) -> list[str]:
    """The backends that ran tasks, sorted."""
    return sorted({t.backend for t in run.tasks if t.backend})


# ---------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class TypeConfig:
    """One workflow type of the campaign, as the configuration table shows it."""

    workflow_type: str
    instances: int
    tasks: int
    cpus: str
    gpus: str
    priority: str
    depends_on: tuple[str, ...]


def _span_of(values: Iterable[int]) -> str:
    found = sorted(set(values))
    if not found:
        return "-"
    return str(found[0]) if len(found) == 1 else f"{found[0]}-{found[-1]}"


def configuration(run: Run, rows: list[Row] | None = None) -> list[TypeConfig]:
    """Per workflow type: instances, tasks, cpus and gpus per task, priority, dependencies.

    A type depends on another when one of its tasks depends on a task of an
    instance of that type.

    Args:
        run: the run.
        rows: its unfiltered :func:`timeline_rows`, when already at hand.
    """
    rows = timeline_rows(run) if rows is None else rows
    out = []
    by_type: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_type[row.workflow_type].append(row)
    tasks_of = {wf_type: [t for r in group for t in r.tasks] for wf_type, group in by_type.items()}
    depending = [t for tasks in tasks_of.values() for t in tasks if t.depends_on]
    type_of_task = {}
    if depending:
        wanted = {d for t in depending for d in t.depends_on}
        type_of_task = {t.uid: r.workflow_type for r in rows for t in r.tasks if t.uid in wanted}
    for wf_type in sorted(by_type):
        tasks = tasks_of[wf_type]
        deps = {
            type_of_task.get(d, wf_type) for t in tasks if t.depends_on for d in t.depends_on
        } - {wf_type}
        priority = run.priorities.get(wf_type)
        cpus, gpus = _slot_counts(tasks)
        out.append(
            TypeConfig(
                workflow_type=wf_type or NO_WORKFLOW,
                instances=len(by_type[wf_type]),
                tasks=len(tasks),
                cpus=_span_of(cpus),
                gpus=_span_of(gpus),
                priority="-" if priority is None else str(priority),
                depends_on=tuple(sorted(d or NO_WORKFLOW for d in deps)),
            )
        )
    return out


def _slot_counts(tasks: Iterable[SpanRecord]) -> tuple[set[int], set[int]]:
    """The CPU and GPU counts the tasks hold (``SpanRecord.slot_count``, in one pass)."""
    cpus: set[int] = set()
    gpus: set[int] = set()
    for task in tasks:
        if task.slots:
            cpus.add(task.slot_count(n.KIND_CPU))
            gpus.add(task.slot_count(n.KIND_GPU))
        else:
            cpus.add(task.cpus)
            gpus.add(task.gpus)
    return cpus, gpus


# ---------------------------------------------------------------- summary
@dataclasses.dataclass(frozen=True)
class DurationStats:
    """Run times (seconds) of one group of tasks, or durations of workflows."""

    name: str
    count: int
    mean: float
    p50: float
    p95: float
    max: float
    mean_dependency_wait: float | None = None  # tasks: the phases before they ran
    mean_queue_wait: float | None = None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stats(
    name: str, values: list[float], waits: tuple[list[float], list[float]] | None = None
) -> DurationStats:
    values = sorted(values)
    count = len(values)

    def rank(q: float) -> float:
        return values[min(count - 1, max(0, int(q * count + 0.5) - 1))]

    return DurationStats(
        name=name,
        count=count,
        mean=sum(values) / count,
        p50=rank(0.5),
        p95=rank(0.95),
        max=values[-1],
        mean_dependency_wait=_mean(waits[0]) if waits else None,
        mean_queue_wait=_mean(waits[1]) if waits else None,
    )


@dataclasses.dataclass(frozen=True)
class Summary:
    """The numbers of the summary view.

    ``failures`` are root failures (the task itself failed) by error type;
    tasks skipped because a dependency failed are ``cascades``, not failures.
    """

    states: dict[str, int]
    failures: list[tuple[str, int, str, str]]  # error type, count, an example uid, its message
    cascades: int
    by_task_name: list[DurationStats]
    by_workflow_type: list[DurationStats]
    makespan: float | None
    occupancy: dict[str, float | None]  # kind -> mean busy / capacity, session start to end
    workflows: int


def failure_sentence(states: Mapping[str, int]) -> str:
    """``"3 failed, 3 skipped because a dependency failed"`` (``""`` when none did)."""
    parts = []
    if states.get(STATE_FAILED):
        parts.append(f"{states[STATE_FAILED]} failed")
    if states.get(STATE_DEPENDENCY_FAILED):
        parts.append(f"{states[STATE_DEPENDENCY_FAILED]} skipped because a dependency failed")
    return ", ".join(parts)


def count_states(tasks: Iterable[SpanRecord]) -> dict[str, int]:
    """Tasks per :func:`~asyncflow.dashboard.model.status`, in :data:`STATUSES` order."""
    counts = dict.fromkeys(STATUSES, 0)
    for task in tasks:
        counts[status(task)] += 1
    return counts


def summarize(run: Run, given: Mapping[str, int] | None = None) -> Summary:
    """Tasks by state, root failures by error type, phases per task name, workflow durations."""
    states = count_states(run.tasks)
    failures: dict[str, list[SpanRecord]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    waits: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for task in run.tasks:
        if task.state == STATE_FAILED and status(task) == STATE_FAILED:
            failures[task.error_type or "(unknown)"].append(task)
        if task.started is not None and task.finished is not None:
            took = phases(task)
            name = task.name or "(unnamed)"
            runs[name].append(task.finished - task.started)
            for values, phase in zip(
                waits[name], (n.PHASE_DEPENDENCY_WAIT, n.PHASE_QUEUE_WAIT), strict=True
            ):
                value = took[phase]
                if value is not None:
                    values.append(value)
    rows = timeline_rows(run)
    spans = {w.uid: w for w in run.workflows}
    durations: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        wf = spans.get(row.key)
        if wf is not None and wf.finished is not None:
            durations[row.workflow_type].append(wf.finished - wf.created)
        elif all(t.state in FINAL_STATES for t in row.tasks):
            durations[row.workflow_type].append(
                max(t.finished or t.created for t in row.tasks) - row.start
            )
    finished = [t.finished for t in run.tasks if t.finished is not None]
    makespan = max(finished) - min(t.created for t in run.tasks) if finished else None
    occupancy: dict[str, float | None] = {}
    busy = {kind: busy_steps(run, kind) for kind in KINDS}
    caps = capacities(run, given, steps=busy)
    for kind in KINDS:
        steps, cap = busy[kind], caps[kind].value
        total = steps.times[-1] - steps.times[0]
        if not cap or total <= 0:
            occupancy[kind] = None
            continue
        area = sum(
            v * (steps.times[i + 1] - steps.times[i]) for i, v in enumerate(steps.values[:-1])
        )
        occupancy[kind] = area / (cap * total)
    return Summary(
        states=states,
        failures=sorted(
            ((k, len(v), v[0].uid, v[0].message) for k, v in failures.items()),
            key=lambda f: (-f[1], f[0]),
        ),
        cascades=states[STATE_DEPENDENCY_FAILED],
        by_task_name=[_stats(k, v, waits[k]) for k, v in sorted(runs.items())],
        by_workflow_type=[_stats(k or NO_WORKFLOW, v) for k, v in sorted(durations.items()) if v],
        makespan=makespan,
        occupancy=occupancy,
        workflows=len(rows),
    )


Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def _seconds(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def summary_tables(summary: Summary) -> list[Table]:
    """The summary as titled tables of text, for the page and the report."""

    def stats(rows: list[DurationStats], wait: bool) -> list[list[str]]:
        return [
            [x.name, str(x.count), f"{x.mean:.3f}", f"{x.p50:.3f}", f"{x.p95:.3f}", f"{x.max:.3f}"]
            + ([_seconds(x.mean_dependency_wait), _seconds(x.mean_queue_wait)] if wait else [])
            for x in rows
        ]

    head = ["runs", "mean", "p50", "p95", "max"]
    failures = [[k, str(count), uid, message] for k, count, uid, message in summary.failures]
    if summary.cascades:
        failures.append(
            [
                STATE_DEPENDENCY_FAILED,
                str(summary.cascades),
                "",
                "skipped because a dependency failed (not counted as failures)",
            ]
        )
    title = "Failures by error type"
    sentence = failure_sentence(summary.states)
    if sentence:
        title += f": {sentence}"
    return [
        (
            "Tasks by state",
            ["state", "tasks"],
            [[k, str(v)] for k, v in summary.states.items() if v],
        ),
        (title, ["error type", "tasks", "example", "message"], failures),
        (
            f"{n.PHASE_RUN_TIME.capitalize()} per task name (seconds)",
            [
                "task",
                *head,
                f"mean {n.PHASE_DEPENDENCY_WAIT}",
                f"mean {n.PHASE_QUEUE_WAIT}",
            ],
            stats(summary.by_task_name, True),
        ),
        (
            "Duration per workflow type (seconds)",
            ["workflow type", "instances", *head[1:]],
            stats(summary.by_workflow_type, False),
        ),
    ]


def headline(summary: Summary) -> str:
    """One sentence: makespan, instances, occupancy."""
    makespan = f"{summary.makespan:.3f} s" if summary.makespan is not None else "-"
    occupancy = ", ".join(
        f"{kind.upper()} {value:.0%}"
        for kind, value in summary.occupancy.items()
        if value is not None
    )
    return (
        f"Makespan {makespan}; {summary.workflows} workflow instance(s); "
        f"mean slot occupancy {occupancy or '-'}."
    )


def notices(run: Run) -> list[str]:
    """What the page should say about the run beyond its figures."""
    out = list(run.problems)
    if run.stopped:
        out.append(
            "The run stopped without ending (killed, or its machine went down): "
            "tasks shown as running or pending never finished."
        )
    tasks = run.tasks
    if not tasks:
        out.append(
            "The run recorded no tasks."
            if run.ended
            else "No tasks recorded yet: the page updates as the run goes on."
        )
        return out
    from ._choices import state_counts  # counted from columns when a reader made them

    counts = state_counts(run)
    if counts[STATE_FAILED] + counts[STATE_DEPENDENCY_FAILED] == len(tasks):
        failed = list(tasks)  # every task failed
        kinds = Counter(t.error_type or "(unknown)" for t in failed)
        detail = ", ".join(f"{k} x{c}" for k, c in kinds.most_common(5))
        out.append(f"Every task of this run failed ({len(failed)}): {detail}.")
    return out
