"""The older AsyncFlow's first example, 1,000 workflow instances of three
function tasks (a DAG: task3 depends on task1 and task2), with only the import
lines changed. Also a task whose two dependencies failed."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from asyncflow import ConcurrentExecutionBackend, DependencyFailureError, WorkflowEngine
from asyncflow.logging import init_default_logger

logger = logging.getLogger(__name__)


async def main():
    init_default_logger(logging.WARNING)

    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor())
    flow = await WorkflowEngine.create(backend=backend)

    @flow.function_task
    async def task1(*args):
        await asyncio.sleep(0.001)
        return sum(range(1000))

    @flow.function_task
    async def task2(*args):
        input_data = args[0]
        return [x for x in range(1000) if x % 2 == 0 and input_data]

    @flow.function_task
    async def task3(*args):
        sum_data, even_numbers = args
        return {"total_sum": sum_data, "even_count": len(even_numbers)}

    async def run_wf(wf_id):
        t1 = task1()
        t2 = task2(t1)
        t3 = task3(t1, t2)
        return await t3

    results = await asyncio.gather(*[run_wf(i) for i in range(1000)])
    assert all(r == {"total_sum": 499500, "even_count": 500} for r in results)
    print(f"workflows: {len(results)}")

    @flow.function_task
    async def left():
        raise RuntimeError("left")

    @flow.function_task
    async def right():
        await asyncio.sleep(0.05)
        raise RuntimeError("right")

    @flow.function_task
    async def merge(*parts):
        return parts

    try:
        await merge(left(), task1(), right())
    except DependencyFailureError as exc:
        print(f"failed dependencies: {exc.failed_dependencies}")
        print(f"root cause: {exc.root_cause!r}")

    await flow.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
