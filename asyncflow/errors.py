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
     └── TaskDefinitionError            (TypeError) bad decorator target or body

Bad values in a task body keep their builtin types: an executable body that
returns ``""`` fails with ``ValueError``, a non-``str`` with ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AsyncFlowError",
    "BackendError",
    "DependencyFailureError",
    "EngineShutdownError",
    "ExecutableError",
    "TaskDefinitionError",
    "UnknownBackendError",
]


class AsyncFlowError(Exception):
    """Root of every exception asyncflow raises on its own account."""


class DependencyFailureError(AsyncFlowError):
    """A task could not run because one of its dependencies failed.

    Attributes:
        task_name: the name of the task that could not run.
        failed_dependencies: names of the dependencies that failed.
        root_cause: the exception of the first failed dependency (also
            ``__cause__``). When that dependency itself failed on a
            dependency, the errors nest; :attr:`original_exception` walks
            the chain down to the error that started it.
    """

    def __init__(
        self,
        task_name: str,
        failed_dependencies: Sequence[str],
        root_cause: BaseException | None,
    ) -> None:
        super().__init__(f"Cannot execute '{task_name}' due to dependency failure")
        self.task_name = task_name
        self.failed_dependencies = list(failed_dependencies)
        self.root_cause = root_cause
        self.__cause__ = root_cause

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
        names = [self.task_name]
        cause: BaseException | None = self
        while isinstance(cause, DependencyFailureError) and cause.failed_dependencies:
            names.append(cause.failed_dependencies[0])
            cause = cause.root_cause
        return names


class ExecutableError(AsyncFlowError):
    """An executable task's process exited with a non-zero code.

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


class EngineShutdownError(AsyncFlowError, RuntimeError):
    """A task was called on an engine that is shut down."""


class UnknownBackendError(AsyncFlowError, ValueError):
    """A task was routed with ``backend=`` to a name no backend has."""


class BackendError(AsyncFlowError):
    """A backend reported a failure without an exception, or broke its contract."""


class TaskDefinitionError(AsyncFlowError, TypeError):
    """A decorator was given something that cannot become a task."""
