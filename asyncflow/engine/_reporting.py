"""What backends report: ``task_callbacks`` from any thread, then each report on the loop."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, cast

from ..backends._base import (
    CANCEL_STATES,
    FINAL_STATES,
    STATE_DONE,
    STATE_FAILED,
    STATE_RUNNING,
    TaskDescription,
)
from ..errors import BackendError
from . import _graph as g
from ._attempts import Attempts
from ._engine_state import _RELEASE, _stdio_dir
from ._future import KIND_FUNCTION, TaskFuture
from ._reports import RESULT_FIELDS, describe_report, report_uid, task_fields
from ._results import failure_of, stdout_file, value_of

__all__ = ["Reporting"]

logger = logging.getLogger("asyncflow")

_get_ident = threading.get_ident


class Reporting(Attempts):
    """What backends report: ``task_callbacks`` from any thread, then each report on the loop."""

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
            if self._inbox:
                # Reports from threads come first: a backend that reports a
                # start from its worker and the end on the loop (the local
                # backend) has its start in here when another thread's
                # wake-up of the inbox is late.
                self._handle_inbox()
            self._report(task, state)
            return
        self._inbox.append((task, state))
        if not self._wakeup_pending:
            self._wakeup_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:  # loop closed: nobody is waiting any more
                self._wakeup_pending = False

    def _handle_inbox(self) -> None:
        inbox = self._inbox
        report = self._report
        while inbox:
            report(*inbox.popleft())

    def _drain_inbox(self) -> None:
        self._wakeup_pending = False
        self._handle_inbox()
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
                        try:
                            observer.completed(
                                span,
                                reported,
                                tuple([d.uid for d in deps if type(d) is TaskFuture])
                                if deps
                                else (),
                            )
                        except Exception:  # noqa: BLE001 - a telemetry hook never stops a task
                            self._telemetry_failed("completed", fut.uid)
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
            if run is not None and self._graph.state(fut) == g.READY:
                # A start reported after its attempt's end (a backend that
                # reports out of order): the next attempt is not handed over
                # yet, and must be.
                return
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
