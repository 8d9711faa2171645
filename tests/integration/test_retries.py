"""Retries: a task's own failure runs it again, on every kind of backend.

The flaky task counts its attempts in a file (it may run in another
process, or on a Dask worker), fails until a given attempt, then returns.
Task bodies are defined inside the tests: process pools and Dask ship
closures by value.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from asyncflow import (
    Backoff,
    DependencyFailureError,
    LocalExecutionBackend,
    TaskTimeoutError,
    WorkflowEngine,
)
from asyncflow.errors import ExecutableError
from asyncflow.telemetry import names as n
from asyncflow.telemetry import read_checkpoint

# Counts its runs in the file argv[1]; exits 3 until argv[2] runs happened.
FLAKY_SCRIPT = (
    "import pathlib, sys\n"
    "p = pathlib.Path(sys.argv[1])\n"
    "k = int(p.read_text()) + 1 if p.exists() else 1\n"
    "p.write_text(str(k))\n"
    "print(k)\n"
    "sys.exit(3 if k <= int(sys.argv[2]) else 0)\n"
)


def flaky_command(path: Path, fail_times: int) -> str:
    return shlex.join([sys.executable, "-c", FLAKY_SCRIPT, str(path), str(fail_times)])


async def make_backend(kind: str) -> Any:
    if kind == "threads":
        return await LocalExecutionBackend()
    if kind == "processes":
        return await LocalExecutionBackend(ProcessPoolExecutor(max_workers=2))
    pytest.importorskip("rhapsody", reason="needs the 'hpc' extra (rhapsody-py[dask])")
    from rhapsody.backends import DaskExecutionBackend

    return await DaskExecutionBackend(
        resources={
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
        }
    )


@pytest.fixture(
    params=[
        "threads",
        "processes",
        pytest.param("dask", marks=[pytest.mark.dask]),
        pytest.param("dask-native", marks=[pytest.mark.dask]),
    ],
)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    if request.param != "dask-native":
        eng = await WorkflowEngine.create(
            backend=await make_backend(request.param), work_dir=tmp_path
        )
        try:
            yield eng
        finally:
            await eng.shutdown()
        return
    # asyncflow's own DaskBackend, which chains dependencies on the cluster.
    from distributed import Client, LocalCluster

    from asyncflow.backends import DaskBackend

    async with (
        LocalCluster(
            asynchronous=True,
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster, asynchronous=True) as client,
    ):
        eng = await WorkflowEngine.create(
            backend=await DaskBackend(client=client), work_dir=tmp_path
        )
        try:
            yield eng
        finally:
            await eng.shutdown()


def span_of(tel: Any, uid: str) -> dict[str, Any]:
    return next(s for s in tel.task_spans() if s["attributes"][n.TASK_UID] == uid)


def attempts_of(span: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["attributes"] for e in span["events"] if e["name"] == n.SPAN_EVENT_ATTEMPT]


async def test_fails_twice_then_succeeds_with_two_retries(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    tel = await engine.start_telemetry()

    @engine.function_task(retries=2)
    async def flaky(path: str, fail_times: int) -> int:
        import pathlib

        p = pathlib.Path(path)
        k = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(k))
        if k <= fail_times:
            raise ValueError(f"attempt {k} failed")
        return k

    fut = flaky(str(tmp_path / "count"), 2)
    assert await fut == 3
    assert fut.state == "DONE"
    span = span_of(tel, fut.uid)
    assert span["attributes"][n.TASK_ATTEMPTS] == 3
    assert span["attributes"][n.TASK_RESULT] == n.RESULT_COMPLETED
    events = attempts_of(span)
    assert [e[n.ATTEMPT_NUMBER] for e in events] == [1, 2, 3]
    assert [e.get(n.ERROR_TYPE) for e in events] == ["ValueError", "ValueError", None]
    assert [e.get(n.ATTEMPT_ERROR) for e in events[:2]] == ["attempt 1 failed", "attempt 2 failed"]
    assert [e[n.ATTEMPT_RETRIED] for e in events] == [True, True, False]
    assert all(e[n.ATTEMPT_STARTED] > 0 for e in events)
    retries = [p for p in tel.read_metrics() if p["name"] == n.METRIC_TASK_RETRIES]
    assert [(p["value"], p["attributes"][n.ERROR_TYPE]) for p in retries] == [(2, "ValueError")]


async def test_one_retry_is_not_enough_the_last_error_wins(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    @engine.function_task
    async def flaky(path: str, fail_times: int) -> int:
        import pathlib

        p = pathlib.Path(path)
        k = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(k))
        if k <= fail_times:
            raise ValueError(f"attempt {k} failed")
        return k

    @engine.function_task
    async def after(x: int) -> int:
        return x

    fut = flaky(str(tmp_path / "count"), 2, retries=1)  # the call kwarg
    dependent = after(fut, retries=5)
    with pytest.raises(ValueError, match="attempt 2 failed"):
        await fut
    assert fut.state == "FAILED"
    with pytest.raises(DependencyFailureError):  # never retried: it never ran
        await dependent
    assert (tmp_path / "count").read_text() == "2"


async def test_executable_retries(engine: WorkflowEngine, tmp_path: Path) -> None:
    @engine.executable_task(retries=2)
    async def flaky(path: str, fail_times: int) -> str:
        return flaky_command(Path(path), fail_times)

    assert (await flaky(str(tmp_path / "ok"), 2)).strip() == "3"
    with pytest.raises(ExecutableError, match="exit code 3"):
        await flaky(str(tmp_path / "bad"), 5)
    assert (tmp_path / "bad").read_text() == "3"  # three attempts, then the failure


async def test_a_cancelled_task_is_not_retried(
    local_engine: WorkflowEngine, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    started = asyncio.Event()

    @local_engine.function_task(retries=3)
    async def long(tag: str) -> None:
        (runs / f"{tag}.{len(list(runs.iterdir()))}").touch()
        local_engine._loop.call_soon_threadsafe(started.set)
        await asyncio.sleep(60)

    fut = long("x")
    await asyncio.wait_for(started.wait(), 20)
    fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fut
    assert fut.state == "CANCELLED"

    # A wrongly scheduled retry would have started by the time a task sent
    # after the cancellation has run.
    @local_engine.function_task
    async def probe() -> None:
        await asyncio.sleep(0.05)

    await probe()
    assert len(list(runs.iterdir())) == 1


async def test_timeouts_are_retried_only_when_asked(
    local_engine: WorkflowEngine, tmp_path: Path
) -> None:
    @local_engine.function_task(timeout=0.3)
    async def slow_then_fast(path: str) -> int:
        import pathlib

        p = pathlib.Path(path)
        k = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(k))
        if k == 1:
            await asyncio.sleep(60)
        return k

    with pytest.raises(TaskTimeoutError):
        await slow_then_fast(str(tmp_path / "a"), retries=3)
    assert (tmp_path / "a").read_text() == "1"
    assert await slow_then_fast(str(tmp_path / "b"), retries=3, retry_on=TimeoutError) == 2


async def test_retry_delay_backs_off(local_engine: WorkflowEngine, tmp_path: Path) -> None:
    tel = await local_engine.start_telemetry()

    @local_engine.function_task(retries=2, retry_delay=Backoff(0.2, factor=2, jitter=0))
    async def flaky(path: str) -> int:
        import pathlib

        p = pathlib.Path(path)
        k = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(k))
        if k <= 2:
            raise OSError(f"attempt {k}")
        return k

    fut = flaky(str(tmp_path / "c"))
    assert await fut == 3
    events = attempts_of(span_of(tel, fut.uid))
    # The wait between an attempt's end and the next start is at least the delay.
    gaps = [
        (nxt[n.ATTEMPT_STARTED] - end_ns) / 1e9
        for end_ns, nxt in zip(
            [e["time_ns"] for e in span_of(tel, fut.uid)["events"] if e["name"] == "attempt"][:2],
            events[1:],
            strict=True,
        )
    ]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4


async def test_bad_retry_options_fail_the_call_with_a_clear_error(
    local_engine: WorkflowEngine,
) -> None:
    @local_engine.function_task
    async def f() -> int:
        return 1

    with pytest.raises(TypeError, match="retries must be an int"):
        await f(retries=True)
    with pytest.raises(ValueError, match="retries must be >= 0"):
        await f(retries=-1)
    with pytest.raises(TypeError, match="retries must be an int"):

        @local_engine.function_task(retries=False)
        async def g() -> None: ...

    with pytest.raises(TypeError, match="function and executable tasks only"):

        @local_engine.block(retries=2)
        async def b() -> None: ...


async def test_retry_and_cache_counters_on_the_prometheus_scrape_path(
    local_engine: WorkflowEngine, tmp_path: Path
) -> None:
    from ..support.prometheus import exposition, parse_exposition

    tel = await local_engine.start_telemetry(prometheus_port=0)
    assert tel.prometheus_port is not None

    @local_engine.function_task(retries=1)
    async def flaky(path: str) -> int:
        import pathlib

        p = pathlib.Path(path)
        k = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(k))
        if k == 1:
            raise KeyError("first")
        return k

    @local_engine.function_task(cache=True)
    async def stored() -> int:
        return 1

    assert await flaky(str(tmp_path / "k")) == 2
    assert await stored() == await stored() == 1
    series = {
        name: dict(labels)
        for name, labels in parse_exposition(await exposition(tel.prometheus_port))
        if name in (n.PROM_TASK_RETRIES, n.PROM_CACHE_LOOKUPS)
    }
    assert series[n.PROM_TASK_RETRIES][n.prometheus_label(n.ERROR_TYPE)] == "KeyError"
    assert series[n.PROM_TASK_RETRIES][n.prometheus_label(n.TASK_NAME)] == "flaky"
    assert n.prometheus_label(n.TASK_CACHE) in series[n.PROM_CACHE_LOOKUPS]


async def test_tasks_with_retries_are_never_chained_on_the_backend(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    """On a backend that chains dependencies itself, a link whose first attempt
    fails is retried by the engine, and its dependents wait for the retry."""

    @engine.function_task(retries=1)
    async def link(path: str, x: int) -> int:
        import pathlib

        p = pathlib.Path(path)
        if not p.exists():  # every link's first attempt fails
            p.write_text("tried")
            raise ConnectionError(f"link {x} lost its node")
        return x + 1

    links = [link(str(tmp_path / "0"), 0)]
    for i in range(1, 8):
        links.append(link(str(tmp_path / str(i)), links[-1]))
    assert not any(engine._graph.is_pushed_down(f) for f in links)
    assert await asyncio.gather(*links) == list(range(1, 9))


async def test_each_attempt_s_slots_are_an_event_of_their_own(tmp_path: Path) -> None:
    """A retried task on a slot-aware backend is assigned slots before each
    attempt: each ``asyncflow.ResourceAssigned`` has an event id of its own
    (all had the task's one id for it)."""
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(cpus=2), work_dir=tmp_path
    )
    try:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")
        seen: list[tuple[str, int]] = []
        tel.subscribe(lambda ev: seen.append((ev.event_type, ev.event_id)))
        tries: list[int] = []

        @engine.function_task(retries=2, retry_delay=0)
        async def flaky() -> str:
            tries.append(1)
            if len(tries) < 3:
                raise ValueError("try again")
            return "ok"

        assert await flaky() == "ok"
    finally:
        await engine.shutdown()
    assigned = [i for name, i in seen if name == n.EVENT_RESOURCE_ASSIGNED]
    assert len(assigned) == 3
    ids = [i for _, i in seen]
    assert len(ids) == len(set(ids))
    # Read back from the checkpoint file, the same events with the same ids
    # (the later ones all had the first one's).
    assert tel.checkpoint_file is not None
    read = [
        (e["event_type"], e["event_id"])
        for e in read_checkpoint(tel.checkpoint_file, sections=["event"])
        if e.get("task_id") == "task.000001"
    ]
    assert [i for name, i in read if name == n.EVENT_RESOURCE_ASSIGNED] == assigned
