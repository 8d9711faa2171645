"""A task's policy at work: attempts, retries, timeouts and the result cache."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from ..backends._base import STATE_DONE, STATE_FAILED, Backend, StopsTasks, TaskDescription
from ..errors import TaskTimeoutError
from ..telemetry import names as n
from ._engine_state import _stdio_dir
from ._future import TaskFuture
from ._policy import RunState
from ._results import failure_of, stdout_file, value_of
from ._submission import Submission

if TYPE_CHECKING:
    from ..cache import ResultCache

__all__ = ["Attempts"]

logger = logging.getLogger("asyncflow")

# What a backend writes into a task dict: cleared before a retry.
_RESULT_KEYS = ("return_value", "stdout", "stderr", "exit_code", "exception", "slots")
# Seconds a backend has to confirm it stopped a timed-out task before its
# future fails anyway (a thread function that never awaits cannot be stopped).
TIMEOUT_GRACE = 10.0


class Attempts(Submission):
    """A task's policy at work: attempts, retries, timeouts and the result cache."""

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
            try:
                self._observer.attempt_ended(fut._tel, run.attempt, run.started_ns, error, retrying)
            except Exception:  # noqa: BLE001 - a telemetry hook never stops a task
                self._telemetry_failed("attempt_ended", fut.uid)

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
