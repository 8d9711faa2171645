"""``WorkflowEngine``: tasks, dependencies, routing, cancellation, shutdown.

The engine is event-driven. A task call registers the task in the pure
:class:`~asyncflow.engine._graph.Graph`; the instructions it returns say which
tasks are ready. Ready tasks are batched per backend and handed over in one
``submit_tasks`` call per loop iteration. Backends report states through
``task_callbacks`` (from any thread); the report finishes the future and feeds
the graph, which releases the dependents in the same step. Nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from types import CoroutineType
from typing import IO, TYPE_CHECKING, Any, cast

from .. import _check
from ..backends._base import (
    CANCEL_STATES,
    FINAL_STATES,
    STATE_DONE,
    STATE_FAILED,
    STATE_RUNNING,
    SUBMITTED,
    Backend,
    DataLinking,
    StopsTasks,
    TaskDescription,
    TaskMetadata,
    Upstream,
)
from ..errors import (
    BackendError,
    DependencyFailureError,
    EngineShutdownError,
    TaskDefinitionError,
    TaskTimeoutError,
    UnknownBackendError,
)
from ..telemetry import names as n
from . import _gc
from . import _graph as g
from ._command import Command, read_command
from ._deps import ATOMIC, Found, find_dependencies, substitute
from ._foreign import Adapter, adapter_for, exact_argv_task, runs_exact_argv
from ._future import (
    KIND_BLOCK,
    KIND_EXECUTABLE,
    KIND_FUNCTION,
    KIND_PROMPT,
    TaskFuture,
    new_task_future,
)
from ._policy import POLICY_KWARGS, RunState, TaskPolicy
from ._registry import Components, DependencyList
from ._reports import RESULT_FIELDS, describe_report, report_uid, task_fields
from ._results import failure_of, stdout_file, value_of
from ._signals import install_signal_handlers, remove_signal_handlers
from ._tasks import (
    NO_KWARGS,
    NO_METADATA,
    NO_TASK_DESCRIPTION,
    POLICY_KINDS,
    TaskSpec,
    make_decorator,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor

    from ..cache import ResultCache
    from ..progress import Counts, ProgressReporter
    from ..telemetry.manager import Telemetry
    from ..telemetry.observer import LiveSpan, LiveWorkflow, TaskObserver

__all__ = ["WorkflowEngine"]

logger = logging.getLogger("asyncflow")

# A workflow scope: (workflow id, name, the block whose body opened it).
_Scope = tuple[str, "str | None", "TaskFuture[Any] | None"]
# Where a task was registered: its innermost block (if any) and its scope.
_Where = tuple["TaskFuture[Any] | None", "_Scope | None"]
# A backend as _hand_over uses it: the backend, whether it supports implicit
# and explicit data linking, its RHAPSODY adapter, whether executables go as
# an exact argv.
_Route = tuple[Backend, bool, bool, "Adapter | None", bool]


# Rounds of hand-over one loop callback may run (see WorkflowEngine._flush).
_FLUSH_ROUNDS = 64
# Call keyword arguments the engine takes for itself.
_ENGINE_KWARGS = frozenset({"task_description", "workflow_id", *POLICY_KWARGS})
# What a backend writes into a task dict: cleared before a retry.
_RESULT_KEYS = ("return_value", "stdout", "stderr", "exit_code", "exception", "slots")
# Seconds a backend has to confirm it stopped a timed-out task before its
# future fails anyway (a thread function that never awaits cannot be stopped).
TIMEOUT_GRACE = 10.0
_ALL_DEFAULTS = TaskPolicy()
_get_ident = threading.get_ident
_RELEASE = g.RELEASE
_NOWHERE: _Where = (None, None)  # outside any block or workflow scope
# The metadata of a description handed to a backend that never reads it,
# until ``engine.components`` reads it (see WorkflowEngine._describe).
_METADATA_LATER: TaskMetadata = {
    "dependencies": (),
    "input_files": (),
    "output_files": (),
    "workflow_name": None,
}
_future_result = asyncio.Future.result
_LAST_DIGITS = tuple(f"{i:03d}" for i in range(1000))  # the uid's last three digits


def _validate_graph() -> bool:
    """``ASYNCFLOW_VALIDATE_GRAPH=1``: check every graph transition (the test suite's mode)."""
    return os.environ.get("ASYNCFLOW_VALIDATE_GRAPH", "") == "1"


class WorkflowEngine:
    """Runs decorated ``async def`` tasks on one or more backends.

    Create it with ``engine = await WorkflowEngine.create(...)``; see
    ``docs/`` and API.md for the full contract.
    """

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
        self._graph = g.Graph(validate=_validate_graph())
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
        self.function_task = make_decorator(self, KIND_FUNCTION)
        self.executable_task = make_decorator(self, KIND_EXECUTABLE)
        self.prompt_task = make_decorator(self, KIND_PROMPT)
        self.block = make_decorator(self, KIND_BLOCK)

    # ------------------------------------------------------------------ creation
    @classmethod
    async def create(
        cls,
        backend: Any = None,
        dry_run: bool = False,
        implicit_data: bool = True,
        uid: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        cache: bool = False,
        resume: str | os.PathLike[str] | None = None,
    ) -> WorkflowEngine:
        """Create an engine and attach its backends.

        Args:
            backend: a backend, or a list of them (the first is the default).
                ``None``: ``NoopExecutionBackend()`` when ``dry_run``, else a
                ``LocalExecutionBackend()`` on threads.
            dry_run: with no backend given, run nothing (no-op backend).
            implicit_data: ask backends that support it to link the data of
                every dependency (``link_implicit_data_deps``).
            uid: the session uid; default ``asyncflow.session.<8 hex>``.
            work_dir: parent of the backends' working directory
                ``<work_dir>/<uid>``; default the current directory.
            cache: cache the result of every function and executable task
                (``cache=False`` on a task opts out) in ``work_dir``'s store.
            resume: a campaign directory: cache every task against its store,
                so a rerun of a killed campaign runs only what had not
                finished (default: ``ASYNCFLOW_RESUME``).

        Raises:
            ValueError: two backends share a name.
            TypeError: ``cache`` is not a bool.
            CacheError: the campaign directory's store is damaged or foreign.
        """
        if not isinstance(cache, bool):
            raise TypeError(f"cache must be True or False, not {cache!r}")
        if resume is None:
            resume = os.environ.get(n.ENV_RESUME) or None
        engine = cls(None, dry_run, implicit_data, uid, work_dir)
        if resume is not None or cache:
            engine._cache_all = True
            engine._cache_dir = _absolute(resume if resume is not None else engine.work_dir)
            engine._store = await engine._loop.run_in_executor(
                None, engine._open_store, engine._cache_dir
            )
        if backend is None:
            from ..backends import LocalExecutionBackend, NoopExecutionBackend

            if dry_run:
                backend = NoopExecutionBackend()
            else:
                backend = await LocalExecutionBackend()
                logger.info("no backend given: using LocalExecutionBackend on threads")
        engine._add_backends(backend)
        session_dir = os.path.join(engine.work_dir, engine.uid)
        await engine._loop.run_in_executor(None, lambda: os.makedirs(session_dir, exist_ok=True))
        for be in engine._backends.values():
            be._work_dir = session_dir
        install_signal_handlers(engine, engine._loop)
        _gc.engine_started()
        engine._gc_counted = True
        return engine

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
        self._backends = names
        self._routes = {}
        self.backend = backends[0]
        self._default = backends[0].name

    @property
    def backends(self) -> Mapping[str, Backend]:
        """The registered backends by name; the first registered is the default."""
        return dict(self._backends)

    @property
    def is_shutdown(self) -> bool:
        """True once ``shutdown()`` has started."""
        return self._closed

    async def __aenter__(self) -> WorkflowEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ------------------------------------------------------------------ workflows
    @contextlib.asynccontextmanager
    async def workflow_scope(
        self, workflow_id: str | None = None, name: str | None = None
    ) -> AsyncIterator[str]:
        """Group every task registered inside under one workflow id.

        Args:
            workflow_id: the instance id; default ``wf-<8 hex>``.
            name: the workflow type (low cardinality, e.g. ``"simulate"``).

        Yields:
            The workflow id.
        """
        wf_id = workflow_id or f"wf-{secrets.token_hex(4)}"
        observer = self._observer
        span: LiveWorkflow | None = None
        if observer is not None:
            parent = self._telemetry_parent()
            span = observer.workflow_started(wf_id, name, parent.span_id if parent else None)
        self._scoped = True
        token = self._workflow.set((wf_id, name, self._block.get()))
        error: BaseException | None = None
        try:
            yield wf_id
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._workflow.reset(token)
            if span is not None and self._observer is not None:
                self._observer.workflow_ended(span, error)

    # ------------------------------------------------------------------ progress
    def task_counts(self) -> Counts:
        """How the tasks (and blocks) registered so far stand, counted now."""
        from ..progress import Counts

        states = self._graph.counts()
        hits = self._cache_hits
        return Counts(
            total=len(self._graph),
            done=states.get(g.DONE, 0) - hits,
            cached=hits,
            running=states.get(g.RUNNING, 0),
            waiting=states.get(g.WAITING, 0) + states.get(g.READY, 0) + states.get(g.SUBMITTED, 0),
            failed=states.get(g.FAILED, 0),
            canceled=states.get(g.CANCELLED, 0),
        )

    @contextlib.asynccontextmanager
    async def progress(
        self,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        interval: float | None = None,
    ) -> AsyncIterator[ProgressReporter]:
        """Show the tasks' progress while the block runs.

        On a terminal a live bar (done, running, waiting, failed and cached
        counts, rate, ETA); otherwise one line every ``interval`` seconds,
        the form a batch job's log needs. A final update is shown on exit.

        Args:
            stream: where to write (default standard error).
            tty: draw a live bar (default: when ``stream`` is a terminal).
            interval: seconds between updates (default 0.5 on a terminal,
                30 otherwise).

        Yields:
            The reporter (``update()`` shows the counts at once).
        """
        from ..progress import ProgressReporter

        reporter = ProgressReporter(self.task_counts, stream, tty=tty, interval=interval)
        reporter.start()
        try:
            yield reporter
        finally:
            await reporter.stop()

    # ------------------------------------------------------------------ task calls
    def _call(
        self, spec: TaskSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskFuture[Any]:
        """One call of a task: its future, its place, its dependencies.

        Every call is registered (it has a uid, telemetry sees it created);
        a call that cannot run fails its future at once, and the engine goes on.
        """
        count = self._counter = self._counter + 1
        # The uid's number is f"{count:06d}", made from the text of its
        # thousands (kept until they change) and a table of the last three
        # digits: a third of the cost of formatting it.
        thousands = count // 1000
        if thousands != self._uid_thousands:
            self._uid_thousands = thousands
            self._uid_head = str(thousands).zfill(3)
        if spec.kind == KIND_BLOCK:
            uid = n.UID_PREFIX_BLOCK + self._uid_head + _LAST_DIGITS[count % 1000]
        else:
            uid = n.UID_PREFIX_TASK + self._uid_head + _LAST_DIGITS[count % 1000]
        fut = new_task_future(self, self._loop, spec, uid)
        fut.args = args
        if (
            kwargs
            or spec.policy is not None
            or spec.kind == KIND_BLOCK
            or self._cache_all
            or (
                self._scoped and (self._block.get() is not None or self._workflow.get() is not None)
            )
        ):
            where, problem = self._call_options(fut, spec, kwargs)
        else:  # the common call: positional arguments only, outside any block or scope
            # No keyword arguments: one shared empty dict, not a new one per
            # task (backends read it, nobody writes it).
            fut.kwargs = NO_KWARGS
            # The decorator checked its task_description; a copy per task
            # unless it is empty (then one shared dict).
            td = spec.task_description
            fut.task_description = td.copy() if td else NO_TASK_DESCRIPTION
            fut.workflow_id = fut.workflow_name = None
            where, problem = _NOWHERE, None
        self._tasks[uid] = fut
        if problem is None and self._closed:
            problem = EngineShutdownError("engine is shut down")
        if problem is None and spec.backend is not None and spec.backend not in self._backends:
            known = ", ".join(repr(name) for name in self._backends)
            problem = UnknownBackendError(
                f"task '{spec.name}' is routed to unknown backend {spec.backend!r}; "
                f"known backends: {known}"
            )
        if problem is not None:
            self._created(fut, where)
            return self._fail_at_once(fut, problem)
        # Dependencies: futures anywhere in the arguments. The common case,
        # futures and plain values as positional arguments, needs no Found.
        futures = 0
        general = foreign = False
        for item in args:
            item_type = type(item)
            if item_type is TaskFuture:
                futures += 1
                if item._engine is not self:
                    foreign = True
            elif item_type not in ATOMIC:
                general = True
                break
        if kwargs and not general:
            general = any(type(item) not in ATOMIC for item in kwargs.values())
        deps: Sequence[Any]
        if general:
            found = Found()
            for item in (*args, *kwargs.values()):
                if type(item) not in ATOMIC:
                    find_dependencies(item, found)
            if found.input_files or found.output_files:
                fut._files = (found.input_files, found.output_files)
            deps = found.futures
        elif not futures:
            deps = ()
        elif futures == len(args) and (
            futures == 1
            or (args[0] is not args[1] if futures == 2 else len(dict.fromkeys(args)) == futures)
        ):
            # Every argument a distinct future (the common case): the args
            # tuple is the dependency list, and _release resolves it
            # without looking at each argument.
            deps = args
        else:  # each future once, in argument order
            deps = list(dict.fromkeys([a for a in args if type(a) is TaskFuture]))
        if not deps and fut._files is None:  # ready now
            # A function task without a policy is queued at once: its
            # telemetry says created, resolved and queued in one call.
            if self._observer is not None:
                told = fut.kind == KIND_FUNCTION and fut._policy is None
                self._created(fut, where, told)
                self._graph.add_ready(fut)
                self._release(fut, told)
            else:
                self._graph.add_ready(fut)
                self._release(fut)
            return fut
        if self._observer is not None:
            self._created(fut, where)
        if general or foreign:
            for dep in deps:
                if not (type(dep) is TaskFuture and dep._engine is self) and dep not in self._graph:
                    self._track_foreign(dep)
        fut._deps = deps
        instructions = self._graph.add(fut, deps, distinct=True)
        if instructions:
            self._apply(instructions)
        if self._chaining and self._can_push_down(fut, args, kwargs):
            self._push_down(fut)
        return fut

    def _call_options(
        self, fut: TaskFuture[Any], spec: TaskSpec, kwargs: dict[str, Any]
    ) -> tuple[_Where, BaseException | None]:
        """What a call sets beyond its positional arguments: the engine's keyword
        arguments (taken out of ``kwargs``), the policy, the description, the
        block and workflow scope. Returns where the task sits and the problem
        that fails it, if any."""
        problem: BaseException | None = None
        wf_override = None
        call_td = None
        policy = spec.policy
        if kwargs and not _ENGINE_KWARGS.isdisjoint(kwargs):
            call_td = kwargs.pop("task_description", None)
            wf_override = kwargs.pop("workflow_id", None)
            if call_td is not None and not isinstance(call_td, dict):
                problem = TypeError(
                    f"task_description for '{spec.name}' must be a dict, "
                    f"not {type(call_td).__name__}"
                )
                call_td = None
            options = {k: kwargs.pop(k) for k in POLICY_KWARGS if k in kwargs}
            if options:
                try:
                    policy = self._call_policy(spec, options)
                except (TypeError, ValueError) as exc:
                    problem = problem or exc
        if policy is None and self._cache_all and spec.kind in POLICY_KINDS:
            policy = _ALL_DEFAULTS
        if policy is not None:
            fut._policy = policy
            fut._run = RunState()
        fut.kwargs = kwargs if kwargs else NO_KWARGS
        td = fut.task_description = (
            {**spec.task_description, **call_td}
            if call_td
            else spec.task_description.copy()
            if spec.task_description
            else NO_TASK_DESCRIPTION
        )
        if (
            wf_override is None
            and spec.kind != KIND_BLOCK
            and self._block.get() is None
            and self._workflow.get() is None
        ):
            fut.workflow_id = fut.workflow_name = None  # outside any block or scope
            where: _Where = _NOWHERE
        else:
            where = self._set_context(fut, wf_override)
        if problem is None and call_td and ("cpus" in td or "gpus" in td):
            try:
                _check.slot_counts(td)
            except (TypeError, ValueError) as exc:
                problem = type(exc)(f"task '{spec.name}': {exc}")
        return where, problem

    def _can_push_down(
        self, fut: TaskFuture[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bool:
        """``fut`` waits only on function tasks routed, like it, to a backend that
        chains dependencies itself, each already handed over or on its way."""
        if fut.kind != KIND_FUNCTION or fut._files is not None or fut.done():
            return False
        if fut._policy is not None:  # retries, timeouts and the cache need the engine
            return False
        name = fut.target_backend or self._default
        if name not in self._chaining or self._graph.state(fut) != g.WAITING:
            return False
        for item in args:  # dependencies only as direct positional arguments
            if type(item) not in ATOMIC and type(item) is not TaskFuture:
                return False
        for item in kwargs.values():
            if type(item) not in ATOMIC:
                return False
        graph = self._graph
        for dep in fut._deps:
            if type(dep) is not TaskFuture or dep._engine is not self:
                return False
            if dep.done():
                continue
            if dep.kind != KIND_FUNCTION or (dep.target_backend or self._default) != name:
                return False
            if dep._policy is not None:  # a failed attempt it retries must not end us
                return False
            if graph.state(dep) == g.WAITING:  # neither submitted nor pushed down
                return False
        return True

    def _push_down(self, fut: TaskFuture[Any]) -> None:
        """Submit ``fut`` now: its backend wires its unfinished dependencies."""
        self._graph.push_down(fut)
        fut._pushed = True
        if fut._tel is not None and self._observer is not None:
            self._observer.resolved(fut._tel)
        self._enqueue(fut, self._describe(fut, fut.args, fut.kwargs))

    @staticmethod
    def _call_policy(spec: TaskSpec, options: dict[str, Any]) -> TaskPolicy | None:
        """The policy of one call: the decorator's, with the call's options over it."""
        if spec.kind not in POLICY_KINDS:
            raise TaskDefinitionError(
                f"{', '.join(sorted(options))} apply to function and executable tasks only, "
                f"not to '{spec.name}'"
            )
        policy = (spec.policy or _ALL_DEFAULTS).with_options(options, f"task '{spec.name}'")
        return None if policy.is_default else policy

    def _innermost(self) -> tuple[TaskFuture[Any] | None, _Scope | None]:
        """The current block, unless a workflow scope opened inside it is
        innermost (then None), and the current workflow scope."""
        block = self._block.get()
        scope = self._workflow.get()
        if block is not None and scope is not None and scope[2] is block:
            return None, scope
        return block, scope

    def _created(self, fut: TaskFuture[Any], where: _Where, ready: bool = False) -> None:
        observer = self._observer
        if observer is None:
            return
        block, scope = where
        parent = block._tel if block is not None else None
        backend = fut.target_backend or self._default
        fut._tel = observer.task_created(fut, backend, parent, scope[0] if scope else None, ready)

    def _settling(self, fut: TaskFuture[Any]) -> None:
        """``fut`` completes now: its telemetry records reach the checkpoint
        writer before its waiters run (a killed run keeps what finished)."""
        if fut._tel is not None and self._observer is not None:
            self._observer.flush_soon()

    def _ended(self, fut: TaskFuture[Any], result: str, exc: BaseException | None) -> None:
        span = fut._tel
        if span is not None and self._observer is not None:
            fut._tel = None
            depends_on = tuple([d.uid for d in fut._deps if type(d) is TaskFuture])
            self._observer.task_finished(span, result, exc, self._closed, depends_on)

    def _completed_telemetry(self, fut: TaskFuture[Any], started: bool) -> None:
        """``fut`` completed: started (unless ``started``) and ended, in one hook."""
        span = fut._tel
        if span is not None and self._observer is not None:
            fut._tel = None
            deps = fut._deps
            depends_on = tuple([d.uid for d in deps if type(d) is TaskFuture]) if deps else ()
            self._observer.completed(span, started, depends_on)

    def _telemetry_parent(self) -> LiveSpan | None:
        """The span of the innermost block or workflow scope, if any."""
        block, scope = self._innermost()
        if block is not None and block._tel is not None:
            return block._tel
        if scope is not None and self._observer is not None:
            return self._observer.open_workflow(scope[0])
        return None

    def _set_context(self, fut: TaskFuture[Any], wf_override: str | None) -> _Where:
        """Place ``fut`` in its block and scope; returns the innermost block
        (None when a scope opened inside it is innermost) and the scope."""
        block = self._block.get()
        scope = self._workflow.get()
        if block is not None:  # cancelling the block cancels it, even in a scope inside
            if block._members is None:
                block._members = []
            block._members.append(fut)
            if scope is not None and scope[2] is block:
                block = None
        if wf_override is not None:
            fut.workflow_id = str(wf_override)
        elif block is not None:
            fut.workflow_id = block.uid
        else:
            fut.workflow_id = scope[0] if scope else None
        fut.workflow_name = scope[1] if scope else None
        if fut.kind == KIND_BLOCK:
            # The body runs later, maybe from another task's completion: it
            # must see the scopes and blocks of where the block was called.
            fut._context = contextvars.copy_context()
        return block, scope

    def _fail_at_once(self, fut: TaskFuture[Any], exc: BaseException) -> TaskFuture[Any]:
        self._graph.add_ready(fut)
        self._settling(fut)
        fut.set_exception(exc)
        self._ended(fut, n.RESULT_FAILED, exc)
        self._apply(self._graph.finish(fut, g.FAILED))
        return fut

    def _track_foreign(self, dep: Any) -> None:
        """A future the engine did not make: a graph node finished by its callback."""
        self._graph.add_ready(dep)

        def _done(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                state = g.CANCELLED
            elif f.exception() is not None:
                state = g.FAILED
            else:
                state = g.DONE
            self._apply(self._graph.finish(f, state))

        dep.add_done_callback(_done)

    # ------------------------------------------------------------------ graph instructions
    def _apply(self, instructions: Iterable[g.Instruction]) -> None:
        for kind, key, cause in instructions:
            if kind == _RELEASE:
                if type(key) is TaskFuture:
                    self._release(key)
            elif type(key) is not TaskFuture:  # only dependencies are foreign
                continue
            elif kind == g.FAIL:
                self._fail_dependent(key, cause)
            else:  # g.CANCEL
                self._cancel_dependent(key, cause)

    def _fail_dependent(self, fut: TaskFuture[Any], cause: Any) -> None:
        if fut.done():
            return
        # Every dependency has ended (the graph waits for the last one):
        # name each that failed, in argument order, as the older AsyncFlow did.
        failed = [d for d in fut._deps if d.done() and not d.cancelled() and d.exception()]
        if not failed:  # a foreign future the graph saw fail
            failed = [cause]
        cause_exc = None if failed[0].cancelled() else failed[0].exception()
        names = [getattr(d, "name", None) or repr(d) for d in failed]
        exc = DependencyFailureError.for_task(fut.name, names, cause_exc)
        self._settling(fut)
        fut.set_exception(exc)
        # The root failure is reported on its own future; silence the echoes.
        fut._log_traceback = False
        if fut._tel is not None:
            self._ended(fut, n.RESULT_FAILED, exc)

    def _cancel_dependent(self, fut: TaskFuture[Any], cause: Any) -> None:
        if not fut.done():
            cause_name = getattr(cause, "uid", None) or repr(cause)
            self._settling(fut)
            fut._cancel_now(f"dependency {cause_name} was cancelled")
            if fut._tel is not None:
                self._ended(fut, n.RESULT_CANCELED, None)

    def _release(self, fut: TaskFuture[Any], told: bool = False) -> None:
        """All dependencies of ``fut`` are done: resolve arguments and hand it on
        (``told``: its telemetry said ready when it was created)."""
        if fut.done():
            return
        # A function task without a policy reports resolved and queued in
        # one call (ready) once it is queued; every other task now.
        plain = fut.kind == KIND_FUNCTION and fut._policy is None
        if fut._tel is not None and self._observer is not None and not plain:
            self._observer.resolved(fut._tel)
        try:
            deps = fut._deps
            if not deps:  # nothing to resolve
                args, kwargs = fut.args, fut.kwargs
            elif deps is fut.args:  # every argument is a future (see _call)
                kwargs = fut.kwargs
                if len(deps) == 1:
                    args = (deps[0].result(),)
                elif len(deps) == 2:
                    args = (deps[0].result(), deps[1].result())
                else:
                    args = tuple(map(_future_result, deps))
            else:
                args = fut.args
                if type(args) is tuple:  # resolve_args(), inline
                    args = tuple(
                        [
                            a.result()
                            if type(a) is TaskFuture
                            else a
                            if type(a) in ATOMIC
                            else substitute(a)
                            for a in args
                        ]
                    )
                elif args:
                    args = substitute(args)
                kwargs = substitute(fut.kwargs) if fut.kwargs else fut.kwargs
        except BaseException as exc:  # noqa: BLE001 - a foreign future's result() raised
            if plain and not told and fut._tel is not None and self._observer is not None:
                self._observer.resolved(fut._tel)
            self._finish_exc(fut, exc)
            return
        kind = fut.kind
        if kind == KIND_FUNCTION:
            name = fut.target_backend or self._default
            desc = self._describe(fut, args, kwargs, name not in self._metadata_unread)
            if plain:
                if fut._tel is not None and self._observer is not None and not told:
                    self._observer.ready(fut._tel)
                # _enqueue(), inline: the way of every function task without
                # a policy.
                batch = self._outbox.get(name)
                if batch is None:
                    self._outbox[name] = [fut]
                else:
                    batch.append(fut)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._loop.call_soon(self._flush)
                return
            if self._cached(fut, args, kwargs, None):  # not plain: it has a policy
                return
            self._enqueue(fut, desc)
        elif kind == KIND_BLOCK:
            self._start_block(fut, args, kwargs)
        else:
            self._evaluate_body(fut, args, kwargs)

    # ------------------------------------------------------------------ descriptions
    def _describe(
        self, fut: TaskFuture[Any], args: Any, kwargs: Any, metadata: bool = True
    ) -> TaskDescription:
        """The dict the backend gets (kept as the task's description).

        ``metadata=False`` (a backend that never reads it, see
        ``_metadata_unread``): the metadata of a task with dependencies,
        files or a workflow type is made when ``engine.components`` reads
        the description, not for every task.
        """
        # The template holds the shared values (no keyword arguments, no
        # workflow, the shared metadata): only what differs is stored.
        desc: TaskDescription = fut._spec.template.copy()  # type: ignore[assignment]
        desc["uid"] = fut.uid
        desc["args"] = args
        if kwargs is not NO_KWARGS:
            desc["kwargs"] = kwargs
        if fut.task_description is not NO_TASK_DESCRIPTION:
            desc["task_backend_specific_kwargs"] = fut.task_description
        if fut.workflow_id is not None:
            desc["workflow_id"] = fut.workflow_id
        if fut._deps or fut._files is not None or fut.workflow_name is not None:
            desc["metadata"] = self._metadata(fut) if metadata else _METADATA_LATER
        fut._desc = desc
        return desc

    @staticmethod
    def _metadata(fut: TaskFuture[Any]) -> TaskMetadata:
        """The metadata of a task with dependencies, files or a workflow type."""
        deps = fut._deps
        files = fut._files
        if files is None:
            if fut.workflow_name is None:
                meta = NO_METADATA.copy()  # a copy costs less than a literal
                meta["dependencies"] = DependencyList(deps)
                return meta
            return {
                "dependencies": DependencyList(deps) if deps else (),
                "input_files": (),
                "output_files": (),
                "workflow_name": fut.workflow_name,
            }
        return {
            "dependencies": DependencyList(deps) if deps else (),
            "input_files": tuple(f.path for f in files[0]),
            "output_files": tuple(f.filename for f in files[1]),
            "workflow_name": fut.workflow_name,
        }

    def _description_of(self, fut: TaskFuture[Any]) -> TaskDescription:
        """``engine.components[uid]["description"]``: what the backend got, or
        would get now (arguments still holding unresolved futures)."""
        desc = fut._desc
        if desc is None:
            return self._describe(fut, fut.args, fut.kwargs)
        if desc.get("metadata") is _METADATA_LATER:
            desc["metadata"] = self._metadata(fut)
        return desc

    def _evaluate_body(self, fut: TaskFuture[Any], args: Any, kwargs: Any) -> None:
        """Run an executable or prompt body (on this loop) with resolved values."""
        if fut._run is not None:  # its cache key needs them once the command is known
            fut._run.arguments = (args, kwargs)
        body = fut.func(*args, **kwargs)
        task = self._loop.create_task(body)
        fut._body = task

        def _done(t: asyncio.Task[Any]) -> None:
            fut._body = None
            if fut.done():
                return
            if t.cancelled():
                self._finish_cancel(fut, "task body was cancelled")
                return
            exc = t.exception()
            if exc is not None:
                self._finish_exc(fut, exc)
                return
            value = t.result()
            if fut.kind == KIND_EXECUTABLE:
                self._executable_ready(fut, value)
            else:
                self._prompt_ready(fut, value)

        task.add_done_callback(_done)

    def _executable_ready(self, fut: TaskFuture[Any], command: Any) -> None:
        try:
            cmd = read_command(fut.name, command, fut.task_description)
        except (TypeError, ValueError) as exc:
            self._finish_exc(fut, exc)
            return
        argv = cmd.argv
        desc = self._describe(fut, (), {})
        desc["executable"] = argv[0]
        desc["arguments"] = argv[1:]
        desc["command"] = cmd.line  # the shell line, or None for an exact argv
        desc["shell"] = cmd.shell
        run = fut._run
        if (
            run is not None
            and run.arguments is not None
            and self._cached(fut, *run.arguments, _command_key(cmd))
        ):
            return
        self._enqueue(fut, desc)

    def _prompt_ready(self, fut: TaskFuture[Any], prompt: Any) -> None:
        if not isinstance(prompt, str) and prompt is not None:
            self._finish_exc(
                fut,
                TypeError(
                    f"prompt task '{fut.name}' must return a non-empty string prompt, "
                    f"not {type(prompt).__name__}"
                ),
            )
            return
        if prompt is None or not prompt.strip():
            self._finish_exc(
                fut, ValueError(f"prompt task '{fut.name}' must return a non-empty string prompt")
            )
            return
        desc = self._describe(fut, (), {})
        desc["prompt"] = prompt
        self._enqueue(fut, desc)

    # ------------------------------------------------------------------ submission
    def _enqueue(self, fut: TaskFuture[Any], desc: TaskDescription) -> None:
        # Telemetry's queued, submitted and started steps are the first attempt's.
        tel = fut._tel
        if (
            tel is not None
            and self._observer is not None
            and (fut._run is None or fut._run.attempt == 1)
        ):
            self._observer.queued(tel)
        name = fut.target_backend or self._default
        batch = self._outbox.get(name)
        if batch is None:
            self._outbox[name] = [fut]
        else:
            batch.append(fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Hand the queued tasks to their backends, in batches.

        Tasks a batch releases (a backend that reports inline, such as the
        dry run) are handed over in the same call, up to ``_FLUSH_ROUNDS``
        rounds, before the loop gets its turn: a chain does not pay one
        loop iteration per link.
        """
        spare: dict[str, list[TaskFuture[Any]]] = {}  # the two outboxes take turns
        try:
            for _ in range(_FLUSH_ROUNDS):
                outbox = self._outbox
                if not outbox:
                    self._flush_scheduled = False
                    return
                # _flush_scheduled stays True: what this round releases waits
                # in the outbox for the next round instead of scheduling
                # another callback.
                self._outbox = spare
                if len(outbox) == 1:  # one backend (a chain's every round)
                    name, futs = outbox.popitem()
                    self._hand_over(name, futs)
                else:
                    for name, futs in outbox.items():
                        self._hand_over(name, futs)
                    outbox.clear()
                spare = outbox
        except BaseException:
            self._flush_scheduled = False
            raise
        if self._outbox:
            self._loop.call_soon(self._flush)  # more to do: after the others' turn
        else:
            self._flush_scheduled = False

    def _hand_over(self, name: str, futs: list[TaskFuture[Any]]) -> None:
        """Hand the queued tasks of backend ``name`` over in one ``submit_tasks`` call."""
        route = self._routes.get(name)
        if route is None:
            route = self._routes[name] = self._route(name)
        backend, implicit, explicit, adapt, argv_only = route
        implicit = implicit and self.implicit_data
        special = implicit or explicit or argv_only or adapt is not None
        graph = self._graph
        observer = self._observer
        batch: list[TaskDescription] = []
        # Telemetry's submitted step, for the whole batch in one call.
        spans: list[LiveSpan] | None = [] if observer is not None else None
        for fut in futs:
            if fut.done():
                continue
            graph.submitted(fut)
            tel = fut._tel
            if (
                tel is not None
                and spans is not None
                and (fut._run is None or fut._run.attempt == 1)
            ):
                spans.append(tel)
            fut._backend = backend
            desc = fut._desc
            assert desc is not None
            if fut._pushed or (
                special
                and (
                    adapt is not None
                    or (implicit and fut._deps)
                    or (explicit and fut._files)
                    or (argv_only and fut.kind == KIND_EXECUTABLE)
                )
            ):
                desc = self._prepare(name, backend, fut, desc, adapt, implicit, explicit)
            batch.append(desc)
        if spans:
            assert observer is not None
            observer.submitted_all(spans)
        if not batch:
            return
        try:
            result = backend.submit_tasks(batch)
        except BaseException as exc:  # noqa: BLE001 - every task of the batch fails
            self._submit_failed(batch, exc)
            return
        if result is not SUBMITTED:  # else handed over already, nothing to await
            self._drive(backend, batch, result)

    def _route(self, name: str) -> _Route:
        """What handing tasks to backend ``name`` needs, looked up once."""
        implicit, explicit = self._links[name]
        return (
            self._backends[name],
            implicit,
            explicit,
            self._adapters.get(name),
            name in self._argv_only,
        )

    def _prepare(
        self,
        name: str,
        backend: Backend,
        fut: TaskFuture[Any],
        desc: TaskDescription,
        adapt: Adapter | None,
        implicit: bool,
        explicit: bool,
    ) -> TaskDescription:
        """What a task needs beyond its description on its way to ``backend``."""
        if fut._pushed:  # dependencies not ended yet are Upstream markers
            desc["args"] = tuple([_upstream_or_value(a) for a in fut.args])
        if adapt is not None:  # a RHAPSODY backend that would misread engine keys
            run = fut._run
            # Each attempt is a new task to the backend (Dask keys by it).
            attempt_uid = fut.uid if run is None else f"{fut.uid}.{run.attempt}"
            desc["task_backend_specific_kwargs"] = adapt(
                self.uid,
                attempt_uid,
                fut.task_description or {},  # not the shared empty one
            )
        if (implicit and fut._deps) or (explicit and fut._files):
            # It declared supports_*_data_linking: it has the hooks.
            linker = cast("DataLinking", backend)
            self._link_data(name, linker, fut, desc, implicit, explicit)
        if fut.kind == KIND_EXECUTABLE and name in self._argv_only:
            desc = exact_argv_task(desc)
        return desc

    def _link_data(
        self,
        name: str,
        backend: DataLinking,
        fut: TaskFuture[Any],
        desc: TaskDescription,
        implicit: bool,
        explicit: bool,
    ) -> None:
        inputs, _ = fut._files or ((), ())
        produced: dict[str, TaskFuture[Any]] = {}
        for dep in fut._deps:
            if type(dep) is TaskFuture and dep._files:
                for out in dep._files[1]:
                    produced[os.path.basename(out.filename)] = dep
        linked_explicitly: set[int] = set()
        try:
            if explicit:
                for inp in inputs:
                    src = produced.get(inp.filename)
                    if src is not None:
                        linked_explicitly.add(id(src))
                        backend.link_explicit_data_deps(
                            src_task=src._desc, dst_task=desc, file_name=inp.filename
                        )
                    else:
                        backend.link_explicit_data_deps(
                            src_task=None, dst_task=desc, file_name=inp.filename, file_path=inp.path
                        )
            if implicit:
                for dep in fut._deps:
                    if type(dep) is TaskFuture and id(dep) not in linked_explicitly and dep._desc:
                        backend.link_implicit_data_deps(dep._desc, desc)
        except Exception:
            logger.exception("backend %r failed to link the data of %s", name, fut.uid)

    def _drive(self, backend: Backend, batch: list[TaskDescription], result: Any) -> None:
        """See ``batch`` through what ``backend.submit_tasks(batch)`` returned.

        The built-in backends' submission is stepped right here, and gets a
        Task only if it suspends. Any other backend's runs in a Task of its
        own, as its author expects (``asyncio.timeout``, ``TaskGroup`` and
        ``current_task()`` need one); any awaitable is accepted.
        """
        if type(result) is CoroutineType and backend.name in self._inline:
            try:
                first = result.send(None)
            except StopIteration:
                return
            except BaseException as exc:  # noqa: BLE001 - every task of the batch fails
                self._submit_failed(batch, exc)
                return
            task = self._loop.create_task(_resume(result, first))
        elif inspect.isawaitable(result):
            task = asyncio.ensure_future(result, loop=self._loop)
        else:  # a plain function: it has submitted already
            return
        self._background.add(task)

        def _done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._submit_failed(batch, t.exception())  # type: ignore[arg-type]

        task.add_done_callback(_done)

    def _submit_failed(self, batch: list[TaskDescription], exc: BaseException) -> None:
        logger.error("submit_tasks failed for %d task(s): %r", len(batch), exc)
        for desc in batch:
            fut = self._tasks.get(desc["uid"])
            if fut is not None and not fut.done():
                self._finish_exc(fut, exc)

    # ------------------------------------------------------------------ backend reports
    def task_callbacks(self, task: TaskDescription, state: str) -> None:
        """Receive a task state from a backend. Safe to call from any thread.

        Args:
            task: the task dict the backend was given (results written in),
                or an object standing for it (with ``as_dict()`` or a ``uid``
                attribute). A report the engine cannot read fails that task
                with ``BackendError``, logged once.
            state: ``RUNNING``, ``DONE``, ``FAILED`` or ``CANCELED``; others
                are ignored.
        """
        if _get_ident() == self._thread_id:
            self._report(task, state)
            return
        self._inbox.append((task, state))
        if not self._wakeup_pending:
            self._wakeup_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:  # loop closed: nobody is waiting any more
                self._wakeup_pending = False

    def _drain_inbox(self) -> None:
        self._wakeup_pending = False
        inbox = self._inbox
        report = self._report
        while inbox:
            report(*inbox.popleft())
        if self._outbox:
            # Hand over what these reports released now, as one batch, not
            # in a flush on the loop's next iteration: a chain on a backend
            # that reports from its threads saves a loop iteration a link.
            self._flush_scheduled = True
            self._flush()

    def _report_failed(self, report: Any, state: Any, exc: Exception) -> None:
        """Handling a backend's report raised: fail that task, log once. Never raises.

        Whatever went wrong, the task's future ends (with a ``BackendError``
        naming the problem, chained to it), so nobody awaits it forever.
        """
        try:
            uid = report_uid(report)
            what = describe_report(report)
            fut = self._tasks.get(uid) if uid is not None else None
            live = fut is not None and not fut.done()
            logger.error(
                "engine failed to handle the %r report of task %s%s: %s: %s",
                state,
                what,
                " (the task fails)" if live else "",
                type(exc).__name__,
                exc,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            if fut is None or not live:
                return
            error = BackendError(
                f"the engine could not read the {state!r} report of task {uid} "
                f"from backend {getattr(fut._backend, 'name', '?')!r}: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            try:
                self._finish_exc(fut, error)
            finally:
                if not fut.done():  # the normal path broke half-way: end it anyway
                    fut.set_exception(error)
        except Exception:  # the error path itself must not raise
            with contextlib.suppress(Exception):
                logger.critical("engine failed while handling a bad backend report", exc_info=True)

    def _report(self, report: Any, state: str) -> None:
        """A backend's report, on the loop's thread. Never raises: a report
        the engine fails to handle fails its task, logged once."""
        try:
            if type(report) is dict and state == STATE_DONE:
                fut = self._tasks.get(report.get("uid"))  # type: ignore[arg-type]
                if (
                    fut is not None
                    and report is fut._desc
                    and fut.kind == KIND_FUNCTION
                    and fut._run is None
                    and not fut._cancel_requested
                    and not fut.done()
                ):
                    # The common end: what _on_state does for it, without
                    # the branches that cannot apply.
                    span = fut._tel
                    observer = self._observer
                    if span is None or observer is None:
                        fut._running = False
                        fut.set_result(report.get("return_value"))  # type: ignore[union-attr]
                    else:  # _settling() and _completed_telemetry(), inline
                        reported = fut._running  # else a dry run: it ran for no time
                        fut._running = False
                        observer.flush_soon()
                        fut.set_result(report.get("return_value"))  # type: ignore[union-attr]
                        fut._tel = None
                        deps = fut._deps
                        observer.completed(
                            span,
                            reported,
                            tuple([d.uid for d in deps if type(d) is TaskFuture]) if deps else (),
                        )
                    for instruction in self._graph.finish(fut, g.DONE):
                        kind, key, _ = instruction
                        if kind == _RELEASE and type(key) is TaskFuture:
                            self._release(key)
                        else:
                            self._apply((instruction,))
                    return
            elif type(report) is dict and state == STATE_RUNNING:
                fut = self._tasks.get(report.get("uid"))  # type: ignore[arg-type]
                if (
                    fut is not None
                    and report is fut._desc
                    and fut._run is None
                    and not fut.done()
                    and (
                        fut._tel is None or (self._observer is not None and not report.get("slots"))  # type: ignore[union-attr]
                    )
                ):
                    # A task without a policy or slots starts: what
                    # _on_state does for it.
                    if self._graph.started(fut):
                        fut._running = True
                        if fut._tel is not None:
                            self._observer.started(fut._tel)  # type: ignore[union-attr]
                    return
            self._on_state(report, state)
        except Exception as exc:  # noqa: BLE001 - a backend never sees the engine's errors
            self._report_failed(report, state, exc)

    def _on_state(self, report: Any, state: str) -> None:
        # (No typing.cast on this path: it is a call, and this runs per report.)
        task: TaskDescription = report if type(report) is dict else task_fields(report)  # type: ignore[assignment]
        fut = self._tasks.get(task.get("uid"))  # type: ignore[arg-type]
        if fut is None or fut.done():
            return
        desc = fut._desc
        if task is not desc and desc is not None and state in FINAL_STATES:
            # The backend wrote into a copy or reported an object: the
            # description shows the results all the same.
            fields = cast("dict[str, Any]", task)
            cast("dict[str, Any]", desc).update(
                {k: fields[k] for k in RESULT_FIELDS if k in fields}
            )
        observer = self._observer
        run = fut._run
        if state == STATE_RUNNING:
            if self._graph.started(fut):
                fut._running = True
                if fut._tel is not None and observer is not None:
                    slots = task.get("slots")
                    if slots:
                        observer.assigned(fut._tel, slots)
                    if run is None or run.attempt == 1:
                        observer.started(fut._tel)
                if run is not None:
                    self._attempt_started(fut, run)
            return
        if fut._cancel_requested:
            if state in FINAL_STATES:
                self._finish_cancel(fut, fut._cancel_msg)
            return
        if run is not None and state in FINAL_STATES:
            self._attempt_done(fut, run, task, state)
            return
        stdio_dir = _stdio_dir(fut)
        if state == STATE_DONE:
            path = stdout_file(stdio_dir, fut.uid) if stdio_dir is not None else None
            # _complete(), inline: this is every task's way out.
            reported = fut._running  # else a dry run: it ran for no time
            fut._running = False
            self._settling(fut)
            fut.set_result(value_of(task, fut.kind, path))
            if fut._tel is not None:
                self._completed_telemetry(fut, reported)
            self._apply(self._graph.finish(fut, g.DONE))
        elif state == STATE_FAILED:
            self._finish_exc(fut, failure_of(task, fut.kind, stdio_dir))
        elif state in CANCEL_STATES:
            self._finish_cancel(fut, "cancelled by the backend")

    def _complete(self, fut: TaskFuture[Any], value: Any, ran: bool = True) -> None:
        """The task succeeded with ``value``: its future, telemetry, dependents.

        ``ran`` is False for a cache hit (it never started).
        """
        if fut.done():
            return
        # Unless the backend reported RUNNING (a dry run does not: it ran for
        # no time), telemetry sees it start as it ends; a cache hit never
        # starts, a later attempt's start is not the task's.
        started = not ran or fut._running or (fut._run is not None and fut._run.attempt > 1)
        fut._running = False
        self._settling(fut)
        fut.set_result(value)
        if fut._tel is not None:
            self._completed_telemetry(fut, started)
        self._apply(self._graph.finish(fut, g.DONE))

    # ------------------------------------------------------------------ attempts and timeouts
    def _attempt_started(self, fut: TaskFuture[Any], run: RunState) -> None:
        """An attempt started running: its timeout counts from now."""
        run.started_ns = time.time_ns()
        policy = fut._policy
        if policy is not None and policy.timeout is not None:
            run.cancel_timer()
            run.timer = self._loop.call_later(policy.timeout, self._time_out, fut)

    def _time_out(self, fut: TaskFuture[Any]) -> None:
        """The running attempt passed its timeout: stop it through its backend."""
        run = fut._run
        if run is None or fut.done():
            return
        run.timer = None
        run.timed_out = True
        self._spawn(self._stop_on_backend(fut._backend, fut))
        run.timer = self._loop.call_later(TIMEOUT_GRACE, self._timeout_unconfirmed, fut)

    async def _stop_on_backend(self, backend: Backend | None, fut: TaskFuture[Any]) -> None:
        """Stop a timed-out task: by force where the backend can (``stop_task``)."""
        stop = getattr(backend, "stop_task", None)
        if stop is None:
            await self._cancel_on_backend(backend, fut)
            return
        try:
            await cast("StopsTasks", backend).stop_task(fut.uid)
        except Exception:
            logger.exception("backend %r failed to stop %s", getattr(backend, "name", "?"), fut.uid)

    def _timeout_unconfirmed(self, fut: TaskFuture[Any]) -> None:
        run = fut._run
        if run is None or fut.done():
            return
        run.timer = None
        logger.warning(
            "backend did not confirm that timed-out task %s stopped within %g s",
            fut.uid,
            TIMEOUT_GRACE,
        )
        self._attempt_failed(fut, run, self._timeout_error(fut, unconfirmed=True), retry=False)

    @staticmethod
    def _timeout_error(fut: TaskFuture[Any], unconfirmed: bool = False) -> TaskTimeoutError:
        policy = fut._policy
        limit = policy.timeout if policy is not None and policy.timeout is not None else 0.0
        detail = "its backend did not confirm it stopped" if unconfirmed else ""
        return TaskTimeoutError(fut.name, limit, detail)

    def _attempt_done(
        self, fut: TaskFuture[Any], run: RunState, task: TaskDescription, state: str
    ) -> None:
        """The backend reported the end of an attempt of a task with a policy."""
        run.cancel_timer()
        if run.timed_out:
            self._attempt_failed(fut, run, self._timeout_error(fut))
            return
        stdio_dir = _stdio_dir(fut)
        if state == STATE_DONE:
            path = stdout_file(stdio_dir, fut.uid) if stdio_dir is not None else None
            value = value_of(task, fut.kind, path)
            self._attempt_report(fut, run, None, False)
            if run.cache_key is not None and self._store is not None:
                self._store_later(fut, value)
            else:
                self._complete(fut, value)
        elif state == STATE_FAILED:
            self._attempt_failed(fut, run, failure_of(task, fut.kind, stdio_dir))
        else:
            self._finish_cancel(fut, "cancelled by the backend")

    def _attempt_report(
        self, fut: TaskFuture[Any], run: RunState, error: BaseException | None, retrying: bool
    ) -> None:
        policy = fut._policy
        if fut._tel is not None and self._observer is not None and policy and policy.retries:
            self._observer.attempt_ended(fut._tel, run.attempt, run.started_ns, error, retrying)

    def _attempt_failed(
        self, fut: TaskFuture[Any], run: RunState, exc: BaseException, retry: bool = True
    ) -> None:
        """An attempt failed: try again after the backoff delay, or fail the task."""
        policy = fut._policy
        if (
            retry
            and policy is not None
            and not self._closed
            and not fut.done()
            and policy.should_retry(exc, run.attempt)
        ):
            self._attempt_report(fut, run, exc, True)
            delay = policy.backoff.delay(run.attempt, self._rng.random())
            run.attempt += 1
            run.started_ns = 0
            run.timed_out = False
            fut._running = False
            self._graph.retry(fut)
            if delay > 0:
                run.timer = self._loop.call_later(delay, self._resubmit, fut)
            else:
                self._resubmit(fut)
            return
        self._attempt_report(fut, run, exc, False)
        self._finish_exc(fut, exc)

    def _resubmit(self, fut: TaskFuture[Any]) -> None:
        """Hand a task to its backend again, for its next attempt."""
        if fut._run is not None:
            fut._run.timer = None
        desc = fut._desc
        if fut.done() or desc is None:
            return
        for key in _RESULT_KEYS:
            desc.pop(key, None)  # type: ignore[misc]
        desc["task_backend_specific_kwargs"] = fut.task_description
        if fut._run is not None:
            desc["attempt"] = fut._run.attempt
        self._enqueue(fut, desc)

    # ------------------------------------------------------------------ result cache
    @staticmethod
    def _open_store(directory: str) -> ResultCache:
        from ..cache import ResultCache

        return ResultCache.open(directory)

    def _cache_store(self) -> ResultCache:
        """The store, opened on first use (``work_dir``'s when no directory was given)."""
        store = self._store
        if store is None:
            store = self._store = self._open_store(self._cache_dir or self.work_dir)
        return store

    def _cached(self, fut: TaskFuture[Any], args: Any, kwargs: Any, command: str | None) -> bool:
        """Look a cached task up: True when its result came from the store (it is done).

        On a miss the key is kept, and the result is stored when the task succeeds.
        """
        policy = fut._policy
        run = fut._run
        if policy is None or run is None or not policy.uses_cache(self._cache_all):
            return False
        backend = self._backends.get(fut.target_backend or self._default)
        if getattr(type(backend), "dry_run", False):
            return False  # a dry run's placeholders are no results
        from ..cache import Uncacheable, code_digest, task_key
        from ..errors import CacheError

        try:
            code = command.encode() if command is not None else code_digest(fut.func)
            key = task_key(fut.name, code, args, kwargs)
        except Uncacheable as exc:
            if fut.name not in self._uncacheable:
                self._uncacheable.add(fut.name)
                logger.warning(
                    "task '%s' runs without the result cache: %s (later calls not reported)",
                    fut.name,
                    exc,
                )
            return False
        try:
            hit = self._cache_store().get(key)
        except CacheError as exc:
            self._finish_exc(fut, exc)
            return True
        observer = self._observer
        if hit is None:
            run.cache_key = key
            if fut._tel is not None and observer is not None:
                observer.cached(fut._tel, n.CACHE_MISS, None, None)
            return False
        if fut._tel is not None and observer is not None:
            observer.cached(fut._tel, n.CACHE_HIT, hit.session, hit.task)
        self._cache_hits += 1
        self._complete(fut, hit.value, ran=False)
        return True

    def _store_later(self, fut: TaskFuture[Any], value: Any) -> None:
        """Store a result, then complete the task: the results of one loop
        iteration share one transaction, and a dependent never starts on a
        result the store could still lose."""
        if not self._to_store:
            self._loop.call_soon(self._store_pending)
        self._to_store.append((fut, value))

    def _store_pending(self) -> None:
        batch, self._to_store = self._to_store, []
        store = self._store
        rows = [
            (f._run.cache_key, f.name, value, self.uid, f.uid)
            for f, value in batch
            if f._run is not None and f._run.cache_key is not None and not f.done()
        ]
        if store is not None and rows:
            try:
                store.put_many(rows)
            except Exception:  # the results are still good: only the reuse is lost
                logger.exception("the result cache failed to store %d result(s)", len(rows))
        for fut, value in batch:
            self._complete(fut, value)

    def _finish_exc(self, fut: TaskFuture[Any], exc: BaseException) -> None:
        if fut.done():
            return
        if fut._run is not None:
            fut._run.cancel_timer()
        fut._running = False
        if isinstance(exc, asyncio.CancelledError):
            self._finish_cancel(fut, str(exc) or None)
            return
        self._settling(fut)
        fut.set_exception(exc)
        if fut._tel is not None:
            self._ended(fut, n.RESULT_FAILED, exc)
        self._apply(self._graph.finish(fut, g.FAILED))

    def _finish_cancel(self, fut: TaskFuture[Any], msg: Any) -> None:
        if fut.done():
            return
        if fut._run is not None:
            fut._run.cancel_timer()
        fut._running = False
        self._settling(fut)
        fut._cancel_now(msg)
        if fut._tel is not None:
            self._ended(fut, n.RESULT_CANCELED, None)
        self._apply(self._graph.finish(fut, g.CANCELLED))

    # ------------------------------------------------------------------ cancellation
    def _request_cancel(self, fut: TaskFuture[Any], msg: Any) -> bool:
        if fut.kind == KIND_BLOCK:
            return self._cancel_block(fut, msg)
        state = self._graph.state(fut) if fut in self._graph else g.WAITING
        if state in (g.WAITING, g.READY):
            body = fut._body
            if body is not None:
                body.cancel()
            self._finish_cancel(fut, msg)
            return True
        if fut._cancel_requested:
            return True
        fut._cancel_requested = True
        fut._cancel_msg = msg
        backend = fut._backend
        self._spawn(self._cancel_on_backend(backend, fut))
        return True

    async def _cancel_on_backend(self, backend: Backend | None, fut: TaskFuture[Any]) -> None:
        if backend is None:  # never submitted: nothing holds it
            return
        try:
            await backend.cancel_task(fut.uid)
        except Exception:
            logger.exception("backend %r failed to cancel %s", backend.name, fut.uid)

    def _cancel_block(self, fut: TaskFuture[Any], msg: Any) -> bool:
        for member in list(fut._members or ()):
            if not member.done():
                member.cancel(msg)
        body = fut._body
        if body is not None:
            body.cancel(msg)
        self._finish_cancel(fut, msg)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ blocks
    def _start_block(self, fut: TaskFuture[Any], args: Any, kwargs: Any) -> None:
        self._describe(fut, args, kwargs)
        self._graph.started(fut)
        fut._running = True
        if fut._tel is not None and self._observer is not None:
            self._observer.started(fut._tel)
        task = self._loop.create_task(self._run_block(fut, args, kwargs), context=fut._context)
        fut._body = task

        def _done(t: asyncio.Task[Any]) -> None:
            fut._body = None
            if fut.done():
                return
            if t.cancelled():
                self._finish_cancel(fut, "block body was cancelled")
            elif t.exception() is not None:
                self._finish_exc(fut, t.exception())  # type: ignore[arg-type]
            else:
                fut._running = False
                self._settling(fut)
                fut.set_result(t.result())
                if fut._tel is not None:
                    self._ended(fut, n.RESULT_COMPLETED, None)
                self._apply(self._graph.finish(fut, g.DONE))

        task.add_done_callback(_done)

    async def _run_block(self, fut: TaskFuture[Any], args: Any, kwargs: Any) -> Any:
        # This task runs in a copy of the caller's context, taken when the
        # block was called: setting the block here makes it the parent of
        # every task the body registers.
        self._scoped = True
        self._block.set(fut)
        return await fut.func(*args, **kwargs)

    # ------------------------------------------------------------------ telemetry
    async def start_telemetry(
        self,
        resource_poll_interval: float = 5.0,
        checkpoint_interval: float | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        span_processors: list[SpanProcessor] | None = None,
        metric_readers: list[MetricReader] | None = None,
        resource: Resource | None = None,
        *,
        otlp_endpoint: str | None = None,
        otlp_protocol: str | None = None,
        prometheus_port: int | None = None,
        prometheus_host: str = "127.0.0.1",
        span_buffer: int = 10_000,
        progress: bool = False,
        redact: bool | Callable[[str], str] = True,
    ) -> Telemetry:
        """Start OpenTelemetry traces, metrics, events and the checkpoint file.

        Args:
            resource_poll_interval: seconds between node CPU/memory/GPU samples.
            checkpoint_interval: seconds between metric snapshots in the
                checkpoint file (None: only at stop).
            checkpoint_path: a directory; the engine writes
                ``<dir>/<uid>.<start epoch>.telemetry.jsonl`` there.
            span_processors: OTel span processors to hand every span to.
            metric_readers: OTel metric readers for the engine's meter provider.
            resource: an OTel ``Resource`` (default: from ``OTEL_SERVICE_NAME``
                / ``OTEL_RESOURCE_ATTRIBUTES``, else ``service.name=asyncflow``).
            otlp_endpoint: send spans and metrics over OTLP (default:
                ``OTEL_EXPORTER_OTLP_ENDPOINT``).
            otlp_protocol: ``grpc`` or ``http/protobuf`` (default:
                ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``grpc``).
            prometheus_port: serve ``/metrics`` on this port (default:
                ``ASYNCFLOW_PROMETHEUS_PORT``; 0 picks a free port).
            prometheus_host: the address ``/metrics`` binds to.
            span_buffer: finished spans kept in memory for ``read_traces()``.
            progress: also show the tasks' progress until shutdown (see
                :meth:`progress`: a live bar on a terminal, a log line every
                30 s otherwise).
            redact: how error text (a failed command line, its stderr) is
                cleaned before telemetry records it: ``True`` masks the values
                of secret-looking options and ``KEY=VALUE`` pairs
                (``asyncflow.telemetry.redact``), ``False`` does not, a
                function of a string applies your own rules.

        Returns:
            The ``Telemetry`` object; a second call returns the same one.

        Raises:
            TypeError, ValueError: an option of the wrong type or range.
            OSError: the checkpoint file cannot be written.
        """
        _check.seconds("resource_poll_interval", resource_poll_interval)
        if checkpoint_interval is not None:
            _check.seconds("checkpoint_interval", checkpoint_interval)
        if prometheus_port is not None:
            _check.port("prometheus_port", prometheus_port)
        _check.count("span_buffer", span_buffer, minimum=1)
        _check.flag("progress", progress)
        if not isinstance(redact, bool) and not callable(redact):
            raise TypeError(f"redact must be True, False or a function, not {redact!r}")
        running = self.telemetry
        if running is not None and not running.stopped:
            return running
        if self._telemetry_starting is not None:  # a concurrent call is starting it
            await asyncio.shield(self._telemetry_starting)
            if self.telemetry is None or self.telemetry.stopped:
                raise RuntimeError("telemetry did not start: see the error of the first call")
            return self.telemetry
        if self._closed:
            raise EngineShutdownError("engine is shut down")
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, not {progress!r}")
        try:
            from ..telemetry.manager import start
        except ImportError as exc:  # pragma: no cover - the SDK is a dependency
            raise ImportError(
                f"telemetry needs the OpenTelemetry SDK ({exc}); "
                "reinstall asyncflow-otel (pip install . in its clone)"
            ) from exc
        starting = self._telemetry_starting = self._loop.create_future()
        try:
            tel = await start(
                session_id=self.uid,
                backends=self._backends,
                parent_span=self._telemetry_parent,
                on_stopped=self._telemetry_stopped,
                resource_poll_interval=resource_poll_interval,
                checkpoint_interval=checkpoint_interval,
                checkpoint_path=checkpoint_path,
                span_processors=span_processors,
                metric_readers=metric_readers,
                resource=resource,
                otlp_endpoint=otlp_endpoint,
                otlp_protocol=otlp_protocol,
                prometheus_port=prometheus_port,
                prometheus_host=prometheus_host,
                span_buffer=span_buffer,
                redact=redact,
            )
            self.telemetry = tel
            self._observer = tel.observer
            if progress and self._progress is None:
                from ..progress import ProgressReporter

                self._progress = ProgressReporter(self.task_counts)
                self._progress.start()
        finally:
            self._telemetry_starting = None
            starting.set_result(None)
        return tel

    def _telemetry_stopped(self, observer: TaskObserver) -> None:
        """Telemetry stopped: tasks still running are no longer observed by it."""
        if self._observer is not observer:
            return
        self._observer = None
        for fut in self._tasks.values():
            fut._tel = None

    # ------------------------------------------------------------------ shutdown
    async def shutdown(self, skip_execution_backend: bool = False) -> None:
        """Cancel every unfinished task, shut the backends down, stop telemetry.

        Safe to call twice or concurrently: later calls wait for the first.

        Args:
            skip_execution_backend: leave the backends running.
        """
        if self._shutdown_task is None:
            self._closed = True
            self._shutdown_task = self._loop.create_task(
                self._shutdown_once(skip_execution_backend)
            )
        await asyncio.shield(self._shutdown_task)

    async def _shutdown_once(self, skip_execution_backend: bool) -> None:
        """The one run of shutdown every ``shutdown()`` call waits for."""
        try:
            await self._cancel_and_stop(skip_execution_backend)
        finally:
            if self._gc_counted:
                self._gc_counted = False
                _gc.engine_stopped()

    async def _cancel_and_stop(self, skip_execution_backend: bool) -> None:
        """Cancel what is unfinished, stop the backends, then telemetry."""
        remove_signal_handlers(self, self._loop)
        unfinished = [f for f in self._graph.unfinished() if type(f) is TaskFuture]
        for fut in unfinished:
            if fut.kind == KIND_BLOCK and not fut.done():
                fut.cancel("engine shut down")
        for fut in unfinished:
            if not fut.done():
                fut.cancel("engine shut down")
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if not skip_execution_backend:
            backends = list(self._backends.values())
            results = await asyncio.gather(
                *(b.shutdown() for b in backends), return_exceptions=True
            )
            for be, res in zip(backends, results, strict=True):
                if isinstance(res, BaseException):
                    logger.error("backend %r failed to shut down: %r", be.name, res)
        self._drain_inbox()
        for fut in unfinished:
            if not fut.done():
                self._finish_cancel(fut, "engine shut down")
        reporter, self._progress = self._progress, None
        if reporter is not None:
            await reporter.stop()
        if self._to_store:
            self._store_pending()
        store, self._store = self._store, None
        if store is not None:
            store.close()
        tel = self.telemetry
        if tel is not None:
            await tel.stop()


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


def _upstream_or_value(arg: Any) -> Any:
    if type(arg) is not TaskFuture:
        return arg
    return arg.result() if arg.done() else Upstream(arg.uid)


def _command_key(cmd: Command) -> str:
    """What an executable's cache key holds of its command: the shell line as
    written, or the exact argv."""
    return "sh:" + cmd.line if cmd.line is not None else "argv:" + "\0".join(cmd.argv)


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


async def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Resume(coro, first)


class _Resume:
    """Continue a coroutine that was stepped once by hand, inside a Task."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Any:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
