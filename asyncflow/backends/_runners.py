"""Running ``async def`` task functions inside pool workers.

A worker thread keeps one event loop for its whole life, so a task pays for a
``run_until_complete`` (a few microseconds), never for a new loop. Process
workers do the same, and exchange functions, arguments, results and
exceptions with cloudpickle, so closures and ``__main__`` functions work.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["CancelHandles", "run_coroutine_function", "run_pickled"]

_local = threading.local()

# uid -> (worker loop, task running on it), for cancelling a running function.
CancelHandles = dict[str, tuple[asyncio.AbstractEventLoop, "asyncio.Task[Any]"]]


def _worker_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def run_coroutine_function(
    func: Callable[..., Coroutine[Any, Any, Any]],
    args: Any,
    kwargs: Any,
    uid: str | None = None,
    handles: CancelHandles | None = None,
) -> Any:
    """Run ``func(*args, **kwargs)`` to completion on this thread's loop.

    With ``handles``, the running asyncio task is registered under ``uid``
    so another thread can cancel it with ``loop.call_soon_threadsafe``.
    """
    loop = _worker_loop()
    task = loop.create_task(func(*(args or ()), **(kwargs or {})))
    if handles is None or uid is None:
        return loop.run_until_complete(task)
    handles[uid] = (loop, task)
    try:
        return loop.run_until_complete(task)
    finally:
        handles.pop(uid, None)


def run_pickled(payload: bytes, uid: str, started: Any) -> tuple[bool, bytes]:
    """Process-pool entry point: unpickle, report start, run, pickle the outcome.

    Returns ``(True, pickled value)`` or ``(False, pickled exception)``.
    """
    import cloudpickle

    func, args, kwargs = cloudpickle.loads(payload)
    if started is not None:
        try:
            started.put(uid)
        except Exception:  # noqa: BLE001 - a lost start report must not fail the task
            pass
    try:
        value = run_coroutine_function(func, args, kwargs)
    except BaseException as exc:  # noqa: BLE001 - shipped back to the parent
        try:
            return False, cloudpickle.dumps(exc)
        except Exception:  # noqa: BLE001 - unpicklable exception
            return False, cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return True, cloudpickle.dumps(value)
