"""How a pool worker of LocalExecutionBackend runs an ``async def`` task: a
body that never awaits runs in one step without a Task of its own, one that
awaits in a Task on the worker's loop; either way as asyncio would run it."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.backends._runners import never_suspends

_seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


async def _plain(x: int) -> int:
    return x + 1


async def _awaits() -> None:
    await asyncio.sleep(0)


async def _with() -> None:
    async with asyncio.timeout(1):
        pass


async def _for(items: Any) -> None:
    async for _ in items:
        pass


async def _comprehension(items: Any) -> list[Any]:
    return [x async for x in items]


def test_never_suspends_reads_the_code_of_the_function() -> None:
    assert never_suspends(_plain)
    for func in (_awaits, _with, _for, _comprehension):
        assert not never_suspends(func), func.__name__
    assert not never_suspends(lambda: None)  # not a coroutine function
    assert not never_suspends(print)  # not a Python function


async def test_a_body_that_never_awaits_runs_as_in_a_task(tmp_path: Path) -> None:
    # One worker: every task runs on the same thread, one after another.
    backend = await LocalExecutionBackend(ThreadPoolExecutor(max_workers=1))
    engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:

        @engine.function_task
        async def inside(tag: str) -> tuple[Any, ...]:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            before = _seen.get()
            _seen.set(tag)  # in the task's own context: never seen by the next one
            return threading.get_ident(), id(loop), task is not None and task.done(), before

        @engine.function_task
        async def fails() -> None:
            raise ValueError("from a body without an await")

        @engine.function_task
        async def cancels() -> None:
            raise asyncio.CancelledError

        assert never_suspends(inside.__wrapped__)  # type: ignore[attr-defined]
        first = await inside("a")
        second = await inside("b")
        assert first[0] == second[0] != threading.get_ident()  # the one worker
        assert first[1] == second[1] != id(asyncio.get_running_loop())  # the worker's loop
        assert first[2] and second[2]  # a current task (the worker's finished stand-in)
        assert first[3] == second[3] == "unset"
        with pytest.raises(ValueError, match="without an await"):
            await fails()
        cancelled = cancels()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert cancelled.cancelled()
    finally:
        await engine.shutdown()


async def test_a_body_that_awaits_still_gets_a_task_of_its_own(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend(ThreadPoolExecutor(max_workers=1))
    engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:

        @engine.function_task
        async def awaits() -> tuple[bool, bool]:
            task = asyncio.current_task()
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
            return task is not None, task is not None and task.done()

        assert await awaits() == (True, False)  # its own Task, running
    finally:
        await engine.shutdown()
