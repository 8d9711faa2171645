"""Timeouts: counted from the task's start, the task is stopped through its
backend, its future fails with TaskTimeoutError, its slot is free again."""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from asyncflow import (
    DependencyFailureError,
    LocalExecutionBackend,
    TaskTimeoutError,
    WorkflowEngine,
)
from asyncflow.errors import AsyncFlowError

from .conftest import wait_until

# Well below the 60 s the tasks would run: the task was stopped, not finished.
STOPPED_EARLY = 20.0


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_sleeping_function_times_out_and_its_slot_is_free(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend(cpus=1)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task(timeout=0.5)
        async def sleepy() -> None:
            await asyncio.sleep(60)

        @engine.function_task
        async def after(x: object) -> object:
            return x

        @engine.function_task
        async def next_one() -> str:
            return "ran"

        t0 = time.monotonic()
        fut = sleepy()
        dependent = after(fut)
        with pytest.raises(TaskTimeoutError, match=r"'sleepy' timed out after 0.5 s") as info:
            await fut
        assert time.monotonic() - t0 < STOPPED_EARLY
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, AsyncFlowError)
        assert fut.state == "FAILED"
        with pytest.raises(DependencyFailureError) as dep:
            await dependent
        assert isinstance(dep.value.root_cause, TaskTimeoutError)
        # One CPU slot: the next task can run only if the timed-out one gave it back.
        assert await asyncio.wait_for(next_one(), 20) == "ran"
        assert backend.resource_pool is not None
        await wait_until(lambda: backend.resource_pool.idle("cpu") == 1)


async def test_sleep_60_executable_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    backend = await LocalExecutionBackend(max_executables=1)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.executable_task(timeout=0.5)
        async def sleep_60() -> str:
            return shlex.join(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"])

        @engine.executable_task
        async def echo() -> str:
            return "echo free"

        t0 = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            await sleep_60()
        assert time.monotonic() - t0 < STOPPED_EARLY
        pid = int(pid_file.read_text())
        await wait_until(lambda: gone(pid))
        # One executable at a time: this one runs only if the slot is free.
        assert (await asyncio.wait_for(echo(), 20)).strip() == "free"


async def test_process_pool_function_worker_is_stopped(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend(ProcessPoolExecutor(max_workers=2))
    pids = tmp_path / "pids"
    pids.mkdir()
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task(timeout=0.5)
        async def stuck(where: str) -> None:
            import os
            import pathlib
            import time

            pathlib.Path(where, str(os.getpid())).touch()
            time.sleep(60)  # a function that never awaits: only killing stops it

        @engine.function_task
        async def neighbour(seconds: float) -> str:
            await asyncio.sleep(seconds)
            return "done"

        side = neighbour(1.0)  # in the other worker of the same pool
        t0 = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            await stuck(str(pids))
        assert time.monotonic() - t0 < STOPPED_EARLY
        (pid_path,) = pids.iterdir()
        await wait_until(lambda: gone(int(pid_path.name)))
        # The pool the worker belonged to is gone; the neighbour ran again on
        # the new one, and new tasks run there too.
        assert await asyncio.wait_for(side, 30) == "done"
        assert await asyncio.wait_for(neighbour(0.0), 30) == "done"


async def test_timeout_counts_from_the_start_not_the_creation(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend(cpus=1)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task
        async def hog() -> None:
            await asyncio.sleep(1.5)

        @engine.function_task(timeout=1.0)
        async def quick() -> str:
            await asyncio.sleep(0.05)
            return "in time"

        first = hog()
        second = quick()  # waits 1.5 s for the only slot, then runs 0.05 s
        assert await second == "in time"
        await first


async def test_thread_function_that_never_awaits_fails_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncflow.engine import _attempts

    monkeypatch.setattr(_attempts, "TIMEOUT_GRACE", 0.5)
    release = tmp_path / "release"
    async with await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=tmp_path
    ) as engine:

        @engine.function_task(timeout=0.3)
        async def busy(flag: str) -> None:
            import os
            import time

            while not os.path.exists(flag):  # never awaits, on purpose
                time.sleep(0.01)

        fut = busy(str(release))
        with pytest.raises(TaskTimeoutError, match="did not confirm"):
            await fut
        release.touch()
