"""Process pools under faults: a killed engine leaves no helper process, and a
crashed worker costs only its own task."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import psutil
import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0

POOL_RUN = textwrap.dedent(
    """
    import asyncio, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from asyncflow import LocalExecutionBackend, WorkflowEngine

    async def main():
        backend = await LocalExecutionBackend(ProcessPoolExecutor(3))
        engine = await WorkflowEngine.create(backend=backend, work_dir=sys.argv[1])
        await engine.start_telemetry(checkpoint_path=sys.argv[1])

        @engine.function_task
        async def work(i):
            time.sleep(600 if i else 0)
            return i

        await work(0)
        running = work(1)
        while running.state != "RUNNING":
            await asyncio.sleep(0.01)
        print("running", flush=True)
        await running

    asyncio.run(main())
    """
)


def test_sigkill_of_a_process_pool_run_leaves_no_survivor(tmp_path: Path) -> None:
    script = tmp_path / "pool_run.py"
    script.write_text(POOL_RUN)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    family: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "running"
        family = psutil.Process(proc.pid).children(recursive=True)
        kinds = " ".join(" ".join(p.cmdline()) for p in family)
        # Pool workers, the manager, the checkpoint writer and the reaper.
        assert "_writer_main" in kinds and len(family) >= 5, kinds
        proc.send_signal(signal.SIGKILL)
        proc.wait(DEADLINE)
        _, alive = psutil.wait_procs(family, timeout=DEADLINE)
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


async def test_crashed_worker_fails_its_task_and_the_pool_is_recreated(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend(ProcessPoolExecutor(2))
    engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:

        @engine.function_task
        async def crash() -> None:
            import os
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
            os.abort()

        @engine.function_task
        async def bystander(seconds: float) -> str:
            time.sleep(seconds)
            return "done"

        slow = bystander(1.0)
        crashed = crash()
        with pytest.raises(BrokenProcessPool, match="SIGABRT"):
            await asyncio.wait_for(crashed, DEADLINE)
        assert crashed.exception() is not None
        # The task that ran beside it, and every later task, still run.
        assert await asyncio.wait_for(slow, DEADLINE) == "done"
        later = await asyncio.wait_for(asyncio.gather(*[bystander(0) for _ in range(4)]), DEADLINE)
        assert later == ["done"] * 4
    finally:
        await asyncio.wait_for(engine.shutdown(), DEADLINE)
