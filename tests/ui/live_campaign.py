"""A campaign that stays live: run as a program, it holds its tasks until its stdin closes.

``python -m tests.ui.live_campaign DIR`` runs on two CPU slots:

- ``known`` (completes), ``broken`` (raises ``ValueError(FAILURE)`` from
  ``check_input``) and ``after`` (depends on ``broken``: a cascade);
- then ``hold`` three times (each holds a slot until the end: two run, the
  third is queued for a slot) and ``later``, which depends on the first
  ``hold`` (waiting for a dependency).

It prints ``ready`` once all of that is under way, then waits for its
standard input to close and shuts the engine down.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

from asyncflow import LocalExecutionBackend, WorkflowEngine

FAILURE = "the input table has no rows"
READY = "ready"


async def main(directory: Path) -> None:
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(cpus=2), work_dir=directory
    )
    await engine.start_telemetry(checkpoint_path=directory, resource_poll_interval=0.2)
    release = threading.Event()  # tasks run on the backend's worker threads

    def check_input() -> None:
        raise ValueError(FAILURE)

    @engine.function_task
    async def known() -> str:
        await asyncio.sleep(0.3)
        return "done"

    @engine.function_task
    async def broken() -> None:
        await asyncio.sleep(0.6)  # a bar wide enough to click
        check_input()

    @engine.function_task
    async def after(_: Any) -> None:
        return None

    @engine.function_task
    async def hold() -> None:
        while not release.is_set():
            await asyncio.sleep(0.05)

    @engine.function_task
    async def later(_: Any) -> None:
        return None

    async with engine.workflow_scope(name="prepare"):
        first = [known()]
    async with engine.workflow_scope(name="check"):  # a row of its own: its bars overlap none
        first.append(broken())
        first.append(after(first[1]))
    await asyncio.gather(*first, return_exceptions=True)
    async with engine.workflow_scope(name="simulate"):
        holds = [hold() for _ in range(3)]
        waiting = later(holds[0])
    print(READY, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    release.set()
    await asyncio.gather(*holds, waiting, return_exceptions=True)
    await engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
