"""``TaskFuture``: the future a task call returns, and the task's own record.

One object per task keeps memory flat at 100,000 tasks: the future carries the
fields the engine needs (slots, no ``__dict__``); the description dict a
backend receives is built when the task is released and kept for
``engine.components``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..telemetry import names as n

if TYPE_CHECKING:
    from ..backends._base import Backend, TaskDescription
    from ..telemetry.observer import LiveWorkflow, SpanMore, TaskShape, TaskSpan
    from ._engine import WorkflowEngine
    from ._policy import RunState, TaskPolicy
    from ._tasks import TaskSpec

__all__ = ["TaskFuture", "new_task_future"]

T = TypeVar("T")

_running_loop = asyncio._get_running_loop

# Task kinds: the values of the ``asyncflow.task.type`` span attribute.
KIND_FUNCTION = n.TYPE_FUNCTION
KIND_EXECUTABLE = n.TYPE_EXECUTABLE
KIND_PROMPT = n.TYPE_PROMPT
KIND_BLOCK = n.TYPE_BLOCK


class TaskFuture(asyncio.Future, Generic[T]):  # type: ignore[type-arg]
    """An ``asyncio.Future`` for one task or block of a :class:`WorkflowEngine`.

    Made by :func:`new_task_future`, which sets every field.

    Attributes:
        id: the engine-unique number, e.g. ``"000001"``.
        uid: ``"task.000001"`` or ``"block.000001"``.
        name: the function name.
        span_*: its telemetry span (``telemetry.observer.TaskSpan``), set by
            telemetry only, from when it observes the task; unset without it.
    """

    __slots__ = (
        "_backend",
        "_body",
        "_cancel_msg",
        "_cancel_requested",
        "_context",
        "_deps",
        "_desc",
        "_engine",
        "_files",
        "_members",
        "_policy",
        "_pushed",
        "_run",
        "_running",
        "_spec",
        "_tel",
        "args",
        "kind",
        "kwargs",
        "name",
        "span_depends_on",
        "span_end",
        "span_id",
        "span_ids",
        "span_more",
        "span_owner",
        "span_parent",
        "span_queued",
        "span_resolved",
        "span_shape",
        "span_slots",
        "span_start",
        "span_started",
        "span_submitted",
        "target_backend",
        "task_description",
        "uid",
        "workflow_id",
        "workflow_name",
    )

    uid: str
    name: str
    kind: str
    args: Any
    kwargs: Any
    target_backend: str | None
    task_description: dict[str, Any]
    workflow_id: str | None
    workflow_name: str | None
    _context: contextvars.Context  # blocks only: where the block was called
    _spec: TaskSpec  # the decorator's options (the description's shared keys)

    _engine: WorkflowEngine
    _running: bool
    _cancel_requested: bool
    _cancel_msg: Any
    _desc: TaskDescription | None
    _backend: Backend | None
    _body: asyncio.Task[Any] | None
    _members: list[TaskFuture[Any]] | None
    _pushed: bool
    _deps: Sequence[Any]
    _files: Any
    # The task itself while telemetry observes it (its span is in the
    # span_* fields, which only telemetry sets, from task_created on).
    _tel: TaskSpan | None
    span_id: int
    span_parent: int
    span_start: int
    span_end: int
    span_resolved: int
    span_queued: int
    span_submitted: int
    span_started: int
    span_ids: int
    span_shape: TaskShape
    span_owner: LiveWorkflow | None
    span_depends_on: tuple[str, ...]
    span_slots: tuple[str, ...]
    span_more: SpanMore | None
    _policy: TaskPolicy | None
    _run: RunState | None

    # What the decorator fixed, read from it (three slots less per task).
    @property
    def func(self) -> Any:
        """The decorated ``async def`` function."""
        return self._spec.func

    @property
    def capture_stdio(self) -> bool:
        """Whether the backend writes ``<uid>.stdout`` and ``.stderr``."""
        return self._spec.capture_stdio

    @property
    def service(self) -> bool:
        """Whether the task is a long-running service."""
        return self._spec.service

    @property
    def id(self) -> str:
        """The engine-unique number, e.g. ``"000001"`` (the end of the uid)."""
        return self.uid.rpartition(".")[2]

    @property
    def state(self) -> str:
        """``PENDING``, ``RUNNING``, ``DONE``, ``FAILED`` or ``CANCELLED``."""
        if self.done():
            if self.cancelled():
                return "CANCELLED"
            return "FAILED" if self.exception() is not None else "DONE"
        return "RUNNING" if self._running else "PENDING"

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the task.

        A task that has not reached a backend is cancelled at once. A task a
        backend holds is asked to stop through that backend; the future is
        cancelled when the backend reports the task ended (whatever it
        reports: the caller asked for a cancellation, so a late result is
        dropped). Cancelling a block cancels its body and every unfinished
        member, recursively. Returns False when the future is already done.
        """
        if self.done():
            return False
        return self._engine._request_cancel(self, msg)

    def _cancel_now(self, msg: Any = None) -> bool:
        return super().cancel(msg)

    def __repr__(self) -> str:
        return f"<TaskFuture {self.uid} {self.name!r} {self.state}>"


def new_task_future(
    engine: WorkflowEngine, loop: asyncio.AbstractEventLoop, spec: TaskSpec, uid: str
) -> TaskFuture[Any]:
    """The future of one task call, every field set.

    ``TaskFuture`` has no ``__init__`` of its own: a Python ``__init__``
    (called from C, calling ``Future.__init__`` back) cost a third of
    making the future, which the engine does for every task.
    """
    # Without a loop argument the future takes the running loop, and the
    # call builds no keyword arguments: cheaper, when that loop is ``loop``.
    fut: TaskFuture[Any] = TaskFuture() if _running_loop() is loop else TaskFuture(loop=loop)
    fut._engine = engine
    fut._spec = spec
    fut.uid = uid
    fut.kind = spec.kind
    fut.name = spec.name
    fut.target_backend = spec.backend
    fut._running = False
    fut._cancel_requested = False
    fut._cancel_msg = None
    fut._desc = None
    fut._backend = None
    fut._body = None
    fut._members = None
    fut._pushed = False  # submitted before its dependencies ended
    # Its distinct dependencies; the args tuple itself when every argument
    # is one (the engine tests ``_deps is args``).
    fut._deps = ()
    fut._files = None
    fut._tel = None  # itself, while telemetry observes it (span_* unset until then)
    fut._policy = None  # retries, timeout, cache (None: none)
    fut._run = None  # their moving parts, with a policy
    return fut
