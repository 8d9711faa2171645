"""The four task decorators: ``function_task``, ``executable_task``,
``prompt_task`` and ``block``, bare or with options."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .. import _check
from ..errors import TaskDefinitionError
from ._future import KIND_BLOCK, KIND_EXECUTABLE, KIND_FUNCTION, KIND_PROMPT, TaskFuture
from ._policy import Backoff, TaskPolicy, policy_from

if TYPE_CHECKING:
    from ..backends._base import TaskMetadata
    from ._engine import WorkflowEngine

__all__ = [
    "NO_KWARGS",
    "NO_METADATA",
    "NO_TASK_DESCRIPTION",
    "TaskDecorator",
    "TaskSpec",
    "make_decorator",
]

P = ParamSpec("P")
R = TypeVar("R")

# The keyword arguments of a call without any: one shared empty dict, not a
# new one per task (backends read it, nobody writes it).
NO_KWARGS: dict[str, Any] = {}
# The task_description of a call that gives none, of a task whose decorator
# declares none: one shared empty dict (backends read it, nobody writes it).
NO_TASK_DESCRIPTION: dict[str, Any] = {}
# The metadata of a task without dependencies, files or workflow type: one
# dict shared by all of them (it describes, nobody writes it). A plain dict,
# not a read-only proxy: a backend may pickle or deep-copy a description.
NO_METADATA: TaskMetadata = {
    "dependencies": (),
    "input_files": (),
    "output_files": (),
    "workflow_name": None,
}

_DECORATOR_NAMES = {
    KIND_FUNCTION: "function_task",
    KIND_EXECUTABLE: "executable_task",
    KIND_PROMPT: "prompt_task",
    KIND_BLOCK: "block",
}


class TaskSpec:
    """What a decorator fixed about a task: its body and options."""

    __slots__ = (
        "backend",
        "capture_stdio",
        "func",
        "kind",
        "name",
        "policy",
        "service",
        "task_description",
        "template",
    )

    def __init__(
        self,
        kind: str,
        func: Callable[..., Coroutine[Any, Any, Any]],
        backend: str | None,
        capture_stdio: bool,
        service: bool,
        options: dict[str, Any] | None = None,
    ) -> None:
        label = _DECORATOR_NAMES[kind]
        name = getattr(func, "__name__", None) or repr(func)
        if not inspect.iscoroutinefunction(func):
            raise TaskDefinitionError(
                f"@{label} needs an 'async def' function; {name!r} is not a coroutine function"
            )
        if backend is not None and not isinstance(backend, str):
            raise TaskDefinitionError(
                f"@{label}(backend=...) takes a backend name (str), not {type(backend).__name__}"
            )
        self.kind = kind
        self.func = func
        self.name = name
        self.backend = backend
        self.capture_stdio = _check.flag("capture_stdio", capture_stdio)
        self.service = _check.flag("service", service)
        self.task_description = _default_task_description(func, name)
        # The keys of a task's description that every call shares, in the
        # order of the description (copied, then completed, per task).
        self.template: dict[str, Any] = {
            "uid": "",
            "name": name,
            "function": func if kind == KIND_FUNCTION else None,
            "args": (),
            "kwargs": NO_KWARGS,
            "executable": None,
            "arguments": None,
            "prompt": None,
            "is_service": self.service,
            "task_backend_specific_kwargs": NO_TASK_DESCRIPTION,
            "target_backend": backend,
            "capture_stdio": self.capture_stdio,
            "workflow_id": None,
            "metadata": NO_METADATA,
        }
        self.policy: TaskPolicy | None = None
        if options:
            if kind not in POLICY_KINDS:
                raise TaskDefinitionError(
                    f"@{label}: {', '.join(sorted(options))} apply to function and "
                    "executable tasks only"
                )
            try:
                self.policy = policy_from(options, f"@{label} {name!r}")
            except (TypeError, ValueError) as exc:
                raise TaskDefinitionError(str(exc)) from None


# The kinds of task that take retries, timeouts and caching.
POLICY_KINDS = frozenset({KIND_FUNCTION, KIND_EXECUTABLE})


def _default_task_description(func: Callable[..., Any], name: str) -> dict[str, Any]:
    try:
        param = inspect.signature(func).parameters.get("task_description")
    except (TypeError, ValueError):
        return {}
    if param is None or param.default is inspect.Parameter.empty or param.default is None:
        return {}
    if not isinstance(param.default, dict):
        raise TaskDefinitionError(
            f"the task_description default of {name!r} must be a dict, "
            f"not {type(param.default).__name__}"
        )
    try:
        _check.slot_counts(param.default)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"the task_description default of {name!r}: {exc}") from None
    return dict(param.default)


class TaskDecorator:
    """``@engine.function_task`` and friends, usable bare or with options."""

    __slots__ = ("_engine", "_kind")

    def __init__(self, engine: WorkflowEngine, kind: str) -> None:
        self._engine = engine
        self._kind = kind

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, TaskFuture[R]]: ...

    @overload
    def __call__(
        self,
        func: None = None,
        /,
        *,
        backend: str | None = None,
        capture_stdio: bool = False,
        service: bool = False,
        retries: int = 0,
        retry_delay: float | Backoff = 0.0,
        retry_on: type[Exception] | tuple[type[Exception], ...] = (Exception,),
        timeout: float | None = None,
        cache: bool | None = None,
    ) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, TaskFuture[R]]]: ...

    def __call__(
        self,
        func: Callable[P, Coroutine[Any, Any, R]] | None = None,
        /,
        *,
        backend: str | None = None,
        capture_stdio: bool = False,
        service: bool = False,
        retries: int = 0,
        retry_delay: float | Backoff = 0.0,
        retry_on: type[Exception] | tuple[type[Exception], ...] = (Exception,),
        timeout: float | None = None,
        cache: bool | None = None,
    ) -> Any:
        """Make ``func`` a task; with only options, return the decorator.

        Args:
            func: the ``async def`` function (omitted when options are given).
            backend: route the task to the backend with this name.
            capture_stdio: have the backend write ``<uid>.stdout``/``.stderr``.
            service: mark a long-running service task.
            retries: run a failed task again up to this many times (function
                and executable tasks).
            retry_delay: seconds before the first retry (doubling, with
                jitter, capped at 60 s), or a :class:`Backoff`.
            retry_on: the exception types that are retried (default ``Exception``;
                a timeout only when ``TimeoutError`` is named).
            timeout: seconds from the task's start; then it is stopped through
                its backend and fails with ``TaskTimeoutError``.
            cache: store and reuse the result (None: the engine's default).

        Raises:
            TypeError: ``func`` is not a coroutine function (names it), or an
                option has the wrong type.
            RuntimeError: the engine was built with ``WorkflowEngine()`` and no
                backend instead of ``await WorkflowEngine.create(...)``.
        """
        if func is not None and not callable(func):
            raise TaskDefinitionError(
                f"@{_DECORATOR_NAMES[self._kind]} takes options as keywords, e.g. backend={func!r}"
            )

        options: dict[str, Any] = {}
        # Exact types, so that a bool given as a count is caught, not ignored.
        if type(retries) is not int or retries != 0:
            options["retries"] = retries
        if type(retry_delay) is not float or retry_delay != 0.0:
            options["retry_delay"] = retry_delay
        if retry_on != (Exception,):
            options["retry_on"] = retry_on
        if timeout is not None:
            options["timeout"] = timeout
        if cache is not None:
            options["cache"] = cache

        if self._engine.backend is None:
            raise RuntimeError(
                "this WorkflowEngine has no backend: create engines with "
                "'engine = await WorkflowEngine.create(backend=...)', not WorkflowEngine()"
            )

        def wrap(f: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, TaskFuture[R]]:
            spec = TaskSpec(self._kind, f, backend, capture_stdio, service, options)
            call = self._engine._call

            @functools.wraps(f)
            def task(*args: P.args, **kwargs: P.kwargs) -> TaskFuture[R]:
                return call(spec, args, kwargs)

            task.__asyncflow_spec__ = spec  # type: ignore[attr-defined]
            return task

        if func is None:
            return wrap
        return wrap(func)


def make_decorator(engine: WorkflowEngine, kind: str) -> TaskDecorator:
    """The decorator of ``kind`` bound to ``engine``."""
    return TaskDecorator(engine, kind)
