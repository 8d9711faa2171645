"""Exceptions raised by asyncflow.

Every exception the engine raises on its own account derives from
:class:`AsyncFlowError`; where a builtin base already carries the meaning it
is a second base, so ``except ValueError`` keeps working::

    AsyncFlowError
     ├── DependencyFailureError         a dependency failed; names the chain
     ├── ExecutableError                non-zero exit of an executable task
     ├── EngineShutdownError            (RuntimeError) task call after shutdown
     ├── UnknownBackendError            (ValueError) ``backend=`` names no backend
     ├── BackendError                   a backend lost a task or broke its contract
     ├── TaskDefinitionError            (TypeError) bad decorator target or body
     ├── TaskTimeoutError               (TimeoutError) a task ran past its ``timeout=``
     └── CacheError                     the result cache file is unusable (corrupt, foreign)

Bad values in a task body keep their builtin types: an executable body that
returns ``""`` fails with ``ValueError``, a non-``str`` with ``TypeError``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "AsyncFlowError",
    "BackendError",
    "CacheError",
    "DependencyFailureError",
    "EngineShutdownError",
    "ExecutableError",
    "TaskDefinitionError",
    "TaskTimeoutError",
    "UnknownBackendError",
]


class AsyncFlowError(Exception):
    """Root of every exception asyncflow raises on its own account."""


_STANDARD_MESSAGE = re.compile(r"Cannot execute '(.+)' due to dependency failure", re.DOTALL)


def _task_named_in(message: object) -> str | None:
    """The task name in a message of the engine's standard form, else ``None``."""
    if not isinstance(message, str):
        return None
    match = _STANDARD_MESSAGE.fullmatch(message)
    return match.group(1) if match else None


class DependencyFailureError(AsyncFlowError):
    """A task could not run because one of its dependencies failed.

    The constructor is the one of ``radical.asyncflow``: a message, then the
    optional names of the failed dependencies and the root cause::

        DependencyFailureError("Stage 2 failed")
        DependencyFailureError("Stage 2 failed", failed_dependencies=["a"], root_cause=exc)

    The errors the engine raises read ``"Cannot execute '<task>' due to
    dependency failure"``; :meth:`for_task` builds one. A message of that
    form sets :attr:`task_name` whichever way it came.

    The error survives ``pickle`` and ``copy.deepcopy`` (so it can travel
    back from a worker process) with its message and attributes.

    Attributes:
        task_name: the name of the task that could not run; ``None`` when
            the message does not name one.
        failed_dependencies: names of the dependencies that failed.
        root_cause: the exception of the first failed dependency (also
            ``__cause__``). When that dependency itself failed on a
            dependency, the errors nest; :attr:`original_exception` walks
            the chain down to the error that started it.
    """

    task_name: str | None
    failed_dependencies: list[str]
    root_cause: BaseException | None

    def __init__(
        self,
        message: str,
        failed_dependencies: Sequence[str] | None = None,
        root_cause: BaseException | None = None,
        *,
        task_name: str | None = None,
    ) -> None:
        if task_name is None:
            task_name = _task_named_in(message)
        super().__init__(message)
        self.task_name = task_name
        self.failed_dependencies = list(failed_dependencies or ())
        self.root_cause = root_cause
        self.__cause__ = root_cause

    @classmethod
    def for_task(
        cls,
        task_name: str,
        failed_dependencies: Sequence[str],
        root_cause: BaseException | None,
    ) -> DependencyFailureError:
        """The error of task ``task_name``, with the engine's standard message."""
        return cls(cls.message_for(task_name), failed_dependencies, root_cause, task_name=task_name)

    @staticmethod
    def message_for(task_name: str) -> str:
        """The engine's message for a task that could not run."""
        return f"Cannot execute '{task_name}' due to dependency failure"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the final message alone (never re-read as a task
        # name); the attributes come back with the state.
        message = self.args[0] if self.args else ""
        return (type(self), (message,), dict(self.__dict__))

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        if state:
            self.__dict__.update(state)
        self.__cause__ = self.root_cause

    @property
    def original_exception(self) -> BaseException | None:
        """The innermost exception of a chain of dependency failures."""
        cause: BaseException | None = self.root_cause
        while isinstance(cause, DependencyFailureError):
            cause = cause.root_cause
        return cause

    @property
    def chain(self) -> list[str]:
        """Names from this task down to the task whose own error started it."""
        names = [self.task_name] if self.task_name is not None else []
        cause: BaseException | None = self
        while isinstance(cause, DependencyFailureError) and cause.failed_dependencies:
            names.append(cause.failed_dependencies[0])
            cause = cause.root_cause
        return names


class ExecutableError(AsyncFlowError):
    """An executable task's process exited with a non-zero code.

    Survives ``pickle`` and ``copy.deepcopy`` with the same message and
    attributes.

    Attributes:
        exit_code: the process exit code (negative: killed by that signal).
        stderr: what the process wrote to standard error.
        stdout: what the process wrote to standard output.
        command: the argv that ran, when the backend reported it.
    """

    def __init__(
        self,
        exit_code: int | None,
        stderr: str = "",
        stdout: str = "",
        command: Sequence[str] | None = None,
    ) -> None:
        where = f" ({' '.join(command)})" if command else ""
        tail = stderr.strip()[-2000:] if stderr else ""
        msg = f"executable failed with exit code {exit_code}{where}"
        if tail:
            msg += f": {tail}"
        super().__init__(msg)
        self.exit_code = exit_code
        self.stderr = stderr
        self.stdout = stdout
        self.command = list(command) if command else None

    def __reduce__(self) -> tuple[Any, ...]:
        # ``args`` holds the finished message; rebuild from the fields instead,
        # or the message would be wrapped a second time.
        fields = (self.exit_code, self.stderr, self.stdout, self.command)
        return (type(self), fields, dict(self.__dict__))


class EngineShutdownError(AsyncFlowError, RuntimeError):
    """A task was called on an engine that is shut down."""


class UnknownBackendError(AsyncFlowError, ValueError):
    """A task was routed with ``backend=`` to a name no backend has."""


class BackendError(AsyncFlowError):
    """A backend reported a failure without an exception, or broke its contract."""


class TaskDefinitionError(AsyncFlowError, TypeError):
    """A decorator was given something that cannot become a task."""


class TaskTimeoutError(AsyncFlowError, TimeoutError):
    """A task ran longer than its ``timeout=`` and was stopped through its backend.

    Survives ``pickle`` with its message and attributes.

    Attributes:
        task_name: the name of the task.
        timeout: the limit, in seconds from the task's start.
    """

    def __init__(self, task_name: str, timeout: float, detail: str = "") -> None:
        msg = f"task '{task_name}' timed out after {timeout:g} s"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.task_name = task_name
        self.timeout = timeout
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_name, self.timeout, self.detail), dict(self.__dict__))


class CacheError(AsyncFlowError):
    """The result cache cannot be used: its file is corrupt, foreign or unreadable."""
