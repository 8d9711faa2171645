"""A small campaign run on the real engine, recorded to a checkpoint file.

Four workflow types of ``instances`` instances each: simulate -> analyze
and train -> evaluate (an analyze depends on its simulate, an evaluate on
its train, across instances), GPU tasks, two tasks per simulate instance,
and one evaluate task that fails. Every task runs, so the campaign timeline
has one bar per task.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from asyncflow import LocalExecutionBackend, WorkflowEngine

TYPES = ("simulate", "analyze", "train", "evaluate")
INSTANCES = 2
TASKS_PER_INSTANCE = {"simulate": 2, "analyze": 1, "train": 1, "evaluate": 1}
FAILING_MESSAGE = "evaluation set is empty"


def task_count(instances: int = INSTANCES) -> int:
    """How many tasks :func:`record_campaign` runs."""
    return instances * sum(TASKS_PER_INSTANCE.values())


async def record_campaign(
    directory: Path,
    *,
    instances: int = INSTANCES,
    fail_all: bool = False,
    otlp: Path | None = None,
    seconds: float = 0.1,
    **backend: Any,
) -> Path:
    """Run the campaign with telemetry into ``directory``; returns the checkpoint file.

    Args:
        directory: the checkpoint directory (and the engine's work dir).
        instances: instances of each workflow type.
        fail_all: every task raises (a run with only failed tasks).
        otlp: also export the spans as an OTLP/JSON file there.
        seconds: the time scale of the tasks.
        backend: keyword arguments for ``LocalExecutionBackend`` (``cpus``, ``gpus``).
    """
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(**backend), work_dir=directory
    )
    tel = await engine.start_telemetry(checkpoint_path=directory, resource_poll_interval=0.05)

    def work(scale: float, what: str) -> Any:
        async def body(*_: Any) -> str:
            await asyncio.sleep(scale * seconds)
            if fail_all:
                raise RuntimeError(f"{what} failed")
            return what

        body.__name__ = body.__qualname__ = what
        return engine.function_task(body)

    prepare, md_run, post_process, fit = (
        work(0.3, "prepare"),
        work(1.2, "md_run"),
        work(0.5, "post_process"),
        work(0.8, "fit"),
    )

    @engine.function_task
    async def score(model: str, i: int) -> float:
        await asyncio.sleep(0.3 * seconds)
        if fail_all or i == 1:
            raise ValueError(FAILING_MESSAGE)
        return 0.9

    gpu = {"gpus": 1}
    futures = []
    for i in range(instances):
        async with engine.workflow_scope(name="simulate"):
            simulated = md_run(prepare(), task_description=gpu)
        async with engine.workflow_scope(name="train"):
            trained = fit(task_description=gpu)
        async with engine.workflow_scope(name="analyze"):
            futures.append(post_process(simulated, task_description=gpu))
        async with engine.workflow_scope(name="evaluate"):
            futures.append(score(trained, i))
        futures += [simulated, trained]
    await asyncio.gather(*futures, return_exceptions=True)
    await engine.shutdown()
    if otlp is not None:
        tel.export_as_otlp(otlp)
    assert tel.checkpoint_file is not None
    return tel.checkpoint_file
