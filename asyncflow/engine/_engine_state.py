"""The engine's state: what every part of ``WorkflowEngine`` reads and writes.

``EngineState`` holds the state ``__init__`` makes and the helpers every
layer uses; the layers above it (``Finishing``, ``Descriptions``,
``Submission``, ``Attempts``, ``Reporting``, ``Calls``) add the engine's
behaviour one concern at a time, and ``WorkflowEngine`` its public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import random
import secrets
import threading
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from .. import _check
from ..backends._base import Backend, TaskDescription
from . import _graph as g
from . import _native, _serving
from ._foreign import Adapter, adapter_for, runs_exact_argv
from ._future import KIND_BLOCK, KIND_EXECUTABLE, KIND_FUNCTION, KIND_PROMPT, TaskFuture
from ._registry import Components
from ._tasks import make_decorator

if TYPE_CHECKING:
    from ..cache import ResultCache
    from ..progress import ProgressReporter
    from ..telemetry.manager import Telemetry
    from ..telemetry.observer import TaskObserver
    from ._engine import WorkflowEngine

__all__ = ["EngineState"]

logger = logging.getLogger("asyncflow")

# A workflow scope: (workflow id, name, the block whose body opened it).
_Scope = tuple[str, "str | None", "TaskFuture[Any] | None"]
# Where a task was registered: its innermost block (if any) and its scope.
_Where = tuple["TaskFuture[Any] | None", "_Scope | None"]
# A backend as _hand_over uses it: the backend, whether it supports implicit
# and explicit data linking, its RHAPSODY adapter, whether executables go as
# an exact argv.
_Route = tuple[Backend, bool, bool, "Adapter | None", bool]
_RELEASE = g.RELEASE


def _validate_graph() -> bool:
    """``ASYNCFLOW_VALIDATE_GRAPH=1``: check every graph transition (the test suite's mode)."""
    return os.environ.get("ASYNCFLOW_VALIDATE_GRAPH", "") == "1"


class EngineState:
    """The engine's state and the helpers every layer of it uses."""

    def __init__(
        self,
        backend: Any = None,
        dry_run: bool = False,
        implicit_data: bool = True,
        uid: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "WorkflowEngine needs a running event loop: "
                "use 'engine = await WorkflowEngine.create(...)' inside async code"
            ) from None
        self._loop = loop
        self._thread_id = threading.get_ident()
        # The uid names the work directory and the checkpoint file.
        self.uid = (
            _check.safe_uid("uid", uid)
            if uid is not None
            else f"asyncflow.session.{secrets.token_hex(4)}"
        )
        self.dry_run = _check.flag("dry_run", dry_run)
        self.implicit_data = _check.flag("implicit_data", implicit_data)
        self.work_dir = os.path.abspath(os.fspath(work_dir) if work_dir else os.getcwd())
        self._backends: dict[str, Backend] = {}
        self._adapters: dict[str, Adapter] = {}
        self._inline: set[str] = set()
        self._chaining: set[str] = set()  # backends that chain dependencies themselves
        self._argv_only: set[str] = set()  # executables must arrive as an exact argv
        self._links: dict[str, tuple[bool, bool]] = {}
        self._metadata_unread: set[str] = set()  # backends that never read "metadata"
        self.backend: Backend | None = None  # the default backend
        self._default = ""  # its name
        if backend is not None:
            self._add_backends(backend)
        self._graph = _native.Graph(validate=_validate_graph())
        self._tasks: dict[str, TaskFuture[Any]] = {}
        self.components = Components(self._tasks, self._description_of)
        self._counter = 0
        self._uid_thousands = 0  # the thousands of the counter, and their text
        self._uid_head = "000"
        self._outbox: dict[str, list[TaskFuture[Any]]] = {}
        self._routes: dict[str, _Route] = {}  # by backend name, see _route
        self._flush_scheduled = False
        self._inbox: deque[tuple[TaskDescription, str]] = deque()
        self._wakeup_pending = False
        self._closed = False
        self._shutdown_task: asyncio.Task[None] | None = None
        # (workflow id, name, the block whose body opened the scope): a scope
        # opened inside a block body is nested inside that block, and the
        # other way round.
        self._workflow: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
            f"asyncflow.workflow.{self.uid}", default=None
        )
        self._block: contextvars.ContextVar[TaskFuture[Any] | None] = contextvars.ContextVar(
            f"asyncflow.block.{self.uid}", default=None
        )
        self._background: set[asyncio.Task[Any]] = set()
        # Whether a workflow scope or a block body ever ran: until then no
        # call can be inside one, and a call skips reading the two scopes.
        self._scoped = False
        self.telemetry: Telemetry | None = None
        self._observer: TaskObserver | None = None
        self._telemetry_broke = False  # a telemetry hook raised (logged once)
        self._telemetry_starting: asyncio.Future[None] | None = None
        self._gc_counted = False  # counted in _gc while it runs (create() only)
        # The result cache: every function/executable task cached (resume= or
        # create(cache=True)), the directory of its store, the store once open.
        self._cache_all = False
        self._cache_dir: str | None = None
        self._store: ResultCache | None = None
        self._to_store: list[tuple[TaskFuture[Any], Any]] = []
        self._uncacheable: set[str] = set()
        self._cache_hits = 0
        self._rng = random.Random()
        self._progress: ProgressReporter | None = None
        engine = cast("WorkflowEngine", self)  # the only class made of these layers
        self.function_task = make_decorator(engine, KIND_FUNCTION)
        self.executable_task = make_decorator(engine, KIND_EXECUTABLE)
        self.prompt_task = make_decorator(engine, KIND_PROMPT)
        self.block = make_decorator(engine, KIND_BLOCK)

    def _add_backends(self, backend: Backend | list[Backend] | tuple[Backend, ...]) -> None:
        backends: list[Backend] = list(backend) if isinstance(backend, (list, tuple)) else [backend]
        if not backends:
            raise ValueError("WorkflowEngine.create() needs at least one backend")
        names: dict[str, Backend] = {}
        for be in backends:
            name = getattr(be, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(f"backend {be!r} has no 'name' string attribute")
            if name in names:
                raise ValueError(
                    f"duplicate backend name {name!r}: give each backend a unique name="
                )
            names[name] = be
        # Before any callback is replaced: a backend serving another live
        # engine would send this engine's reports there, and the other's here.
        _serving.claim(self, backends)
        try:
            self._attach(backends)
        except BaseException:
            _serving.release(self, backends)
            raise
        self._backends = names
        self._routes = {}
        self.backend = backends[0]
        self._default = backends[0].name

    def _attach(self, backends: list[Backend]) -> None:
        """Register this engine's callback with ``backends`` and read what they declare."""
        for be in backends:
            if getattr(type(be), "submits_inline", False) is True:
                self._inline.add(be.name)  # declares it needs no Task of its own
            if getattr(type(be), "chains_dependencies", False) is True:
                self._chaining.add(be.name)
            adapter = adapter_for(be)
            if adapter is not None:
                self._adapters[be.name] = adapter
            if runs_exact_argv(be):
                self._argv_only.add(be.name)
            # A backend that reports each task inside submit_tasks, on the
            # loop's thread, gets the loop-side handler without the check
            # of the calling thread.
            inline = _submission_declares(be, "reports_inline") is True
            be.register_callback(self._report if inline else self.task_callbacks)
            if _submission_declares(be, "reads_metadata") is False:
                self._metadata_unread.add(be.name)
            with contextlib.suppress(AttributeError, TypeError):
                be.is_attached = True
                be.attached_to = [*(getattr(be, "attached_to", None) or []), self.uid]
            self._links[be.name] = (
                bool(getattr(be, "supports_implicit_data_linking", False)),
                bool(getattr(be, "supports_explicit_data_linking", False)),
            )

    def _innermost(self) -> tuple[TaskFuture[Any] | None, _Scope | None]:
        """The current block, unless a workflow scope opened inside it is
        innermost (then None), and the current workflow scope."""
        block = self._block.get()
        scope = self._workflow.get()
        if block is not None and scope is not None and scope[2] is block:
            return None, scope
        return block, scope

    def _telemetry_failed(self, hook: str, uid: str) -> None:
        """A telemetry hook raised (call in its ``except``): logged once, with
        its traceback; the task and every other one go on as without it."""
        if not self._telemetry_broke:
            self._telemetry_broke = True
            logger.exception(
                "telemetry failed in %s for %s (later failures are not logged); "
                "the tasks go on, their telemetry may be incomplete",
                hook,
                uid,
            )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    if TYPE_CHECKING:
        # Defined by the layers above, which call down and up into each
        # other (a release hands tasks over, whose reports release more).
        def _description_of(self, fut: TaskFuture[Any]) -> TaskDescription: ...

        def task_callbacks(self, task: TaskDescription, state: str) -> None: ...

        def _report(self, report: Any, state: str) -> None: ...

        def _release(self, fut: TaskFuture[Any], told: bool = False) -> None: ...

        def _cached(
            self, fut: TaskFuture[Any], args: Any, kwargs: Any, command: str | None
        ) -> bool: ...


def _submission_declares(backend: Backend, name: str) -> Any:
    """The class attribute ``name`` (``reports_inline``, ``reads_metadata``)
    as declared next to ``backend``'s ``submit_tasks``, or None: it says how
    that ``submit_tasks`` behaves, so a subclass that overrides
    ``submit_tasks`` (to report from a thread of its own, say) does not
    inherit the claim."""
    for klass in type(backend).__mro__:
        own = vars(klass)
        if "submit_tasks" in own:
            return own.get(name)
    return None


def _stdio_dir(fut: TaskFuture[Any]) -> str | None:
    """Where an executable that captures its output wrote its files, else None."""
    backend = fut._backend
    if fut.capture_stdio and fut.kind == KIND_EXECUTABLE and backend is not None:
        return backend._work_dir
    return None
