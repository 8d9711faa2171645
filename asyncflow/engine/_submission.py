"""Ready tasks to their backends: release, batching, hand-over, blocks."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from ..backends._base import SUBMITTED, Backend, TaskDescription
from ..telemetry import names as n
from . import _graph as g
from ._command import Command, read_command
from ._deps import ATOMIC, substitute
from ._descriptions import Descriptions
from ._engine_state import _Route
from ._future import KIND_BLOCK, KIND_EXECUTABLE, KIND_FUNCTION, TaskFuture

if TYPE_CHECKING:
    from ..telemetry.observer import TaskSpan

__all__ = ["Submission"]

logger = logging.getLogger("asyncflow")

# Rounds of hand-over one loop callback may run (see WorkflowEngine._flush).
_FLUSH_ROUNDS = 64
_future_result = asyncio.Future.result


class Submission(Descriptions):
    """Ready tasks to their backends: release, batching, hand-over, blocks."""

    def _release(self, fut: TaskFuture[Any], told: bool = False) -> None:
        """All dependencies of ``fut`` are done: resolve arguments and hand it on
        (``told``: its telemetry said ready when it was created)."""
        if fut.done():
            return
        # A function task without a policy reports resolved and queued in
        # one call (ready) once it is queued; every other task now.
        plain = fut.kind == KIND_FUNCTION and fut._policy is None
        if not plain and fut._tel is not None and self._observer is not None:
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
                if not told and fut._tel is not None and self._observer is not None:
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

    def _evaluate_body(self, fut: TaskFuture[Any], args: Any, kwargs: Any) -> None:
        """Run an executable or prompt body (on this loop) with resolved values."""
        if fut._run is not None:  # its cache key needs them once the command is known
            fut._run.arguments = (args, kwargs)
        try:
            task = self._loop.create_task(fut.func(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - e.g. a body that cannot take these arguments
            # This task fails, as a function task would; the caller (another
            # task's end, releasing its dependents) goes on with the others.
            self._finish_exc(fut, exc)
            return
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
                    try:
                        self._hand_over(name, futs)
                    except Exception as exc:  # noqa: BLE001 - failed, never lost
                        self._hand_over_failed(name, futs, exc)
                else:
                    for name, futs in outbox.items():
                        try:
                            self._hand_over(name, futs)
                        except Exception as exc:  # noqa: BLE001 - failed, never lost
                            self._hand_over_failed(name, futs, exc)
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
        spans: list[TaskSpan] | None = [] if observer is not None else None
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

    def _hand_over_failed(self, name: str, futs: list[TaskFuture[Any]], exc: Exception) -> None:
        """The engine itself failed while handing tasks over (a bug): fail
        those tasks with a ``BackendError`` that names it, log once. A task
        taken out of the outbox is never left pending."""
        from ..errors import BackendError

        live = [f for f in futs if not f.done()]
        logger.error(
            "engine failed to hand %d task(s) to backend %r: %s: %s",
            len(live),
            name,
            type(exc).__name__,
            exc,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        for fut in live:
            error = BackendError(
                f"the engine could not hand task {fut.uid} to backend {name!r}: "
                f"{type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            try:
                self._finish_exc(fut, error)
            except Exception:  # the normal path broke too: end it anyway
                logger.critical("engine failed to fail task %s", fut.uid, exc_info=True)
            if not fut.done():
                fut.set_exception(error)

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


def _command_key(cmd: Command) -> str:
    """What an executable's cache key holds of its command: the shell line as
    written, or the exact argv."""
    return "sh:" + cmd.line if cmd.line is not None else "argv:" + "\0".join(cmd.argv)


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
