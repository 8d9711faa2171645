"""``DaskBackend`` on a real local Dask cluster (2 worker processes)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from asyncflow import DependencyFailureError, WorkflowEngine
from asyncflow.backends import DaskBackend
from asyncflow.backends import dask as dask_backend
from asyncflow.errors import ExecutableError

pytestmark = pytest.mark.dask

LOCAL_DASK: dict[str, Any] = {
    "n_workers": 2,
    "threads_per_worker": 1,
    "processes": True,
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:0",  # None would mean the default, :8787
}


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with (
        LocalCluster(asynchronous=True, **LOCAL_DASK) as cluster,
        Client(cluster, asynchronous=True) as dask_client,
    ):
        yield dask_client


@pytest.fixture
async def engine(client: Client, tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    backend = await DaskBackend(client=client)
    eng = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:
        yield eng
    finally:
        await eng.shutdown()


async def test_functions_run_on_workers_and_chain_on_the_cluster(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def where() -> int:
        return os.getpid()

    @engine.function_task
    async def inc(x: int, *, by: int = 1) -> int:
        return x + by

    assert await where() != os.getpid()
    # A chain is handed over at once: each link waits for the last on the cluster.
    links = [inc(0)]
    for _ in range(49):
        links.append(inc(links[-1], by=2))
    pushed = sum(engine._graph.is_pushed_down(f) for f in links)
    assert pushed >= 45  # all but the links that had ended before their dependent came
    assert await asyncio.gather(*links) == [1 + 2 * i for i in range(50)]
    # A dependency that ended before its dependent is passed as its value.
    first = inc(10)
    await first
    assert await inc(first) == 12


async def test_a_failure_in_a_chain_fails_its_dependents(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def step(x: int) -> int:
        if x == 3:
            raise KeyError("three")
        return x + 1

    links = [step(0)]
    for _ in range(6):
        links.append(step(links[-1]))
    results = await asyncio.gather(*links, return_exceptions=True)
    assert results[:3] == [1, 2, 3]
    assert isinstance(results[3], KeyError)  # the task's own exception, same type
    for later in results[4:]:
        assert isinstance(later, DependencyFailureError)
        assert isinstance(later.root_cause, (KeyError, DependencyFailureError))


async def test_executables_run_their_command_through_a_shell(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    @engine.executable_task
    async def shell(word: str) -> str:
        return f'GREETING=hi; echo "$GREETING {word}" && echo two | tr a-z A-Z'

    @engine.executable_task(capture_stdio=True)
    async def failing() -> str:
        return "echo oops >&2; exit 3"

    assert await shell("there") == "hi there\nTWO\n"
    with pytest.raises(ExecutableError) as info:
        await failing()
    assert info.value.exit_code == 3
    assert "oops" in info.value.stderr


async def test_cancel_and_unsatisfiable_resources(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def sleepy() -> None:
        await asyncio.sleep(60)

    @engine.function_task
    async def on_gpu(task_description: dict[str, Any] | None = None) -> int:
        return 1

    running = sleepy()
    while running.state != "RUNNING":
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # No worker has a GPU: the task fails at once, saying why, instead of
    # waiting in the scheduler for ever.
    with pytest.raises(RuntimeError, match="resources"):
        await on_gpu(task_description={"gpus": 1})


async def test_an_owned_client_is_closed_at_shutdown(tmp_path: Path) -> None:
    async with LocalCluster(asynchronous=True, **LOCAL_DASK) as cluster:
        backend = await DaskBackend(cluster.scheduler_address)
        async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

            @engine.function_task
            async def double(x: int) -> int:
                return 2 * x

            assert await asyncio.gather(*[double(i) for i in range(20)]) == [
                2 * i for i in range(20)
            ]
        assert backend.client.status == "closed"
        # The cluster is not the backend's: it goes on serving.
        async with Client(cluster, asynchronous=True) as other:
            assert await other.submit(pow, 2, 5) == 32


async def test_a_synchronous_client_is_refused() -> None:
    class SyncClient:
        asynchronous = False

    with pytest.raises(ValueError, match="asynchronous"):
        DaskBackend(client=SyncClient())


class CountedGathers:
    """Wraps a backend's ``Client.gather``: how many are in flight at once,
    how many there were, and (when ``hold`` is set) the first one held until
    ``release`` is set."""

    def __init__(self, backend: DaskBackend, latency: float = 0.0, hold: bool = False) -> None:
        self.client = backend.client
        self.real = self.client.gather
        self.latency = latency
        self.hold = hold
        self.release = asyncio.Event()
        self.in_flight = self.most = self.calls = 0
        self.sizes: list[int] = []

    async def __call__(self, futures: list[Any], *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        first = self.calls == 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.sizes.append(len(futures))
        try:
            if first and self.hold:
                await self.release.wait()
            await asyncio.sleep(self.latency)  # a cluster farther away than this one
            return await self.real(futures, *args, **kwargs)
        finally:
            self.in_flight -= 1


async def test_results_come_back_in_few_gathers_one_at_a_time(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While gathers are quicker than the patience, one is in flight at a
    # time and what finishes meanwhile goes in the next: fewer round trips
    # than tasks.
    monkeypatch.setattr(dask_backend, "_PATIENCE", 60.0)
    backend = await DaskBackend(client=client)
    gathers = CountedGathers(backend, latency=0.2)
    monkeypatch.setattr(client, "gather", gathers)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task
        async def square(x: int) -> int:
            return x * x

        assert await asyncio.gather(*[square(i) for i in range(200)]) == [i * i for i in range(200)]
    assert gathers.most == 1
    assert sum(gathers.sizes) == 200
    assert gathers.calls < 100  # each 200 ms round trip brings back several


async def test_a_slow_gather_does_not_hold_back_the_others(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first gather never ends on its own: after the patience, the
    # results that finished later are fetched beside it and reported.
    monkeypatch.setattr(dask_backend, "_PATIENCE", 0.02)
    backend = await DaskBackend(client=client)
    gathers = CountedGathers(backend, hold=True)
    monkeypatch.setattr(client, "gather", gathers)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task
        async def echo(x: int) -> int:
            return x

        first = echo(-1)
        while gathers.calls == 0:  # its result is being fetched, and held
            await asyncio.sleep(0.01)
        later = [echo(i) for i in range(20)]
        assert await asyncio.wait_for(asyncio.gather(*later), 60) == list(range(20))
        assert not first.done()
        assert gathers.most >= 2
        gathers.release.set()
        assert await first == -1
