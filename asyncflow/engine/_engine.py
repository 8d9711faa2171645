"""``WorkflowEngine``: tasks, dependencies, routing, cancellation, shutdown.

The engine is event-driven. A task call registers the task in the pure
:class:`~asyncflow.engine._graph.Graph`; the instructions it returns say which
tasks are ready. Ready tasks are batched per backend and handed over in one
``submit_tasks`` call per loop iteration. Backends report states through
``task_callbacks`` (from any thread); the report finishes the future and feeds
the graph, which releases the dependents in the same step. Nothing polls.

``WorkflowEngine`` is its public API over layers of one concern each, every
layer a subclass of the one below: ``EngineState`` (``_engine_state``, the
state), ``Finishing`` (how a task ends), ``Descriptions`` (what a backend
gets), ``Submission`` (release and hand-over), ``Attempts`` (retries,
timeouts, the cache), ``Reporting`` (backends' reports) and ``Calls`` (a
task call). They call each other both ways (a release hands tasks over,
whose reports release more): the few calls down to a layer above are
declared in ``EngineState`` for the type checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from .. import _check
from ..backends._base import Backend
from ..errors import EngineShutdownError
from ..telemetry import names as n
from . import _gc, _serving
from . import _graph as g
from ._calls import Calls
from ._future import KIND_BLOCK, TaskFuture
from ._signals import install_signal_handlers, remove_signal_handlers

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor

    from ..progress import Counts, ProgressReporter
    from ..telemetry.manager import Telemetry
    from ..telemetry.observer import LiveWorkflow, TaskObserver

__all__ = ["WorkflowEngine"]

logger = logging.getLogger("asyncflow")


class WorkflowEngine(Calls):
    """Runs decorated ``async def`` tasks on one or more backends.

    Create it with ``engine = await WorkflowEngine.create(...)``; see
    ``docs/`` and API.md for the full contract.
    """

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
            ValueError: two backends share a name, or a backend serves another
                engine still (one that has not shut down, or that left
                tasks running on it with ``skip_execution_backend=True``).
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
        try:
            await engine._loop.run_in_executor(
                None, lambda: os.makedirs(session_dir, exist_ok=True)
            )
        except BaseException:
            _serving.release(engine, list(engine._backends.values()))  # free for another engine
            raise
        for be in engine._backends.values():
            be._work_dir = session_dir
        install_signal_handlers(engine, engine._loop)
        _gc.engine_started()
        engine._gc_counted = True
        return engine

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

        Raises:
            TypeError: ``workflow_id`` or ``name`` is neither a string nor None.
        """
        # Checked here, where the mistake is made: both reach span names,
        # metric labels and the checkpoint file, which take only text.
        workflow_id = _check.text_or_none("workflow_scope() workflow_id", workflow_id)
        name = _check.text_or_none("workflow_scope() name", name)
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
                try:
                    self._observer.workflow_ended(span, error)
                except Exception:  # noqa: BLE001 - the scope's own error, if any, propagates
                    self._telemetry_failed("workflow_ended", wf_id)

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
        """Cancel this engine's unfinished tasks, shut the backends down, stop telemetry.

        A task of another engine that one of its tasks waits on is left to
        that engine.

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
        # Only this engine's tasks: the graph also holds the futures of other
        # engines this engine's tasks wait on, which their own engine runs
        # (its graph, its dependents and its telemetry would never hear of a
        # cancel made here). This engine's tasks waiting on them are its own.
        unfinished = [
            f for f in self._graph.unfinished() if type(f) is TaskFuture and f._engine is self
        ]
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
        running: dict[str, set[str]] = {}  # by backend name: the tasks it may still run
        for fut in unfinished:
            if not fut.done():
                backend = fut._backend
                if backend is not None and self._graph.state(fut) in _ON_A_BACKEND:
                    running.setdefault(backend.name, set()).add(fut.uid)
                self._finish_cancel(fut, "engine shut down")
        # Another engine may take the backends over now, or, for one that
        # may still run tasks of this one, once they have ended.
        reports = list(self._inbox)  # reached this engine after it stopped listening
        self._inbox.clear()
        _serving.hand_on(self, self._backends, running if skip_execution_backend else {}, reports)
        starting = self._telemetry_starting
        if starting is not None:  # a start_telemetry in flight: stop what it starts
            await asyncio.shield(starting)
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
        if not skip_execution_backend:
            # The backends are done with their working directory: if nothing
            # was written there (a dry run, tasks without files), it goes,
            # so that runs do not leave an empty directory each behind.
            session_dir = os.path.join(self.work_dir, self.uid)
            await self._loop.run_in_executor(None, _remove_if_empty, session_dir)


# Graph states of a task handed to a backend that has not reported its end.
_ON_A_BACKEND = frozenset({g.SUBMITTED, g.RUNNING})


def _remove_if_empty(path: str) -> None:
    """Remove the directory ``path`` if it is empty (else leave it as it is)."""
    with contextlib.suppress(OSError):  # not empty, gone already, not ours to remove
        os.rmdir(path)


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))
