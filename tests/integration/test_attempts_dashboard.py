"""Attempts and cache hits travel through the checkpoint file and OTLP/JSON to
the dashboard, which draws attempts as segments and hits as their own mark."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.dashboard import _busy as b
from asyncflow.dashboard import compute as c
from asyncflow.dashboard import open_source, paths
from asyncflow.dashboard._attempts import ATTEMPT_FAILED, ATTEMPT_OK, CACHE_HIT_NAME
from asyncflow.dashboard._columns import timeline_of
from asyncflow.dashboard.figures import campaign_figure, gantt_figure
from asyncflow.telemetry import names as n


async def record_run(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    async with await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=tmp_path
    ) as engine:
        tel = await engine.start_telemetry(checkpoint_path=out)
        tries = {"n": 0}

        @engine.function_task(retries=2)
        async def flaky() -> int:
            tries["n"] += 1
            if tries["n"] < 3:
                raise RuntimeError(f"<b>try {tries['n']}</b>")
            return tries["n"]

        @engine.function_task(cache=True)
        async def stored(x: int) -> int:
            return x

        async with engine.workflow_scope("wf-1", name="demo"):
            assert await flaky() == 3
            assert await stored(1) == 1
            assert await stored(1) == 1
    otlp = tel.export_as_otlp(tmp_path / "run.otlp.json")
    assert tel.checkpoint_file is not None
    return Path(tel.checkpoint_file), Path(otlp)


async def test_attempts_and_hits_reach_the_gantt(tmp_path: Path) -> None:
    checkpoint, otlp = await record_run(tmp_path)
    for path in (checkpoint, otlp):
        run = open_source(path).poll()
        by_name: dict[str, list] = {}
        for t in run.tasks:
            by_name.setdefault(t.name, []).append(t)
        (flaky,) = by_name["flaky"]
        assert [a.number for a in flaky.attempts] == [1, 2, 3]
        assert [a.error_type for a in flaky.attempts] == ["RuntimeError", "RuntimeError", ""]
        assert all(a.started > 0 and a.ended >= a.started for a in flaky.attempts)
        assert sorted(t.cache for t in by_name["stored"]) == [n.CACHE_HIT, n.CACHE_MISS]
        fig = gantt_figure(run, "wf-1")
        traces = {t.name: t for t in fig.data}
        assert len(traces[ATTEMPT_FAILED].x) == 2 and len(traces[ATTEMPT_OK].x) == 1
        assert len(traces[CACHE_HIT_NAME].x) == 1
        (hit,) = [t for t in by_name["stored"] if t.cache == n.CACHE_HIT]
        assert hit.cache_source.startswith("asyncflow.session.")  # linked to who stored it
        assert hit.cache_source in traces[CACHE_HIT_NAME].hovertext[0]
        # The campaign timeline marks the hit apart from tasks that never ran.
        timeline = {t.name: t for t in campaign_figure(run).data}
        assert len(timeline[CACHE_HIT_NAME].x) == 1 and "never ran" not in timeline
        hover = " ".join(traces[ATTEMPT_FAILED].hovertext)
        assert "&lt;b&gt;try 1&lt;/b&gt;" in hover and "<b>" not in hover  # escaped


async def test_a_retried_task_holds_its_slot_only_while_an_attempt_runs(tmp_path: Path) -> None:
    """CAMPAIGN.md: a task starts only when its slots are free. During a retry
    delay the task holds none: another task runs on the only CPU meanwhile,
    and the busy slots and the slot lanes show one task at a time."""
    failed = asyncio.Event()
    async with await WorkflowEngine.create(
        backend=await LocalExecutionBackend(cpus=1), work_dir=tmp_path
    ) as engine:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "run")

        @engine.function_task(retries=1, retry_delay=2.0)
        async def flaky() -> str:
            if not failed.is_set():
                failed.set()
                raise RuntimeError("first attempt")
            return "ok"

        @engine.function_task
        async def other() -> str:
            return "other"

        retried = flaky()
        await failed.wait()
        assert await other() == "other"  # on the only CPU, in flaky's retry delay
        assert await retried == "ok"
    assert tel.checkpoint_file is not None
    run = open_source(Path(tel.checkpoint_file)).poll()
    by_name = {t.name: t for t in run.tasks}
    first, second = by_name["flaky"].attempts
    assert first.ended <= by_name["other"].started <= by_name["other"].finished <= second.started
    assert c.capacities(run)[n.KIND_CPU] == c.Capacity(1, "recorded")
    # Busy CPUs, per task and from columns (the aggregated timeline): never two.
    assert c.busy_steps(run, n.KIND_CPU).peak == 1
    times, values = b.busy_steps(timeline_of(run), n.KIND_CPU)
    assert c.Steps(times.tolist(), values.tolist()) == c.busy_steps(run, n.KIND_CPU)
    # The slot lanes: one lane, flaky on it once per attempt, nothing overlapping.
    (lane,) = paths.slot_lanes(run).lanes
    assert [(t.name, start, end) for t, start, end in lane.spans] == [
        ("flaky", first.started, first.ended),
        ("other", by_name["other"].started, by_name["other"].finished),
        ("flaky", second.started, second.ended),
    ]


async def test_each_attempt_is_drawn_on_the_slots_it_ran_on(tmp_path: Path) -> None:
    """A retried task's second attempt runs on another CPU than its first
    (another task took the first one during the retry delay): each attempt
    records its own slots, and the slot lanes draw each attempt on its own
    (all were drawn on the last attempt's slots), from the checkpoint file
    and from OTLP/JSON."""
    # Task bodies run on the backend's threads: thread-safe events.
    failed, second = threading.Event(), threading.Event()
    backend = await LocalExecutionBackend(cpus=2)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "run")

        @engine.function_task(retries=1, retry_delay=0.5)
        async def flaky() -> str:
            if not failed.is_set():
                failed.set()
                raise RuntimeError("first attempt")
            second.set()
            return "ok"

        @engine.function_task
        async def blocker() -> str:
            while not second.is_set():  # holds its CPU until flaky's second attempt runs
                await asyncio.sleep(0.01)
            return "done"

        retried = flaky()
        deadline = asyncio.get_running_loop().time() + 30
        # The first attempt failed and let go of its CPU.
        while not failed.is_set() or backend.resource_pool.usage()[n.KIND_CPU][0]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        held = blocker()
        assert await retried == "ok"
        assert await held == "done"
    assert tel.checkpoint_file is not None
    otlp = tel.export_as_otlp(tmp_path / "run.otlp.json")
    for path in (Path(tel.checkpoint_file), Path(otlp)):
        run = open_source(path).poll()
        by_name = {t.name: t for t in run.tasks}
        first, last = by_name["flaky"].attempts
        assert first.slots == by_name["blocker"].slots  # it took the CPU the first let go
        assert last.slots and last.slots != first.slots
        assert by_name["flaky"].slots == last.slots  # the span says the last attempt's
        lanes = {lane.slot: lane for lane in paths.slot_lanes(run).lanes}
        drawn = {
            (slot, t.name, start)
            for slot, lane in lanes.items()
            for t, start, _ in lane.spans
            if t.name == "flaky"
        }
        assert drawn == {
            (first.slots[0], "flaky", first.started),
            (last.slots[0], "flaky", last.started),
        }
