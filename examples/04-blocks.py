"""Blocks: groups of tasks that nest, depend on each other, and cancel as one.

A ``@engine.block`` body runs on the engine's own event loop once the block's
dependencies are done; the tasks it creates are its members. Here a
``replica`` block (simulate, then analyse) is nested in an ``ensemble``
block, a second ensemble waits for the first one's result, and a long
``production`` block is cancelled while its members run: cancelling a block
cancels its body and every unfinished member, recursively.

Run it from a checkout::

    python examples/04-blocks.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from asyncflow import WorkflowEngine


async def main() -> None:
    async with await WorkflowEngine.create() as engine:

        @engine.function_task
        async def simulate(seed: int, steps: int) -> float:
            await asyncio.sleep(0.001 * steps)
            return seed * 0.5

        @engine.function_task
        async def analyse(energy: float) -> float:
            return round(energy * 2, 3)

        @engine.block
        async def replica(seed: int, steps: int = 100) -> float:
            return await analyse(simulate(seed, steps))

        @engine.block
        async def ensemble(seeds: list[int]) -> list[float]:
            return list(await asyncio.gather(*(replica(s) for s in seeds)))  # nested blocks

        @engine.block
        async def refine(previous: list[float]) -> list[float]:
            # Starts when the block it depends on has returned, with its value.
            best = [round(v) for v in previous if v > 1]
            return list(await asyncio.gather(*(replica(s, steps=200) for s in best)))

        first = ensemble([1, 2, 3, 4])
        second = refine(first)  # a block depending on a block
        print(f"{first.uid}: {await first}")
        print(f"{second.uid}: {await second}")
        inside = [
            uid
            for uid, component in engine.components.items()
            if component["description"]["workflow_id"] == first.uid
        ]
        print(f"{first.uid} directly holds {inside}")  # its members carry its uid

        members: list[Any] = []
        running = asyncio.Event()

        @engine.block
        async def production(count: int) -> list[float]:
            members.extend(simulate(seed, steps=60_000) for seed in range(count))  # a minute
            running.set()
            return list(await asyncio.gather(*members))

        long_block = production(3)
        await running.wait()  # the body has started and created its members
        await asyncio.wait(members, timeout=0.5)  # a moment for the backend to start them
        print(f"before cancel: {long_block.state}, members {[m.state for m in members]}")
        long_block.cancel()
        await asyncio.wait([long_block, *members])
        print(f"after cancel: {long_block.state}, members {[m.state for m in members]}")


if __name__ == "__main__":
    asyncio.run(main())
