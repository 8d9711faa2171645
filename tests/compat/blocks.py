"""Blocks and nested blocks, as in the older AsyncFlow's examples 02 and 03."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from asyncflow import ConcurrentExecutionBackend, WorkflowEngine
from asyncflow.logging import init_default_logger

logger = logging.getLogger(__name__)


async def main():
    init_default_logger(logging.INFO)

    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor())
    flow = await WorkflowEngine.create(backend=backend)
    order = []

    @flow.function_task
    async def task1(*args):
        return "task1 result"

    @flow.function_task
    async def task2(*args):
        return f"task2 after {args[0]}"

    @flow.block
    async def block1(*args):
        order.append("block1")
        t1 = task1()
        t2 = task2(t1)
        return await t2

    @flow.block
    async def block2(*args):
        order.append("block2")
        t3 = task1()
        t4 = task2(t3)
        return await t4

    @flow.block
    async def block_of_blocks(*args):
        b1 = block1()
        b2 = block2(b1)
        return await b2

    async def run_block_of_blocks(i):
        bob1 = block_of_blocks()
        bob2 = block_of_blocks(bob1)
        result = await bob2
        logger.info(f"Block of blocks-{i} is finished: {result}")
        return result

    results = await asyncio.gather(*[run_block_of_blocks(i) for i in range(2)])
    print(f"results: {results}")
    print(
        f"blocks run: {len(order)}, block1 before block2 each time: "
        f"{order.count('block1') == order.count('block2') == 4}"
    )

    await flow.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
