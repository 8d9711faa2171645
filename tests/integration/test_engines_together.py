"""Two engines in one program: each keeps to its own tasks and backends.

A task of one engine may depend on a task of another; shutting one engine
down ends its own tasks only. A backend object serves one live engine at a
time (its one callback and the engines' task uids would mix their reports).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine

from .conftest import wait_until

DEADLINE = 30.0  # seconds: catches a hang, not a loaded machine


async def test_shutdown_leaves_the_tasks_of_another_engine_alone(tmp_path: Path) -> None:
    one = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    two = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    release = threading.Event()
    try:

        @two.function_task
        async def train() -> str:
            release.wait(30)  # a thread busy in plain code: it cannot be interrupted
            return "model"

        @two.function_task
        async def publish(model: str) -> str:
            return f"published {model}"

        @one.function_task
        async def evaluate(model: str) -> str:
            return f"evaluated {model}"

        model = train()
        published = publish(model)
        evaluated = evaluate(model)  # one's task waits on two's
        await wait_until(lambda: model.state == "RUNNING")
        await one.shutdown()
        # One cancelled its own task, and nothing of two's.
        assert evaluated.cancelled()
        assert not model.done() and model.state == "RUNNING"
        assert two.task_counts().running == 1
        release.set()
        assert await published == "published model"
        assert await model == "model"
        counts = two.task_counts()
        assert (counts.done, counts.running, counts.canceled) == (2, 0, 0)
    finally:
        release.set()
        await one.shutdown()
        await two.shutdown()


async def test_a_backend_serves_one_live_engine_at_a_time(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend()
    one = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    with pytest.raises(ValueError, match=f"backend 'default' .*serves engine '{one.uid}'"):
        await WorkflowEngine.create(backend=backend, work_dir=tmp_path)

    @one.function_task
    async def first() -> str:
        return "one's"

    # The refused engine took nothing: the first one still gets its reports.
    assert await asyncio.wait_for(first(), DEADLINE) == "one's"
    # Once it has shut down (leaving the backend running), the next engine
    # takes the backend over, its own task.000001 and all.
    await one.shutdown(skip_execution_backend=True)
    two = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    await _gets_its_own_result(two, "task.000001")


async def test_a_backend_is_handed_on_once_the_tasks_left_on_it_end(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend()
    one = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    release = threading.Event()

    @one.function_task
    async def stuck() -> str:
        release.wait(30)  # plain code in a thread: cancelling cannot stop it
        return "one's"

    left = stuck()
    await wait_until(lambda: left.state == "RUNNING")
    await one.shutdown(skip_execution_backend=True)
    assert left.cancelled()
    # Its end, when it comes, must not reach the next engine's task.000001.
    with pytest.raises(ValueError, match=r"1 of its tasks ran there \(task\.000001\)"):
        await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    release.set()
    two = await _create_when_free(backend, tmp_path)
    try:
        gate = threading.Event()

        @two.function_task
        async def mine() -> str:
            gate.wait(30)
            return "two's"

        fut = mine()
        assert fut.uid == left.uid
        await wait_until(lambda: fut.state == "RUNNING")
        gate.set()
        assert await asyncio.wait_for(fut, DEADLINE) == "two's"
    finally:
        release.set()
        await two.shutdown()


async def _gets_its_own_result(engine: WorkflowEngine, uid: str) -> None:
    """``engine``'s first task has ``uid`` and gets its own result; then it shuts down."""
    try:

        @engine.function_task
        async def own() -> str:
            return engine.uid

        fut = own()
        assert fut.uid == uid
        assert await asyncio.wait_for(fut, DEADLINE) == engine.uid
    finally:
        await engine.shutdown()


async def _create_when_free(backend: LocalExecutionBackend, tmp_path: Path) -> WorkflowEngine:
    """An engine on ``backend`` as soon as another engine has handed it on."""
    deadline = time.monotonic() + DEADLINE  # catches a hang, not a slow machine
    while True:
        try:
            return await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
        except ValueError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


async def test_a_cancel_that_came_too_late_leaves_no_mark_for_the_next_engine(
    tmp_path: Path,
) -> None:
    """A cancel of a task that had already ended (a late ``cancel_task``)
    marked its uid cancelled for good: the next engine given the backend
    had its task of that uid reported cancelled."""
    backend = await LocalExecutionBackend()
    first = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)

    @first.function_task
    async def step() -> str:
        return "first"

    done = step()
    assert await done == "first"
    assert await backend.cancel_task(done.uid) is False  # it ended: nothing to cancel
    await first.shutdown(skip_execution_backend=True)
    second = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    await _gets_its_own_result(second, done.uid)
