"""How a task ends: its future, its dependents, its telemetry, cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from ..backends._base import Backend
from ..errors import DependencyFailureError
from ..telemetry import names as n
from . import _graph as g
from ._engine_state import _RELEASE, EngineState
from ._future import KIND_BLOCK, TaskFuture

__all__ = ["Finishing"]

logger = logging.getLogger("asyncflow")


class Finishing(EngineState):
    """How a task ends: its future, its dependents, its telemetry, cancellation."""

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
            # A hook that raised would leave the task's dependents waiting.
            try:
                self._observer.task_finished(span, result, exc, self._closed, depends_on)
            except Exception:  # noqa: BLE001 - a telemetry hook never stops a task
                self._telemetry_failed("task_finished", fut.uid)

    def _completed_telemetry(self, fut: TaskFuture[Any], started: bool) -> None:
        """``fut`` completed: started (unless ``started``) and ended, in one hook."""
        span = fut._tel
        if span is not None and self._observer is not None:
            fut._tel = None
            deps = fut._deps
            depends_on = tuple([d.uid for d in deps if type(d) is TaskFuture]) if deps else ()
            try:
                self._observer.completed(span, started, depends_on)
            except Exception:  # noqa: BLE001 - a telemetry hook never stops a task
                self._telemetry_failed("completed", fut.uid)

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

    def _fail_at_once(self, fut: TaskFuture[Any], exc: BaseException) -> TaskFuture[Any]:
        self._graph.add_ready(fut)
        self._settling(fut)
        fut.set_exception(exc)
        self._ended(fut, n.RESULT_FAILED, exc)
        self._apply(self._graph.finish(fut, g.FAILED))
        return fut

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
