"""Two engines in one program: each keeps to its own tasks and backends.

A task of one engine may depend on a task of another; shutting one engine
down ends its own tasks only. A backend object serves one live engine at a
time (its one callback and the engines' task uids would mix their reports).
"""

from __future__ import annotations

import threading
from pathlib import Path

from asyncflow import LocalExecutionBackend, WorkflowEngine

from .conftest import wait_until


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
