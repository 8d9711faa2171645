"""The telemetry observer, declared: every hook the engine calls on a task's way.

The engine holds one :class:`TaskObserver` (or None when telemetry is off)
and calls it at each transition of a task or block, in this order::

    task_created -> resolved -> queued -> submitted_all -> [assigned]
                 -> started -> task_finished

(``task_created(..., ready=True)`` is created, resolved and queued in one
call for a function task with nothing to wait for, and ``ready`` resolved
and queued in one call for one whose dependencies just ended;
``submitted_all`` reports a backend's whole batch at once; ``completed``
is started, if the task did not report it, and task_finished of a task
that completed.)

(blocks skip queued and submitted; a task that fails or is cancelled before
it runs jumps to ``task_finished``). A task with retries reports each
attempt's end with ``attempt_ended`` (later attempts report no queued,
submitted or started again); a cached task reports its lookup with
``cached`` (a hit then goes straight to ``task_finished``). Around workflow scopes
``workflow_started`` / ``workflow_ended``. The recorder in
``telemetry/_recorder.py`` implements it (its task steps in
``_task_steps.py``, a task's end in ``_task_ends.py``, its state in
``_recorder_base.py``). Hooks run on the engine's loop and must be cheap
and never raise: a task's telemetry is never a reason for the task to fail
(as trio's ``Instrument`` hooks, they observe, never steer).

Pure: no SDK, no asyncio, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from ._shapes import TaskShape
from ._spans import LiveSpan, LiveWorkflow
from ._task_span import SpanMore, TaskSpan

__all__ = [
    "LiveSpan",
    "LiveWorkflow",
    "SpanMore",
    "TaskInfo",
    "TaskObserver",
    "TaskShape",
    "TaskSpan",
]


class TaskInfo(Protocol):
    """What telemetry reads of a task or block (the engine's ``TaskFuture``)."""

    @property
    def uid(self) -> str:
        """``"task.000001"`` or ``"block.000001"``."""

    @property
    def name(self) -> str:
        """The decorated function's name."""

    @property
    def kind(self) -> str:
        """``function``, ``executable``, ``prompt`` or ``block`` (``names.TYPE_*``)."""

    @property
    def workflow_id(self) -> str | None:
        """The workflow instance (or enclosing block uid) it belongs to."""

    @property
    def workflow_name(self) -> str | None:
        """The workflow type, when the task was created in a named scope."""

    @property
    def task_description(self) -> dict[str, Any]:
        """The merged ``task_description`` (``cpus`` and ``gpus`` are read)."""


class TaskObserver(Protocol):
    """The hooks the engine calls; one observer per engine."""

    def task_created(
        self,
        task: TaskSpan,
        backend: str,
        parent: LiveSpan | TaskSpan | None,
        scope_id: str | None,
        ready: bool = False,
    ) -> TaskSpan:
        """A task or block was registered; returns the span handed to later
        hooks: the task itself, whose ``span_*`` fields hold its span.

        Args:
            task: the task.
            backend: the name of the backend it is routed to.
            parent: the span of the block it was created in (the block), if any.
            scope_id: the id of the innermost workflow scope, if any.
            ready: it is resolved and queued at the same moment (a function
                task with nothing to wait for): the same as calling
                ``ready`` next, which the engine then does not.
        """

    def resolved(self, span: TaskSpan) -> None:
        """Every dependency finished; its arguments are resolved."""

    def queued(self, span: TaskSpan) -> None:
        """It waits in the engine's outbox for its backend."""

    def ready(self, span: TaskSpan) -> None:
        """``resolved`` and ``queued`` at one moment (a task queued as soon
        as its arguments resolved): the same as calling both."""

    def submitted_all(self, spans: list[TaskSpan]) -> None:
        """They were handed to their backend in one ``submit_tasks`` call
        (one clock reading for the batch)."""

    def assigned(self, span: TaskSpan, slots: Iterable[Any]) -> None:
        """A slot-aware backend gave it these slots (just before it starts)."""

    def started(self, span: TaskSpan) -> None:
        """It started running (a block: its body started)."""

    def flush_soon(self) -> None:
        """A task's future completes now (``task_finished`` follows in the
        same call): what is recorded must be durable before the future's
        waiters run, e.g. sent at the end of this loop turn."""

    def task_finished(
        self,
        span: TaskSpan,
        result: str,
        error: BaseException | None,
        cut_off: bool,
        depends_on: tuple[str, ...],
    ) -> None:
        """It ended.

        Args:
            span: the span ``task_created`` returned.
            result: ``names.RESULT_COMPLETED``, ``RESULT_FAILED`` or ``RESULT_CANCELED``.
            error: the exception of a failed task.
            cut_off: it was cancelled because the engine shut down.
            depends_on: the uids of the tasks it depended on.
        """

    def completed(self, span: TaskSpan, ran: bool, depends_on: tuple[str, ...]) -> None:
        """``started`` (unless ``ran``: the backend reported it running) and
        ``task_finished`` with ``RESULT_COMPLETED``: the same as calling them
        (call ``flush_soon`` first, as for ``task_finished``)."""

    def attempt_ended(
        self,
        span: TaskSpan,
        attempt: int,
        started_ns: int,
        error: BaseException | None,
        retrying: bool,
    ) -> None:
        """One attempt of a task with retries ended (called for every attempt).

        Args:
            span: the span ``task_created`` returned.
            attempt: its number, from 1.
            started_ns: when it started (epoch ns; 0 if it never started).
            error: why it failed; None for the attempt that succeeded.
            retrying: another attempt follows.
        """

    def cached(
        self, span: TaskSpan, state: str, source_session: str | None, source_task: str | None
    ) -> None:
        """A cached task's result was looked up.

        Args:
            span: the span ``task_created`` returned.
            state: ``names.CACHE_HIT`` (the task will not run) or ``CACHE_MISS``.
            source_session: for a hit, the session that stored the result.
            source_task: for a hit, the uid of the task that stored it.
        """

    def workflow_started(self, wf_id: str, name: str | None, parent: int | None) -> LiveWorkflow:
        """A workflow scope opened (``parent``: the enclosing span's id)."""

    def workflow_ended(self, workflow: LiveWorkflow, error: BaseException | None) -> None:
        """Its scope exited (the span ends when its last task has ended too)."""

    def open_workflow(self, wf_id: str) -> LiveWorkflow | None:
        """The span of the open workflow scope ``wf_id``, if there is one."""
