"""The backend interface, declared: what the engine calls and what it sends.

:class:`Backend` is the surface the engine drives (the one RHAPSODY's
backends have, so they plug in unchanged); :class:`TaskDescription` is the
dict it hands over for every task, and the dict a backend writes its results
into before it reports a state. :class:`DataLinking` adds the optional hooks
for backends that stage files between tasks. :class:`BaseBackend` is what
the built-in backends share.

A backend reports each task with ``callback(task, state)``: ``state`` is
``RUNNING`` (optional, when the task really starts), then one of ``DONE``,
``FAILED`` or ``CANCELED``; it may call from any thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, ClassVar, Final, Protocol, TypedDict, runtime_checkable

__all__ = [
    "CANCEL_STATES",
    "FINAL_STATES",
    "SHELL",
    "STATE_CANCELED",
    "STATE_DONE",
    "STATE_FAILED",
    "STATE_RUNNING",
    "SUBMITTED",
    "TASK_STATES",
    "Backend",
    "BaseBackend",
    "DataLinking",
    "StateCallback",
    "StopsTasks",
    "TaskDescription",
    "TaskMetadata",
    "Upstream",
]

logger = logging.getLogger("asyncflow.backends")


class TaskMetadata(TypedDict, total=False):
    """``TaskDescription["metadata"]``: what a backend may want to know about
    a task's place in the graph (never whole descriptions of other tasks).

    Read it, never write it: tasks without dependencies, files or workflow
    type share one."""

    dependencies: Any  # a sequence of {"uid": ..., "name": ...}, built when read
    input_files: tuple[str, ...]
    output_files: tuple[str, ...]
    workflow_name: str | None


class TaskDescription(TypedDict, total=False):
    """One task as the engine hands it to ``Backend.submit_tasks``.

    The engine fills the first group of keys; a backend writes the second
    (RHAPSODY's field names) before it reports ``DONE`` or ``FAILED``.
    ``engine.components[uid]["description"]`` is this dict.
    """

    # ---- written by the engine
    uid: str  # "task.000001"
    name: str  # the decorated function's name
    function: Callable[..., Coroutine[Any, Any, Any]] | None  # function tasks: the async def
    args: tuple[Any, ...]  # resolved positional arguments (futures replaced by values)
    kwargs: dict[str, Any]  # resolved keyword arguments
    executable: str | None  # executables: the first word of the command
    arguments: list[str] | None  # executables: the other words
    command: str | None  # executables: the shell line as returned; None for an exact argv
    shell: bool  # executables: whether the command runs through /bin/sh -c
    prompt: str | None  # prompt tasks: the prompt
    is_service: bool  # @task(service=True): a long-running service
    task_backend_specific_kwargs: dict[str, Any]  # the merged task_description
    target_backend: str | None  # backend="<name>", None when not routed
    capture_stdio: bool  # write <work_dir>/<uid>.stdout and .stderr
    workflow_id: str | None  # the workflow instance (or enclosing block uid)
    metadata: TaskMetadata
    attempt: int  # a retried task's attempt (2, 3...): the same uid submitted again
    # ---- written by the backend
    return_value: Any  # a function's return value (or a prompt's answer)
    stdout: str
    stderr: str
    exit_code: int | None
    exception: BaseException | str | None  # why a task failed
    slots: list[str]  # resource slots a slot-aware backend assigned ("gpu:0")


StateCallback = Callable[[TaskDescription, str], None]

# The shell a command string runs through: ``/bin/sh -c <line>``.
SHELL: Final = "/bin/sh"

# The states a backend reports (RHAPSODY's names).
STATE_RUNNING: Final = "RUNNING"
STATE_DONE: Final = "DONE"
STATE_FAILED: Final = "FAILED"
STATE_CANCELED: Final = "CANCELED"
# Both spellings of a cancellation are understood.
CANCEL_STATES: Final = frozenset({STATE_CANCELED, "CANCELLED"})
FINAL_STATES: Final = CANCEL_STATES | {STATE_DONE, STATE_FAILED}

TASK_STATES: dict[str, str] = {
    state: state for state in (STATE_RUNNING, STATE_DONE, STATE_FAILED, STATE_CANCELED)
}


class Upstream:
    """Stands in an argument for a dependency that has not ended yet.

    Only a backend that declares ``chains_dependencies = True`` ever sees
    one: the engine then hands it a function task whose dependencies run on
    that same backend before they end, with each unfinished dependency (a
    direct argument) replaced by ``Upstream(its uid)``, and the backend
    wires it to its own handle of that task (a Dask future, say), so a chain
    never comes back to the client between its links. The dependencies were
    always submitted first.
    """

    __slots__ = ("uid",)

    def __init__(self, uid: str) -> None:
        self.uid = uid

    def __repr__(self) -> str:
        return f"Upstream({self.uid!r})"


class Submitted:
    """What ``submit_tasks`` may return when it handed every task over before
    returning: awaiting it does nothing. The engine then skips the coroutine
    step (and the Task) an ``async def`` submission costs; use the one
    instance, :data:`SUBMITTED`."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that ends at once

    def __repr__(self) -> str:
        return "SUBMITTED"


SUBMITTED: Final = Submitted()


@runtime_checkable
class Backend(Protocol):
    """What the engine calls on every backend.

    Any object with these members is a backend: the built-in ones
    (:class:`BaseBackend` subclasses), RHAPSODY's, or your own
    (``docs/backends.md``, "Write your own backend"). Optional class
    attributes: ``submits_inline`` (see :class:`BaseBackend`),
    ``chains_dependencies`` (see :class:`Upstream`), and two that describe
    a ``submit_tasks`` and count only in the class that defines it:
    ``reports_inline = True`` (every task is reported before it returns,
    on the loop's thread) and ``reads_metadata = False`` (a task's
    ``metadata`` is never read: the engine makes it only when
    ``engine.components`` reads the description).
    """

    name: str
    """The name tasks are routed by (``backend="<name>"``); unique per engine."""

    _work_dir: str
    """Where task files go; the engine sets it to ``<work_dir>/<engine uid>``
    before any task runs (the name is RHAPSODY's)."""

    is_attached: bool
    """Set to True by the engine that registered this backend."""

    attached_to: list[str]
    """The uids of the engines this backend was registered with."""

    def register_callback(self, callback: StateCallback) -> None:
        """Keep ``callback``: call it with ``(task, state)`` for every state change."""

    def get_task_states_map(self) -> Mapping[str, Any]:
        """The state names this backend reports."""

    def submit_tasks(self, tasks: list[TaskDescription]) -> Awaitable[Any]:
        """Start ``tasks`` (usually an ``async def``).

        Return once they are handed over, not when they end: ends are
        reported through the callback. An exception fails every task of the
        batch. A plain method that hands them over at once may return
        :data:`SUBMITTED` (the built-in backends do).
        """

    def cancel_task(self, uid: str) -> Awaitable[Any]:
        """Stop the task ``uid`` and report it ``CANCELED`` (or its real end)."""

    def shutdown(self) -> Awaitable[Any]:
        """Stop every task and free every resource; never block the event loop."""


@runtime_checkable
class StopsTasks(Protocol):
    """An optional hook of a backend that can stop a running task by force.

    The engine calls it when a task runs past its ``timeout=`` (and
    ``cancel_task`` on backends without it).
    """

    def stop_task(self, uid: str) -> Awaitable[Any]:
        """Stop the running task ``uid`` even where ``cancel_task`` would let it
        finish (a process-pool worker is killed), and report its end."""


@runtime_checkable
class DataLinking(Protocol):
    """Optional hooks of a backend that moves files between tasks.

    The engine calls them, before a task is submitted, only on a backend
    whose ``supports_*`` flag is True.
    """

    supports_implicit_data_linking: bool
    supports_explicit_data_linking: bool

    def link_implicit_data_deps(self, src_task: TaskDescription, dst_task: TaskDescription) -> None:
        """Make the outputs of ``src_task`` (a dependency) visible to ``dst_task``."""

    def link_explicit_data_deps(
        self,
        src_task: TaskDescription | None = None,
        dst_task: TaskDescription | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> None:
        """Stage one file for ``dst_task``: ``file_name`` produced by
        ``src_task``, or ``file_path`` from outside (``src_task`` None)."""


def _no_callback(task: TaskDescription, state: str) -> None:
    logger.debug("task %s is %s but no callback is registered", task.get("uid"), state)


class BaseBackend:
    """The common part of the built-in backends.

    Args:
        name: the name tasks are routed by (``backend="<name>"``).
    """

    submits_inline: ClassVar[bool] = True
    """``submit_tasks`` never needs an asyncio Task of its own, so the engine
    may step it inline (cheaper). Foreign backends run theirs in a Task."""

    supports_implicit_data_linking = False
    supports_explicit_data_linking = False

    def __init__(self, name: str = "default") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"backend name must be a non-empty string, not {name!r}")
        self.name = name
        self._callback: StateCallback = _no_callback
        self._work_dir: str = os.getcwd()
        self.is_attached = False
        self.attached_to: list[str] = []

    def register_callback(self, callback: StateCallback) -> None:
        """Set the function that receives ``(task, state)`` reports."""
        self._callback = callback

    def get_task_states_map(self) -> dict[str, str]:
        """The state names this backend reports."""
        return dict(TASK_STATES)

    def link_implicit_data_deps(self, src_task: TaskDescription, dst_task: TaskDescription) -> None:
        """Nothing to do: built-in backends share one file system."""

    def link_explicit_data_deps(
        self,
        src_task: TaskDescription | None = None,
        dst_task: TaskDescription | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> None:
        """Nothing to do: built-in backends share one file system."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
