"""The ``Telemetry`` object ``engine.start_telemetry()`` returns."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor

from . import names as n
from ._failures import error_text
from ._otel import (
    Exporters,
    Instruments,
    SpanBridge,
    assemble_exporters,
    make_resource,
    otlp_span_processor,
    serve_prometheus,
)
from ._pipe_writer import NoWriterProcess, ProcessCheckpointWriter
from ._recorder import Recorder
from ._sampler import IO_KEYS, NodeSampler
from ._spill import dumps
from .checkpoint import open_checkpoint
from .events import ENGINE_EVENT_TYPES, Event, ResourceUpdate, as_event
from .observer import LiveSpan, TaskObserver, TaskSpan
from .otlp_json import spans_to_otlp_json
from .redact import describer, redactor

# Seconds ``stop()`` waits for async subscribers still handling events.
SUBSCRIBER_GRACE = 5.0

__all__ = ["SlotPool", "Telemetry", "start"]

logger = logging.getLogger("asyncflow.telemetry")

Subscriber = Callable[[Event], Any]


class Telemetry:
    """Traces, metrics, events and the checkpoint file of one engine session.

    Made by ``await engine.start_telemetry(...)``; stopped by
    ``engine.shutdown()`` (or ``await tel.stop()``).
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        recorder: Recorder,
        bridge: SpanBridge,
        readers: list[MetricReader],
        writer: Any,
        slot_pools: Mapping[str, SlotPool],
        prometheus: tuple[Any, int] | None,
        parent_span: Callable[[], LiveSpan | TaskSpan | None],
        on_stopped: Callable[[TaskObserver], None],
        resource_poll_interval: float,
        checkpoint_interval: float | None,
        otlp_metrics: Any = None,
    ) -> None:
        self._loop = loop
        self._recorder = recorder
        self._bridge = bridge
        self._writer = writer
        self._otlp_metrics = otlp_metrics
        self._parent_span = parent_span
        self._on_stopped = on_stopped
        self._subscribers: list[Subscriber] = []
        self._failed_subscribers: set[int] = set()
        self._slots: dict[tuple[str, str, str], int] = {}
        self._slot_pools = dict(slot_pools)
        self._prometheus = prometheus
        self._stopped = False
        self._stop_task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._thread_id = threading.get_ident()
        self._sampler: NodeSampler | None = None
        self._instruments = Instruments(
            bridge.resource,
            readers,
            [
                recorder.task_duration,
                recorder.queue_duration,
                recorder.run_duration,
                recorder.workflow_duration,
            ],
            lambda: recorder.active_tasks,
            lambda: recorder.active_workflows,
            self._slot_counts,
            self._node_sample,
            counters=[recorder.retries, recorder.cache_lookups],
            otlp_metrics=otlp_metrics,
        )
        recorder.deliver = self._deliver_engine_event
        recorder.session_started()
        try:
            self._sampler = NodeSampler(resource_poll_interval, self._resource_sample)
        except Exception:
            logger.warning("node utilisation sampling is off", exc_info=True)
        self._metric_snapshot()  # capacities and the first sample, from the start
        self._metric_task: asyncio.Task[None] | None = (
            loop.create_task(self._snapshots(checkpoint_interval)) if checkpoint_interval else None
        )

    # ------------------------------------------------------------------ facts
    @property
    def observer(self) -> TaskObserver:
        """The hooks the engine calls at every task transition."""
        return self._recorder

    @property
    def stopped(self) -> bool:
        """True once ``stop()`` has ended the session."""
        return self._stopped

    @property
    def session_id(self) -> str:
        """The engine session this telemetry belongs to (the engine uid)."""
        return self._recorder.session_id

    @property
    def trace_id(self) -> str:
        """The session's trace id (hex)."""
        return self._recorder.trace_hex

    @property
    def checkpoint_file(self) -> Path | None:
        """The JSON Lines checkpoint file, when a checkpoint directory was given."""
        return self._writer.path if self._writer is not None else None  # None: OTLP only

    @property
    def checkpoint_writer_peak_rss(self) -> int | None:
        """The checkpoint writer process's peak RSS in bytes, once it has exited
        (after shutdown); ``None`` without one (or before)."""
        return getattr(self._writer, "writer_peak_rss", None)

    @property
    def prometheus_port(self) -> int | None:
        """The port ``/metrics`` is served on, when it is."""
        return self._prometheus[1] if self._prometheus is not None else None

    # ------------------------------------------------------------------ events
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; sync or ``async def``.

        An exception in a subscriber is logged (once per subscriber) and never
        reaches the engine. Returns a function that unsubscribes.
        """
        self._subscribers.append(callback)
        self._recorder.subscribers_active = True

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)
            self._recorder.subscribers_active = bool(self._subscribers)

        return unsubscribe

    def emit(self, obj: Any) -> Event:
        """Record an event: checkpoint line, OTLP and subscribers. Thread-safe, never blocks.

        ``obj`` is an event of ``define_event`` (asyncflow's or RHAPSODY's,
        e.g. from ``rhapsody.telemetry.events.make_event``). Missing
        ``event_id``, ``event_time``, ``emit_time``, ``session_id`` and
        ``node_id`` are filled in. A user event also becomes a span event of
        the session span (the last 1,000 are kept), so OTLP receives it.
        Subscribers get the recorded event, which is returned.

        Raises:
            TypeError: ``obj`` is not an event.
        """
        event: Event = as_event(obj)
        now = time.time()
        rec = self._recorder
        event = dataclasses.replace(
            event,
            event_id=event.event_id if event.event_id is not None else rec.new_event_id(),
            event_time=event.event_time if event.event_time is not None else now,
            emit_time=now,
            session_id=event.session_id or rec.session_id,
            node_id=event.node_id or rec.node_id,
        )
        if self.checkpoint_file is not None and not self._stopped:
            record = {"section": n.SECTION_EVENT, "name": event.event_type, **event.to_dict()}
            record["trace_id"] = rec.trace_hex
            record["span_id"] = f"{rec.session.span_id:016x}"
            self._writer.write_line(dumps(record) + "\n")
        if event.event_type not in ENGINE_EVENT_TYPES and not self._stopped:
            rec.session_note(
                event.event_type, int((event.event_time or now) * 1e9), _span_attributes(event)
            )
        if self._subscribers:
            if threading.get_ident() == self._thread_id:
                self._dispatch(event)
            else:
                with contextlib.suppress(RuntimeError):  # loop closed: nobody listens
                    self._loop.call_soon_threadsafe(self._dispatch, event)
        return event

    def _deliver_engine_event(
        self, name: str, rec: LiveSpan | None, t: float, extra: dict[str, Any], event_id: int
    ) -> None:
        cls = ENGINE_EVENT_TYPES[name]
        attrs: dict[str, Any] = {}
        if rec is not None and rec.workflow_id:
            attrs[n.WORKFLOW_ID] = rec.workflow_id
        if name == n.EVENT_TASK_CREATED and rec is not None and rec.fut is not None:
            fut = rec.fut  # what the checkpoint's created line says too
            attrs.update({n.LEVEL: rec.level, n.TASK_NAME: fut.name})
            attrs[n.WORKFLOW_NAME] = fut.workflow_name or ""
            if rec.level == n.LEVEL_TASK:
                td = fut.task_description or {}
                attrs.update(
                    {
                        n.TASK_TYPE: fut.kind,
                        n.TASK_CPUS: int(td.get("cpus", 1)),
                        n.TASK_GPUS: int(td.get("gpus", 0)),
                    }
                )
        if name in _TIMED_EVENTS:
            timed = self._recorder.session if name == n.EVENT_SESSION_ENDED else rec
            extra = {**extra, "duration_seconds": _duration(name, timed, t)}
        event = cls(
            event_id=event_id,
            event_time=t,
            emit_time=t,
            session_id=self._recorder.session_id,
            backend=rec.backend if rec is not None else None,
            task_id=rec.uid if rec is not None else None,
            node_id=self._recorder.node_id,
            attributes=attrs,
            **extra,
        )
        self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                result = callback(event)
            except Exception:  # noqa: BLE001 - subscribers never break the engine
                self._subscriber_failed(callback)
                continue
            if asyncio.iscoroutine(result):
                task = self._loop.create_task(self._guard(callback, result))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _guard(self, callback: Subscriber, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:  # noqa: BLE001
            self._subscriber_failed(callback)

    def _subscriber_failed(self, callback: Subscriber) -> None:
        if id(callback) not in self._failed_subscribers:
            self._failed_subscribers.add(id(callback))
            logger.exception("event subscriber %r failed (later failures not logged)", callback)

    # ------------------------------------------------------------------ spans
    def register_span_enricher(self, fn: Callable[[Any, dict[str, Any]], Any]) -> None:
        """Add ``fn(task_future, attributes) -> dict | None`` to enrich task spans.

        The returned dict is merged into the span's attributes when the task
        ends. An enricher that raises is logged and removed.
        """
        self._recorder.enrichers.append(fn)

    @contextlib.contextmanager
    def span_scope(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[LiveSpan]:
        """A span of your own around a piece of code, under the current workflow or block."""
        rec_parent = self._parent_span()
        parent = rec_parent.span_id if rec_parent is not None else self._recorder.session.span_id
        rec = self._recorder.new_span(parent, n.LEVEL_SPAN, n.span_name(n.LEVEL_SPAN, name))
        rec.attributes = {**(attributes or {}), n.LEVEL: n.LEVEL_SPAN}
        status, desc = n.STATUS_UNSET, ""
        try:
            yield rec
        except BaseException as exc:
            status = n.STATUS_ERROR
            desc = self._recorder.describe(f"{type(exc).__name__}: {error_text(exc)}")
            rec.attributes[n.ERROR_TYPE] = type(exc).__name__
            raise
        finally:
            rec.end_ns = time.time_ns()
            self._recorder.finish_span(rec, status, desc)

    def read_traces(self) -> list[dict[str, Any]]:
        """The finished spans still in the in-memory ring (oldest first)."""
        return self._recorder.traces()

    def task_spans(self) -> list[dict[str, Any]]:
        """The finished task spans in the ring."""
        return [s for s in self.read_traces() if s["attributes"].get(n.LEVEL) == n.LEVEL_TASK]

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every metric data point now, as plain dicts (name, unit, attributes, value/histogram)."""
        return self._instruments.read()

    def summary(self) -> dict[str, Any]:
        """Tasks by state, durations, failures by error type, per workflow type."""
        rec = self._recorder
        durations = []
        for point in sorted(
            rec.task_duration.points(), key=lambda p: sorted(p["attributes"].items())
        ):
            attrs = point["attributes"]
            durations.append(
                {
                    "workflow_name": attrs.get(n.WORKFLOW_NAME, ""),
                    "task_name": attrs.get(n.TASK_NAME, ""),
                    "task_type": attrs.get(n.TASK_TYPE, ""),
                    "backend": attrs.get(n.BACKEND, ""),
                    "result": attrs.get(n.TASK_RESULT, ""),
                    "error_type": attrs.get(n.ERROR_TYPE, ""),
                    "count": point["count"],
                    "total_s": point["sum"],
                    "mean_s": point["sum"] / point["count"],
                }
            )
        by_state: dict[str, int] = {}
        failures: dict[str, int] = {}
        per_workflow: dict[str, dict[str, int]] = {}
        for entry in durations:
            count, result = entry["count"], entry["result"]
            by_state[result] = by_state.get(result, 0) + count
            if entry["error_type"]:
                failures[entry["error_type"]] = failures.get(entry["error_type"], 0) + count
            per_wf = per_workflow.setdefault(entry["workflow_name"], {})
            per_wf[result] = per_wf.get(result, 0) + count
        runs, run_total, run_min, run_max = rec.run_totals()
        end_ns = rec.session.end_ns or time.time_ns()
        return {
            "session_id": rec.session_id,
            # RHAPSODY's keys, which the older AsyncFlow returned.
            "tasks": {
                "submitted": rec.submitted_total,
                "completed": by_state.get(n.RESULT_COMPLETED, 0),
                "failed": by_state.get(n.RESULT_FAILED, 0),
                "canceled": by_state.get(n.RESULT_CANCELED, 0),
                "running": sum(v for (s, _), v in rec.active_tasks.items() if s == n.STATE_RUNNING),
            },
            "duration": {
                "total_seconds": round(run_total, 6),
                "mean_seconds": round(run_total / runs, 6),
                "min_seconds": round(run_min, 6),
                "max_seconds": round(run_max, 6),
            }
            if runs
            else {},
            "duration_seconds": round((end_ns - rec.session.start_ns) / 1e9, 6),
            "resources": self._latest_resources(),
            "tasks_by_state": by_state,
            "active_tasks": sum(rec.active_tasks.values()),
            "failures_by_error_type": failures,
            "per_workflow_type": per_workflow,
            "durations": durations,
            "spans_finished": rec.spans_finished,
        }

    def export_as_otlp(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the spans in the ring as an OTLP/JSON file; returns its path."""
        if path is None:
            found = self.checkpoint_file
            base = found.parent if found is not None else Path.cwd()
            path = base / f"{self.session_id}.otlp.json"
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        resource = self._bridge.resource.attributes
        target.write_text(spans_to_otlp_json(self.read_traces(), dict(resource)), encoding="utf-8")
        return target

    def _resource_sample(self, sample: dict[str, Any]) -> None:
        gpus = sample.get("gpu") or []
        self.emit(
            ResourceUpdate(
                cpu_percent=sample.get("cpu"),
                memory_percent=sample.get("memory"),
                gpu_percent=(sum(gpus) / len(gpus)) if gpus else None,
                **{key: sample.get(key) for key in IO_KEYS},
            )
        )

    def _latest_resources(self) -> dict[str, dict[str, Any]]:
        sample = self._sampler.last if self._sampler is not None else {}
        if not sample.get("node"):
            return {}
        gpus = sample.get("gpu") or []
        return {
            sample["node"]: {
                "node_id": sample["node"],
                "cpu_percent": sample.get("cpu"),
                "memory_percent": sample.get("memory"),
                "gpu_percent": (sum(gpus) / len(gpus)) if gpus else None,
                **{key: sample.get(key) for key in IO_KEYS},
            }
        }

    # ------------------------------------------------------------------ slots (resources)
    def set_slots(self, backend: str, kind: str, busy: int, idle: int) -> None:
        """Publish a backend's busy and idle slots of one kind (``cpu``/``gpu``)."""
        self._slots[(backend, kind, n.SLOT_BUSY)] = busy
        self._slots[(backend, kind, n.SLOT_IDLE)] = idle

    def _slot_counts(self) -> dict[tuple[str, str, str], int]:
        counts = dict(self._slots)
        for name, pool in self._slot_pools.items():
            for kind, (busy, idle) in pool.usage().items():
                counts[(name, kind, n.SLOT_BUSY)] = busy
                counts[(name, kind, n.SLOT_IDLE)] = idle
        return counts

    def _node_sample(self) -> dict[str, Any]:
        return self._sampler.last if self._sampler is not None else {}

    # ------------------------------------------------------------------ stop
    def _metric_snapshot(self) -> None:
        if self.checkpoint_file is None:
            return
        rec = self._recorder
        node = self._sampler.last if self._sampler is not None else {}
        self._writer.write_record(
            {
                "section": n.SECTION_METRIC,
                "time_s": time.time(),
                "session_id": rec.session_id,
                "tasks_by_state": self.summary()["tasks_by_state"],
                "active_tasks": {f"{s}/{b}": v for (s, b), v in rec.active_tasks.items()},
                "active_workflows": dict(rec.active_workflows),
                "resource_slots": {
                    f"{b}/{k}/{s}": v for (b, k, s), v in self._slot_counts().items()
                },
                "node": node,
            }
        )

    async def _snapshots(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._metric_snapshot()

    async def stop(self) -> None:
        """End the session span, flush every exporter, close the checkpoint file."""
        if self._stop_task is None:
            self._stop_task = self._loop.create_task(self._stop())
        await asyncio.shield(self._stop_task)

    async def _stop(self) -> None:
        if self._metric_task is not None:
            self._metric_task.cancel()
        if self._pending:
            # Async subscribers get a grace period, not a veto over shutdown.
            _, late = await asyncio.wait(list(self._pending), timeout=SUBSCRIBER_GRACE)
            if late:
                logger.warning(
                    "%d async event subscriber call(s) still running after %.0f s at stop: "
                    "cancelled",
                    len(late),
                    SUBSCRIBER_GRACE,
                )
                for task in late:
                    task.cancel()
        self._recorder.session_ended()
        self._metric_snapshot()
        self._stopped = True
        self._on_stopped(self._recorder)
        await self._loop.run_in_executor(None, self._stop_blocking)

    def _stop_blocking(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        self._bridge.flush()
        self._bridge.shutdown()
        forwarded = self._otlp_metrics is not None and self._otlp_metrics.forwarded
        if forwarded:
            # The metrics' final export goes to the telemetry process with
            # the last records, which it sends after them.
            self._instruments.shutdown()
        # Else the telemetry process first: it sends the last spans, and an
        # endpoint it found down is then not tried again by the metrics'
        # final export (the SDK exporter would retry it for seconds).
        if self._writer is not None:
            self._writer.close()
        if not forwarded:
            self._instruments.shutdown()
        if self._prometheus is not None:
            server = self._prometheus[0]
            server.shutdown()
            server.server_close()


class SlotPool(Protocol):
    """A resource-aware backend's ``resource_pool`` (``asyncflow.ResourcePool``)."""

    def usage(self) -> Mapping[str, tuple[int, int]]:
        """Busy and idle slots by kind (``cpu``, ``gpu``)."""


_TIMED_EVENTS = frozenset({*n.TASK_FINAL_EVENTS, n.EVENT_SESSION_ENDED})


def _duration(name: str, rec: LiveSpan | None, t: float) -> float:
    """RHAPSODY's ``duration_seconds``: a task's run (0.0 if it never
    started), the session's whole length."""
    if rec is None:
        return 0.0
    start = rec.start_ns if name == n.EVENT_SESSION_ENDED else rec.t_started
    return max(t - start / 1e9, 0.0) if start else 0.0


def _span_attributes(event: Event) -> dict[str, Any]:
    """An event's own fields and attributes as OpenTelemetry attribute values."""
    out: dict[str, Any] = {}
    values = {**event.attributes, **event.to_dict()}
    for key in ("attributes", "event_type", "event_time", "emit_time"):
        values.pop(key, None)
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(
            isinstance(v, (bool, int, float, str)) for v in value
        ):
            out[key] = list(value)
        else:
            out[key] = str(value)
    return out


def _open_writer(
    file: Path | None,
    header: tuple[str, str, str],
    loop: asyncio.AbstractEventLoop,
    exporters: Exporters,
    bridge: SpanBridge,
    resource: Resource,
    recorder: Recorder,
) -> Any:
    """The telemetry process: it writes the checkpoint file and exports the
    OTLP spans and metrics, off this process. Without it, the file is
    written from a thread and OTLP spans and metrics go through the SDK's
    exporters here."""
    if exporters.otlp_spans is None:
        return open_checkpoint(file, header, loop=loop) if file is not None else None
    endpoint, protocol = exporters.otlp_spans
    settings = {
        "endpoint": endpoint,
        "protocol": protocol,
        "resource": dict(resource.attributes),
        "session_span": recorder.session.span_id,
    }
    try:
        writer = ProcessCheckpointWriter(
            file, header, loop, otlp=settings, health=exporters.otlp_health
        )
    except NoWriterProcess as exc:
        logger.warning("no telemetry process (%s): OTLP spans are exported from this one", exc)
    else:
        recorder.task_spans = True
        if exporters.otlp_metrics is not None:
            exporters.otlp_metrics.attach(writer.write)
        return writer
    bridge.processors.append(
        otlp_span_processor(endpoint, protocol, exporters.otlp_health, exporters.otlp_metrics)
    )
    return open_checkpoint(file, header, in_process=True) if file is not None else None


async def start(
    *,
    session_id: str,
    backends: Mapping[str, object],
    parent_span: Callable[[], LiveSpan | TaskSpan | None],
    on_stopped: Callable[[TaskObserver], None],
    resource_poll_interval: float,
    checkpoint_interval: float | None,
    checkpoint_path: str | os.PathLike[str] | None,
    span_processors: list[SpanProcessor] | None,
    metric_readers: list[MetricReader] | None,
    resource: Resource | None,
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    prometheus_port: int | None,
    prometheus_host: str,
    span_buffer: int,
    redact: bool | Callable[[str], str] = True,
) -> Telemetry:
    """Build and start the telemetry of one engine session.

    Args:
        session_id: the engine uid (``service.instance.id``, file names).
        backends: the engine's backends by name; those with a
            ``resource_pool`` publish their slots.
        parent_span: returns the span of the innermost workflow scope or
            block now, for ``Telemetry.span_scope``.
        on_stopped: called with the observer once telemetry has stopped
            (the engine stops calling it).
        resource_poll_interval, checkpoint_interval, checkpoint_path,
        span_processors, metric_readers, resource, otlp_endpoint,
        otlp_protocol, prometheus_port, prometheus_host, span_buffer, redact:
            see ``WorkflowEngine.start_telemetry``.
    """
    import socket

    loop = asyncio.get_running_loop()
    exporters = assemble_exporters(
        span_processors,
        metric_readers,
        otlp_endpoint,
        otlp_protocol,
        prometheus_port,
        spans_in_process=False,
    )
    the_resource = make_resource(resource, session_id)
    bridge = SpanBridge(exporters.processors, the_resource)
    node_id = socket.gethostname()
    file = None
    if checkpoint_path is not None:
        started = int(time.time())
        file = Path(checkpoint_path) / f"{session_id}.{started}{n.CHECKPOINT_SUFFIX}"
        while file.exists():
            # Telemetry restarted within the second it last started: it
            # starts in the next second, in a file of its own (the name's
            # second stays its true start, which readers order runs by).
            await asyncio.sleep(max(started + 1 - time.time(), 0.0))
            started = int(time.time())
            file = file.with_name(f"{session_id}.{started}{n.CHECKPOINT_SUFFIX}")
    recorder = Recorder(session_id, node_id, span_buffer, None)
    recorder.describe = describer(redact)
    recorder.redact = redactor(redact)
    header = (session_id, node_id, recorder.trace_hex)
    writer = _open_writer(file, header, loop, exporters, bridge, the_resource, recorder)
    if writer is not None:
        wait_ready = getattr(writer, "wait_ready", None)
        if wait_ready is not None:
            await loop.run_in_executor(None, wait_ready)
        recorder.attach(writer)
    # Only the caller's own processors get SDK spans built on this process.
    recorder.span_sink = bridge if bridge.processors else None
    pools: dict[str, SlotPool] = {
        name: pool
        for name, backend in backends.items()
        if (pool := getattr(backend, "resource_pool", None)) is not None
    }
    return Telemetry(
        loop=loop,
        recorder=recorder,
        bridge=bridge,
        readers=exporters.readers,
        otlp_metrics=exporters.otlp_metrics,
        writer=writer,
        slot_pools=pools,
        prometheus=serve_prometheus(exporters, prometheus_host),
        parent_span=parent_span,
        on_stopped=on_stopped,
        resource_poll_interval=resource_poll_interval,
        checkpoint_interval=checkpoint_interval,
    )
