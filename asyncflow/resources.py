"""CPU and GPU slots: ``ResourcePool`` and ``current_slots()``.

A pool hands out named slots (``"cpu:3"``, ``"gpu:1"``) to requests that wait
on the event loop until theirs are free::

    pool = ResourcePool(cpus=8, gpus=4)
    async with pool.acquire(cpus=1, gpus=2, priority=5) as slots:
        ...  # slots == ["gpu:0", "gpu:1", "cpu:0"]

Requests are served by priority (higher first), first come first served
within a priority. A request that cannot be served holds back later requests
only for the kinds it is short of, so a task waiting for a GPU never keeps
CPU-only tasks from the idle CPUs, while requests that compete for the same
kind keep their order. A request larger than the pool fails at once, and a
cancelled waiter never leaks slots.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["KINDS", "ResourcePool", "current_slots", "slot_indices"]

KINDS = ("gpu", "cpu")

_current: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "asyncflow.slots", default=()
)


def current_slots() -> list[str]:
    """The slots assigned to the task running now (empty outside one).

    Inside a function task on a resource-aware ``LocalExecutionBackend``,
    e.g. ``["gpu:1", "cpu:4"]``.
    """
    return list(_current.get())


def set_current_slots(slots: Sequence[str]) -> contextvars.Token[tuple[str, ...]]:
    """Make ``slots`` what ``current_slots()`` returns in this context."""
    return _current.set(tuple(slots))


def reset_current_slots(token: contextvars.Token[tuple[str, ...]]) -> None:
    """Undo :func:`set_current_slots`."""
    _current.reset(token)


def slot_indices(slots: Sequence[str], kind: str) -> list[int]:
    """The indices of the ``kind`` slots: ``["gpu:2", "cpu:0", "gpu:3"]`` -> ``[2, 3]``."""
    prefix = f"{kind}:"
    return [int(s[len(prefix) :]) for s in slots if s.startswith(prefix)]


class _Waiter:
    __slots__ = ("future", "need", "priority", "seq")

    def __init__(
        self, need: dict[str, int], priority: int, seq: int, future: asyncio.Future[list[str]]
    ) -> None:
        self.need = need
        self.priority = priority
        self.seq = seq
        self.future = future

    def __lt__(self, other: _Waiter) -> bool:
        return (-self.priority, self.seq) < (-other.priority, other.seq)


class ResourcePool:
    """CPU and GPU slots for tasks on one node.

    Args:
        cpus: number of CPU slots.
        gpus: number of GPU slots.
        name: a name for messages and telemetry.

    Raises:
        ValueError: a negative count.
    """

    def __init__(self, cpus: int = 1, gpus: int = 0, name: str = "local") -> None:
        for kind, count in (("cpus", cpus), ("gpus", gpus)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"ResourcePool {kind} must be a non-negative int, not {count!r}")
        self.name = name
        self.capacity = {"cpu": cpus, "gpu": gpus}
        self._free = {kind: list(range(n)) for kind, n in self.capacity.items()}
        self._waiters: list[_Waiter] = []  # kept sorted: priority, then arrival
        self._seq = itertools.count()

    # ------------------------------------------------------------------ state
    def busy(self, kind: str) -> int:
        """Slots of ``kind`` in use."""
        return self.capacity[kind] - len(self._free[kind])

    def idle(self, kind: str) -> int:
        """Slots of ``kind`` free."""
        return len(self._free[kind])

    @property
    def waiting(self) -> int:
        """Requests waiting for slots."""
        return sum(1 for w in self._waiters if not w.future.done())

    def usage(self) -> dict[str, tuple[int, int]]:
        """``{kind: (busy, idle)}`` for every kind the pool has."""
        return {kind: (self.busy(kind), self.idle(kind)) for kind in KINDS if self.capacity[kind]}

    # ------------------------------------------------------------------ requests
    def _check(self, cpus: int, gpus: int) -> dict[str, int]:
        need = {"cpu": cpus, "gpu": gpus}
        for kind, count in need.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(
                    f"a request for {kind} slots must be a non-negative int, not {count!r}"
                )
            if count > self.capacity[kind]:
                raise ValueError(
                    f"request for {count} {kind} slot(s) can never be served: "
                    f"pool {self.name!r} has {self.capacity[kind]}"
                )
        return need

    def _fits(self, need: dict[str, int]) -> bool:
        return all(len(self._free[kind]) >= count for kind, count in need.items())

    def _take(self, need: dict[str, int]) -> list[str]:
        slots: list[str] = []
        for kind in KINDS:
            count = need[kind]
            if count:
                free = self._free[kind]
                taken, self._free[kind] = free[:count], free[count:]
                slots.extend(f"{kind}:{i}" for i in taken)
        return slots

    def try_acquire(self, cpus: int = 1, gpus: int = 0) -> list[str] | None:
        """Take the slots now if they are free and nobody waits before; else None."""
        need = self._check(cpus, gpus)
        if not self._waiters and self._fits(need):
            return self._take(need)
        return None

    async def acquire_slots(self, cpus: int = 1, gpus: int = 0, priority: int = 0) -> list[str]:
        """Wait for the slots and return them; call :meth:`release` when done.

        Raises:
            ValueError: the request is larger than the pool (at once).
        """
        need = self._check(cpus, gpus)
        if not self._waiters and self._fits(need):
            return self._take(need)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        bisect.insort(self._waiters, _Waiter(need, priority, next(self._seq), future))
        self._serve()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())  # granted just as we were cancelled
            else:
                future.cancel()
                self._waiters = [w for w in self._waiters if w.future is not future]
                self._serve()  # a cancelled head may have held others back
            raise

    @asynccontextmanager
    async def acquire(
        self, cpus: int = 1, gpus: int = 0, priority: int = 0
    ) -> AsyncIterator[list[str]]:
        """``async with pool.acquire(cpus=1, gpus=2) as slots:``; released on exit."""
        slots = await self.acquire_slots(cpus, gpus, priority)
        try:
            yield slots
        finally:
            self.release(slots)

    def release(self, slots: Sequence[str]) -> None:
        """Give ``slots`` back and serve the waiters they unblock."""
        for slot in slots:
            kind, _, index = slot.partition(":")
            free = self._free[kind]
            number = int(index)
            if number in free or not 0 <= number < self.capacity[kind]:
                raise ValueError(f"slot {slot!r} is not held from pool {self.name!r}")
            free.append(number)
            free.sort()
        self._serve()

    def _serve(self) -> None:
        """Grant waiters in order; a waiter that cannot be served blocks its kinds."""
        blocked: set[str] = set()
        done = False
        for waiter in self._waiters:
            if waiter.future.done():
                done = True
                continue
            kinds = {k for k, c in waiter.need.items() if c}
            if not kinds & blocked and self._fits(waiter.need):
                waiter.future.set_result(self._take(waiter.need))
                done = True
                continue
            blocked |= {k for k in kinds if len(self._free[k]) < waiter.need[k]}
            if len(blocked) == len(KINDS):
                break  # every kind is spoken for: nobody further back can be served
        if done:
            self._waiters = [w for w in self._waiters if not w.future.done()]

    def __repr__(self) -> str:
        usage = ", ".join(f"{k} {b}/{b + i}" for k, (b, i) in self.usage().items())
        return f"ResourcePool({self.name!r}: {usage}, {self.waiting} waiting)"


def pool_usage(pool: Any) -> dict[str, tuple[int, int]]:
    """``pool.usage()`` for any object that has it (duck-typed), else ``{}``."""
    usage = getattr(pool, "usage", None)
    return usage() if callable(usage) else {}
