"""ResourcePool: an asyncio slot allocator (event loop, but no engine)."""

from __future__ import annotations

import asyncio
import random

import pytest

from asyncflow import ResourcePool
from asyncflow.resources import slot_indices


async def test_slots_are_named_and_given_back() -> None:
    pool = ResourcePool(cpus=4, gpus=2)
    async with pool.acquire(cpus=2, gpus=1) as slots:
        assert slots == ["gpu:0", "cpu:0", "cpu:1"]
        assert pool.usage() == {"gpu": (1, 1), "cpu": (2, 2)}
        assert slot_indices(slots, "gpu") == [0]
    assert pool.usage() == {"gpu": (0, 2), "cpu": (0, 4)}


async def test_oversized_and_bad_requests_fail_at_once() -> None:
    pool = ResourcePool(cpus=2, gpus=1, name="node7")
    with pytest.raises(ValueError, match=r"3 gpu slot.*can never be served.*'node7' has 1"):
        await asyncio.wait_for(pool.acquire_slots(cpus=1, gpus=3), timeout=1)
    with pytest.raises(ValueError, match="non-negative"):
        await pool.acquire_slots(cpus=-1)
    with pytest.raises(ValueError, match="non-negative"):
        ResourcePool(cpus=-2)
    with pytest.raises(ValueError, match="not held"):
        pool.release(["gpu:0"])


async def test_priority_then_arrival_order() -> None:
    pool = ResourcePool(cpus=1)
    order: list[str] = []
    first = await pool.acquire_slots()

    async def want(name: str, priority: int) -> None:
        async with pool.acquire(priority=priority):
            order.append(name)
            await asyncio.sleep(0)

    waiters = [
        asyncio.create_task(want(name, prio))
        for name, prio in [("low-a", 0), ("high-a", 5), ("low-b", 0), ("high-b", 5), ("mid", 2)]
    ]
    await asyncio.sleep(0)
    assert pool.waiting == 5
    pool.release(first)
    await asyncio.gather(*waiters)
    assert order == ["high-a", "high-b", "mid", "low-a", "low-b"]


async def test_a_gpu_waiter_does_not_hold_back_cpu_work() -> None:
    pool = ResourcePool(cpus=4, gpus=1)
    gpu = await pool.acquire_slots(cpus=1, gpus=1)
    gpu_waiter = asyncio.create_task(pool.acquire_slots(cpus=1, gpus=1, priority=9))
    await asyncio.sleep(0)
    # CPUs are idle: a lower-priority CPU-only request is served at once.
    cpu = await asyncio.wait_for(pool.acquire_slots(cpus=2), timeout=1)
    assert not gpu_waiter.done()
    pool.release(gpu)
    granted = await gpu_waiter
    assert "gpu:0" in granted and len(granted) == 2
    pool.release(cpu)


async def test_cancelled_waiters_never_leak_slots() -> None:
    pool = ResourcePool(cpus=2)
    held = await pool.acquire_slots(cpus=2)
    waiter = asyncio.create_task(pool.acquire_slots(cpus=1))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    pool.release(held)
    assert pool.usage() == {"cpu": (0, 2)} and pool.waiting == 0


async def test_random_acquire_and_cancel_never_exceeds_capacity() -> None:
    rng = random.Random(7)
    pool = ResourcePool(cpus=6, gpus=3)
    peak = {"cpu": 0, "gpu": 0}

    def check() -> None:
        for kind in ("cpu", "gpu"):
            busy = pool.busy(kind)
            assert 0 <= busy <= pool.capacity[kind]
            peak[kind] = max(peak[kind], busy)

    async def user(i: int) -> None:
        cpus, gpus = rng.randint(0, 3), rng.randint(0, 2)
        async with pool.acquire(cpus=cpus, gpus=gpus, priority=rng.randint(0, 3)) as slots:
            assert len(slots) == cpus + gpus and len(set(slots)) == len(slots)
            check()
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            check()

    tasks = []
    for i in range(1000):
        tasks.append(asyncio.create_task(user(i)))
        if rng.random() < 0.3:
            rng.choice(tasks).cancel()
        if i % 10 == 0:
            await asyncio.sleep(0)
            check()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) > 100
    assert pool.usage() == {"gpu": (0, 3), "cpu": (0, 6)}
    assert pool.waiting == 0
    assert peak == {"cpu": 6, "gpu": 3}
