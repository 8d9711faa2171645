"""A task call: its future, its dependencies, its scope and its options."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import _check
from ..errors import EngineShutdownError, TaskDefinitionError, UnknownBackendError
from ..telemetry import names as n
from . import _graph as g
from ._deps import ATOMIC, Found, find_dependencies
from ._engine_state import _Where
from ._future import KIND_BLOCK, KIND_FUNCTION, TaskFuture, new_task_future
from ._policy import POLICY_KWARGS, RunState, TaskPolicy
from ._reporting import Reporting
from ._tasks import NO_KWARGS, NO_TASK_DESCRIPTION, POLICY_KINDS, TaskSpec

if TYPE_CHECKING:
    from ..telemetry.observer import LiveSpan, TaskSpan

__all__ = ["Calls"]

# Call keyword arguments the engine takes for itself.
_ENGINE_KWARGS = frozenset({"task_description", "workflow_id", *POLICY_KWARGS})
_ALL_DEFAULTS = TaskPolicy()
_NOWHERE: _Where = (None, None)  # outside any block or workflow scope
_LAST_DIGITS = tuple(f"{i:03d}" for i in range(1000))  # the uid's last three digits


class Calls(Reporting):
    """A task call: its future, its dependencies, its scope and its options."""

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
        # self is a WorkflowEngine, the only class made of these layers
        fut = new_task_future(self, self._loop, spec, uid)  # type: ignore[arg-type]
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
            observer = self._observer
            if observer is not None:
                told = fut.kind == KIND_FUNCTION and fut._policy is None
                if where is _NOWHERE:  # _created(), inline: outside any block or scope
                    fut._tel = observer.task_created(
                        fut, fut.target_backend or self._default, None, None, told
                    )
                else:
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
            if wf_override is not None and not isinstance(wf_override, str):
                # The scope's workflow_id takes only a string too.
                problem = problem or TypeError(
                    f"workflow_id for '{spec.name}' must be a string, "
                    f"not {type(wf_override).__name__} {wf_override!r}"
                )
                wf_override = None
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

    def _created(self, fut: TaskFuture[Any], where: _Where, ready: bool = False) -> None:
        observer = self._observer
        if observer is None:
            return
        block, scope = where
        parent = block._tel if block is not None else None
        backend = fut.target_backend or self._default
        fut._tel = observer.task_created(fut, backend, parent, scope[0] if scope else None, ready)

    def _telemetry_parent(self) -> LiveSpan | TaskSpan | None:
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
