"""Running ``async def`` task functions inside pool workers.

A worker thread keeps one event loop for its whole life, so a task pays for a
``run_until_complete`` (a few microseconds), never for a new loop. Process
workers do the same, and exchange functions, arguments, results and
exceptions with cloudpickle, so closures and ``__main__`` functions work.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dis
import inspect
import os
import pickle
import signal
import threading
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Coroutine
from types import CodeType, FunctionType
from typing import Any

__all__ = [
    "BACKEND_GONE",
    "CancelHandles",
    "never_suspends",
    "run_coroutine_function",
    "run_pickled",
]

_local = threading.local()

# uid -> (worker loop, task running on it), for cancelling a running function.
CancelHandles = dict[str, tuple[asyncio.AbstractEventLoop, "asyncio.Task[Any]"]]


async def _nothing() -> None:
    return None


class _LoopHolder:
    """Owns a worker thread's loop; closes it when the thread's locals go."""

    __slots__ = ("loop", "stand_in")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # What current_task() returns while a body that never awaits runs
        # without a Task of its own (see _run_at_once): a finished Task.
        self.stand_in = asyncio.Task(_nothing(), loop=self.loop, name="asyncflow-worker")
        _step_now(self.loop)

    def __del__(self) -> None:
        if not self.loop.is_closed() and not self.loop.is_running():
            self.loop.close()


def _worker() -> _LoopHolder:
    holder: _LoopHolder | None = getattr(_local, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _local.holder = _LoopHolder()
    return holder


# The opcodes where a coroutine can suspend (await, async for, async with),
# over the Python versions supported.
_SUSPENDING_OPCODES = frozenset(
    dis.opmap[name]
    for name in (
        "GET_AWAITABLE",
        "GET_AITER",
        "GET_ANEXT",
        "BEFORE_ASYNC_WITH",
        "SETUP_ASYNC_WITH",
        "YIELD_VALUE",
        "YIELD_FROM",
        "SEND",
    )
    if name in dis.opmap
)
_never_suspends: dict[CodeType, bool] = {}


def never_suspends(func: Any) -> bool:
    """Whether ``func`` is an ``async def`` function whose own code has no
    ``await``, ``async for`` or ``async with``: its coroutine ends in one step.
    (Checked once per function.)"""
    if type(func) is not FunctionType:
        return False
    code = func.__code__
    known = _never_suspends.get(code)
    if known is None:
        known = bool(code.co_flags & inspect.CO_COROUTINE) and not any(
            ins.opcode in _SUSPENDING_OPCODES for ins in dis.get_instructions(code)
        )
        _never_suspends[code] = known
    return known


def _run_at_once(holder: _LoopHolder, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that cannot suspend, in its one step, without a Task.

    As inside a Task: in a copy of the worker's context, with the worker's
    loop running (``get_running_loop()`` works) and a current task (the
    worker's finished stand-in: the body cannot await anything, so that is
    all a Task of its own would give it).
    """
    loop = holder.loop
    asyncio.events._set_running_loop(loop)
    _enter_task(loop, holder.stand_in)
    try:
        contextvars.copy_context().run(coro.send, None)
    except StopIteration as done:
        return done.value
    finally:
        _leave_task(loop, holder.stand_in)
        asyncio.events._set_running_loop(None)
    coro.close()  # pragma: no cover - its code has no suspension point
    raise RuntimeError("a coroutine without an await suspended")  # pragma: no cover


def _step_now(loop: asyncio.AbstractEventLoop) -> None:
    """Run the callbacks already due on a loop that is not running.

    A new task's first step is such a callback. Running it here, with the
    loop marked as running for this thread, is what ``run_until_complete``
    would do first, minus the selector poll that releases the GIL: a task
    that never suspends finishes without a system call. The step runs inside
    its ``Task``, so ``current_task()``, ``asyncio.timeout()`` and task groups
    work as usual.
    """
    ready = getattr(loop, "_ready", None)
    if ready is None:  # not a BaseEventLoop: let it run the normal way
        return
    asyncio.events._set_running_loop(loop)
    try:
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()
    finally:
        asyncio.events._set_running_loop(None)


def run_coroutine_function(
    func: Callable[..., Coroutine[Any, Any, Any]],
    args: Any,
    kwargs: Any,
    uid: str | None = None,
    handles: CancelHandles | None = None,
) -> Any:
    """Run ``func(*args, **kwargs)`` to completion on this thread's loop.

    With ``handles``, the running asyncio task is registered under ``uid``
    so another thread can cancel it with ``loop.call_soon_threadsafe``. A
    function that never awaits runs without a Task (nothing could cancel it
    before it ends anyway): a Task and its first step cost ten times the
    call of such a body.
    """
    holder = _worker()
    if never_suspends(func):
        return _run_at_once(holder, func(*(args or ()), **(kwargs or {})))
    loop = holder.loop
    # A Task made directly: the worker's own loop has no task factory, and
    # this skips the loop method's checks (a few microseconds a task).
    task = asyncio.Task(func(*(args or ()), **(kwargs or {})), loop=loop)
    if handles is not None and uid is not None:
        handles[uid] = (loop, task)
    try:
        _step_now(loop)
        if task.done():
            return task.result()
        return loop.run_until_complete(task)
    finally:
        if handles is not None and uid is not None:
            handles.pop(uid, None)


BACKEND_GONE = "the backend that sent this task was shut down before it started"


_signals_reset = False


def _own_signals() -> None:
    """Undo, once per worker process, what a forked worker inherited from the
    engine's process: the event loop's signal wake-up fd (a signal sent to the
    worker alone would reach the engine's loop) and its SIGTERM handler (the
    worker must die of SIGTERM, as a batch system expects)."""
    global _signals_reset
    if _signals_reset or threading.current_thread() is not threading.main_thread():
        return
    _signals_reset = True
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_pickled(payload: bytes, uid: str, started: Any, slots: Any = ()) -> tuple[bool, bytes]:
    """Process-pool entry point: report start, unpickle, run, pickle the outcome.

    ``started`` is where the start is reported: the pickled proxy of the
    backend's manager queue (or the proxy itself, or ``None``). It is opened
    here rather than while the pool unpickles the call: a call still queued
    when the backend shut down its manager then comes back cancelled, without
    running and without a worker traceback.

    Returns ``(True, pickled value)`` or ``(False, pickled exception)``; the
    exception is an ``asyncio.CancelledError`` when the backend was gone.
    """
    import cloudpickle

    _own_signals()
    if started is not None:
        try:
            queue = pickle.loads(started) if isinstance(started, bytes) else started
        except Exception:  # noqa: BLE001 - the manager is gone: the backend shut down
            return False, cloudpickle.dumps(asyncio.CancelledError(BACKEND_GONE))
        # A lost start report must not fail the task. The pid lets the
        # backend stop this worker when the task must end (a timeout), and
        # tells which task a crashed worker was running.
        with contextlib.suppress(Exception):
            queue.put((uid, os.getpid()))
    func, args, kwargs = cloudpickle.loads(payload)
    from ..resources import set_current_slots

    set_current_slots(slots)
    try:
        value = run_coroutine_function(func, args, kwargs)
    except BaseException as exc:  # noqa: BLE001 - shipped back to the parent
        try:
            return False, cloudpickle.dumps(exc)
        except Exception:  # noqa: BLE001 - unpicklable exception
            return False, cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return True, cloudpickle.dumps(value)
