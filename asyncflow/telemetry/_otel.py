"""OpenTelemetry SDK glue: resource, exporters, span processors, meter provider.

The engine never installs global providers: each engine owns its processors
and its ``MeterProvider``, so two engines in one process keep separate
telemetry. Spans are built as SDK ``ReadableSpan`` objects from the
recorder's finished-span dicts and handed to the processors.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .._version import __version__
from . import names as n
from ._aggregate import Counters, Histograms

__all__ = [
    "Exporters",
    "Instruments",
    "SpanBridge",
    "assemble_exporters",
    "make_resource",
    "otlp_exporters",
    "otlp_span_processor",
    "serve_prometheus",
]

logger = logging.getLogger("asyncflow.telemetry")

SCOPE = InstrumentationScope("asyncflow", __version__)

_STATUS = {
    n.STATUS_OK: trace_api.StatusCode.OK,
    n.STATUS_ERROR: trace_api.StatusCode.ERROR,
    n.STATUS_UNSET: trace_api.StatusCode.UNSET,
}
_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)


def make_resource(resource: Resource | None, session_id: str) -> Resource:
    """The engine's resource: the caller's, or one from the environment.

    ``service.name`` comes from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``
    when set, else ``"asyncflow"``; ``service.instance.id`` is the session id.
    """
    if resource is not None:
        return resource
    # The SDK reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (its own
    # parser: spaces, escapes); without either it says "unknown_service".
    found = Resource.create({n.SERVICE_INSTANCE_ID: session_id})
    name = found.attributes.get(n.SERVICE_NAME)
    if not isinstance(name, str) or name.startswith("unknown_service"):
        found = found.merge(Resource({n.SERVICE_NAME: n.DEFAULT_SERVICE_NAME}))
    return found


class SpanBridge:
    """Turns finished-span dicts into ``ReadableSpan`` objects for processors."""

    def __init__(self, processors: Sequence[SpanProcessor], resource: Resource) -> None:
        self.processors = list(processors)
        self.resource = resource
        self._failed: set[int] = set()

    def __call__(self, span: dict[str, Any]) -> None:
        trace_id = int(span["trace_id"], 16)
        context = trace_api.SpanContext(
            trace_id, int(span["span_id"], 16), is_remote=False, trace_flags=_SAMPLED
        )
        parent_hex = span["parent_span_id"]
        parent = (
            trace_api.SpanContext(
                trace_id, int(parent_hex, 16), is_remote=False, trace_flags=_SAMPLED
            )
            if parent_hex
            else None
        )
        readable = ReadableSpan(
            name=span["name"],
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=span["attributes"],
            events=[
                SpanEvent(e["name"], attributes=e.get("attributes"), timestamp=e["time_ns"])
                for e in span["events"]
            ],
            kind=trace_api.SpanKind.INTERNAL,
            instrumentation_scope=SCOPE,
            status=trace_api.Status(
                _STATUS[span["status_code"]], span["status_description"] or None
            )
            if span["status_code"] == n.STATUS_ERROR
            else trace_api.Status(_STATUS[span["status_code"]]),
            start_time=span["start_ns"],
            end_time=span["end_ns"],
        )
        for processor in self.processors:
            try:
                processor.on_end(readable)
            except Exception:
                if id(processor) not in self._failed:
                    self._failed.add(id(processor))
                    logger.exception("span processor %r failed", processor)

    def flush(self, timeout_millis: int = 10_000) -> None:
        for processor in self.processors:
            try:
                processor.force_flush(timeout_millis)
            except Exception:
                logger.warning("span processor %r failed to flush", processor, exc_info=True)

    def shutdown(self) -> None:
        for processor in self.processors:
            try:
                processor.shutdown()
            except Exception:
                logger.warning("span processor %r failed to shut down", processor, exc_info=True)


def otlp_exporters(endpoint: str, protocol: str) -> tuple[Any, Any]:
    """An OTLP span exporter and metric exporter for ``endpoint``.

    Args:
        endpoint: ``http://host:4317`` (gRPC) or ``http://host:4318`` (HTTP).
        protocol: ``grpc`` or ``http/protobuf``.
    """
    protocol = _protocol(protocol)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = not endpoint.startswith("https://")
        return (
            OTLPSpanExporter(endpoint=endpoint, insecure=insecure, timeout=5),
            OTLPMetricExporter(endpoint=endpoint, insecure=insecure, timeout=5),
        )
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HTTPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPSpanExporter,
        )

        base = endpoint.rstrip("/")
        return (
            HTTPSpanExporter(endpoint=f"{base}/v1/traces", timeout=5),
            HTTPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=5),
        )
    raise AssertionError(protocol)  # _protocol() let it through


def _protocol(protocol: str | None) -> str:
    """``protocol`` in its plain form; ``ValueError`` for one that is not OTLP's."""
    plain = (protocol or "grpc").strip().lower()
    if plain not in ("grpc", "http/protobuf", "http"):
        raise ValueError(f"unknown OTLP protocol {protocol!r}: use 'grpc' or 'http/protobuf'")
    return plain


@dataclasses.dataclass
class Exporters:
    """The span processors and metric readers a session hands its data to."""

    processors: list[SpanProcessor]
    readers: list[MetricReader]
    prometheus_registry: Any = None  # a CollectorRegistry when /metrics is served
    prometheus_port: int | None = None
    # OTLP span export left to the telemetry process: endpoint and protocol.
    otlp_spans: tuple[str, str] | None = None
    otlp_health: Any = None  # the endpoint's EndpointHealth, shared with the metrics
    otlp_metrics: Any = None  # the OTLP metric exporter (a GuardedMetricExporter)


def assemble_exporters(
    span_processors: Sequence[SpanProcessor] | None,
    metric_readers: Sequence[MetricReader] | None,
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    prometheus_port: int | None,
    spans_in_process: bool = True,
) -> Exporters:
    """The caller's processors and readers, plus OTLP and Prometheus when asked.

    ``otlp_endpoint`` and ``prometheus_port`` fall back to their environment
    variables. An exporter that cannot be built is logged and left out; an
    unknown OTLP protocol raises ``ValueError``. With ``spans_in_process``
    False, OTLP spans are left to the telemetry process: ``otlp_spans`` says
    where to, and so are the metrics: ``otlp_metrics`` forwards them once
    attached to that process (add :func:`otlp_span_processor`, given
    ``otlp_metrics``, if that process cannot run).
    """
    processors = list(span_processors or [])
    readers = list(metric_readers or [])
    otlp_spans: tuple[str, str] | None = None
    health: Any = None
    otlp_metrics: Any = None
    endpoint = otlp_endpoint or os.environ.get(n.ENV_OTLP_ENDPOINT)
    if endpoint:
        protocol = otlp_protocol or os.environ.get(n.ENV_OTLP_PROTOCOL) or "grpc"
        try:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            from ._guard import (
                EndpointHealth,
                ForwardedMetricExporter,
                GuardedMetricExporter,
                GuardedSpanExporter,
            )

            health = EndpointHealth(endpoint)
            if spans_in_process:
                span_exporter, metric_exporter = otlp_exporters(endpoint, protocol)
                processors.append(BatchSpanProcessor(GuardedSpanExporter(span_exporter, health)))
            else:
                # Checked now, as the in-process exporters would be: a bad
                # protocol raises, a bad endpoint says so in the process.
                _protocol(protocol)
                otlp_spans = (endpoint, protocol)
                metric_exporter = ForwardedMetricExporter()
            otlp_metrics = GuardedMetricExporter(metric_exporter, health)
            readers.append(
                PeriodicExportingMetricReader(otlp_metrics, export_interval_millis=5_000)
            )
        except ValueError:
            raise
        except Exception:
            logger.warning("OTLP export to %s is off", endpoint, exc_info=True)
    port = prometheus_port
    env_port = os.environ.get(n.ENV_PROMETHEUS_PORT)
    if port is None and env_port:
        try:
            port = int(env_port)
        except ValueError:
            logger.warning(
                "%s=%r is not a port number: no /metrics", n.ENV_PROMETHEUS_PORT, env_port
            )
    registry = None
    if port is not None:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry
        except ImportError as exc:
            logger.warning("no /metrics endpoint: %s (reinstall asyncflow-otel)", exc)
        else:
            registry = CollectorRegistry(auto_describe=True)
            readers.append(PrometheusMetricReader(registry=registry))
    return Exporters(
        processors,
        readers,
        registry,
        port if registry is not None else None,
        otlp_spans,
        health,
        otlp_metrics,
    )


def otlp_span_processor(
    endpoint: str, protocol: str, health: Any, otlp_metrics: Any = None
) -> SpanProcessor:
    """The in-process OTLP export, for when the telemetry process cannot run:
    a batch processor on the SDK's span exporter, and ``otlp_metrics`` (a
    GuardedMetricExporter, if given) exporting through the SDK's metric
    exporter, both made by one :func:`otlp_exporters` call."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from ._guard import GuardedSpanExporter

    span_exporter, metric_exporter = otlp_exporters(endpoint, protocol)
    if otlp_metrics is not None:
        otlp_metrics.use(metric_exporter)
    return BatchSpanProcessor(GuardedSpanExporter(span_exporter, health))


def serve_prometheus(exporters: Exporters, host: str) -> tuple[Any, int] | None:
    """Serve ``/metrics`` for ``exporters``' Prometheus reader: (server, port), or None."""
    if exporters.prometheus_registry is None or exporters.prometheus_port is None:
        return None
    from prometheus_client import start_http_server

    port = exporters.prometheus_port
    try:
        server, _thread = start_http_server(port, addr=host, registry=exporters.prometheus_registry)
    except OSError as exc:  # port taken, address not available
        logger.warning("no /metrics endpoint on %s:%s: %s", host, port, exc)
        return None
    return server, int(server.server_address[1])


class Instruments:
    """The engine's metric instruments on its own ``MeterProvider``.

    Durations are aggregated by the recorder's own histograms (see
    ``_aggregate``); with an OpenTelemetry reader attached (OTLP, Prometheus,
    the caller's), the values recorded since the last collection are replayed
    into the SDK histograms right before each collection, off the hot path.
    Gauges and up-down counters are observable instruments reading the
    recorder's live counters.
    """

    def __init__(
        self,
        resource: Resource,
        readers: Iterable[MetricReader],
        histograms: Sequence[Histograms],
        active_tasks: Callable[[], dict[tuple[str, str], int]],
        active_workflows: Callable[[], dict[str, int]],
        slots: Callable[[], dict[tuple[str, str, str], int]],
        node: Callable[[], dict[str, Any]],
        counters: Sequence[Counters] = (),
        otlp_metrics: Any = None,
    ) -> None:
        self.readers = list(readers)
        self.histograms = list(histograms)
        self.counters = list(counters)
        self._active_tasks = active_tasks
        self._active_workflows = active_workflows
        self._slots = slots
        self._node = node
        # The run selector's text: "asyncflow 2026-12-06 00:33:47 UTC".
        service = resource.attributes.get(n.SERVICE_NAME, n.DEFAULT_SERVICE_NAME)
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self._session = {n.SESSION_TITLE: f"{service} {started}"}
        self.provider: MeterProvider | None = None
        if not self.readers:
            return  # nobody collects: the recorder's own aggregates are enough
        buckets = ExplicitBucketHistogramAggregation(boundaries=n.DURATION_BUCKETS)
        views = [
            View(instrument_name=name, aggregation=buckets) for name in sorted(n.HISTOGRAM_METRICS)
        ]
        self.provider = MeterProvider(resource=resource, metric_readers=self.readers, views=views)
        meter = self.provider.get_meter("asyncflow", __version__)
        # With the OTLP exporter as the only reader, it is handed the
        # histograms as aggregated here; every other reader collects SDK
        # histograms, into which the values are replayed.
        replayed = self.histograms
        if otlp_metrics is not None and len(self.readers) == 1:
            start_ns = time.time_ns()
            otlp_metrics.extra = lambda: self._histogram_metrics(start_ns)
            replayed = []
        sdk_histograms = {
            hist.name: meter.create_histogram(
                hist.name, unit=n.UNIT_SECONDS, description=_HELP[hist.name]
            )
            for hist in replayed
        }
        for hist in replayed:
            hist.track = True
        lock = threading.Lock()

        def replay(_: CallbackOptions) -> Iterable[Observation]:
            # Runs before the storages are collected: what it records is in
            # this collection, for every reader.
            with lock:
                for hist in replayed:
                    instrument = sdk_histograms[hist.name]
                    for key, values in hist.take_pending():
                        attrs = hist.attributes(key)
                        for value in values:
                            instrument.record(value, attrs)
            return [Observation(v.value, v.attributes) for v in self._task_observations()]

        meter.create_observable_up_down_counter(
            n.METRIC_TASKS_ACTIVE,
            [replay],
            unit=n.UNIT_TASKS,
            description=_HELP[n.METRIC_TASKS_ACTIVE],
        )
        meter.create_observable_up_down_counter(
            n.METRIC_WORKFLOWS_ACTIVE,
            [lambda _: [Observation(v["value"], v["attributes"]) for v in self._workflows()]],
            unit=n.UNIT_WORKFLOWS,
            description=_HELP[n.METRIC_WORKFLOWS_ACTIVE],
        )
        meter.create_observable_up_down_counter(
            n.METRIC_RESOURCE_SLOTS,
            [lambda _: [Observation(v["value"], v["attributes"]) for v in self._slot_points()]],
            unit=n.UNIT_SLOTS,
            description=_HELP[n.METRIC_RESOURCE_SLOTS],
        )
        for metric in (n.METRIC_NODE_CPU, n.METRIC_NODE_MEMORY, n.METRIC_NODE_GPU):
            meter.create_observable_gauge(
                metric,
                [self._gauge_callback(metric)],
                unit=n.UNIT_PERCENT,
                description=_HELP[metric],
            )
        for counter in self.counters:
            meter.create_observable_counter(
                counter.name,
                [_counter_callback(counter)],
                unit=counter.unit,
                description=_HELP[counter.name],
            )
        meter.create_observable_gauge(
            n.METRIC_SESSION_INFO,
            [lambda _: [Observation(1, self._session)]],
            unit=n.UNIT_SESSIONS,
            description=_HELP[n.METRIC_SESSION_INFO],
        )

    def _histogram_metrics(self, start_ns: int) -> list[Any]:
        """The duration histograms as SDK metric data, cumulative since ``start_ns``.

        What the OTLP exporter sends when nothing else reads the SDK: the
        recorder's own buckets, without replaying every value (min and max
        are not kept, so they are left out).
        """
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            HistogramDataPoint,
            Metric,
        )
        from opentelemetry.sdk.metrics.export import Histogram as HistogramData

        now = time.time_ns()
        out = []
        for hist in self.histograms:
            points = [
                HistogramDataPoint(
                    attributes=p["attributes"],
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now,
                    count=p["count"],
                    sum=p["sum"],
                    bucket_counts=p["bucket_counts"],
                    explicit_bounds=p["explicit_bounds"],
                    min=None,  # type: ignore[arg-type]
                    max=None,  # type: ignore[arg-type]
                )
                for p in hist.points()
            ]
            if points:
                out.append(
                    Metric(
                        name=hist.name,
                        description=_HELP[hist.name],
                        unit=n.UNIT_SECONDS,
                        data=HistogramData(
                            data_points=points,
                            aggregation_temporality=AggregationTemporality.CUMULATIVE,
                        ),
                    )
                )
        return out

    def _gauge_callback(self, metric: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(p["value"], p["attributes"]) for p in self._node_points(metric)]

        return observe

    # ------------------------------------------------------------------ plain points
    def _task_observations(self) -> list[Any]:
        return [
            _Point(v, {n.TASK_STATE: state, n.BACKEND: backend})
            for (state, backend), v in list(self._active_tasks().items())
        ]

    def _workflows(self) -> list[dict[str, Any]]:
        return [
            {"value": v, "attributes": {n.WORKFLOW_NAME: name}}
            for name, v in list(self._active_workflows().items())
        ]

    def _slot_points(self) -> list[dict[str, Any]]:
        return [
            {"value": v, "attributes": {n.BACKEND: be, n.RESOURCE_KIND: kind, n.SLOT_STATE: state}}
            for (be, kind, state), v in list(self._slots().items())
        ]

    def _node_points(self, metric: str) -> list[dict[str, Any]]:
        sample = self._node()
        host = sample.get("node", "")
        if metric == n.METRIC_NODE_GPU:
            return [
                {"value": v, "attributes": {n.NODE: host, n.GPU: str(i)}}
                for i, v in enumerate(sample.get("gpu") or ())
            ]
        value = sample.get("cpu" if metric == n.METRIC_NODE_CPU else "memory")
        return [] if value is None else [{"value": value, "attributes": {n.NODE: host}}]

    def read(self) -> list[dict[str, Any]]:
        """Every current data point as plain dicts (name, unit, attributes, value/histogram)."""
        out: list[dict[str, Any]] = []
        for hist in self.histograms:
            for point in hist.points():
                point["unit"] = n.UNIT_SECONDS
                out.append(point)
        units = {
            n.METRIC_TASKS_ACTIVE: n.UNIT_TASKS,
            n.METRIC_WORKFLOWS_ACTIVE: n.UNIT_WORKFLOWS,
            n.METRIC_RESOURCE_SLOTS: n.UNIT_SLOTS,
        }
        simple = {
            n.METRIC_TASKS_ACTIVE: [
                {"value": p.value, "attributes": p.attributes} for p in self._task_observations()
            ],
            n.METRIC_WORKFLOWS_ACTIVE: self._workflows(),
            n.METRIC_RESOURCE_SLOTS: self._slot_points(),
        }
        for metric in (n.METRIC_NODE_CPU, n.METRIC_NODE_MEMORY, n.METRIC_NODE_GPU):
            simple[metric] = self._node_points(metric)
        simple[n.METRIC_SESSION_INFO] = [{"value": 1, "attributes": dict(self._session)}]
        units[n.METRIC_SESSION_INFO] = n.UNIT_SESSIONS
        out.extend(
            {"name": metric, "unit": units.get(metric, n.UNIT_PERCENT), **point}
            for metric, points in simple.items()
            for point in points
        )
        for counter in self.counters:
            out.extend(counter.points())
        return out

    def shutdown(self) -> None:
        if self.provider is None:
            return
        try:
            self.provider.shutdown(timeout_millis=10_000)
        except Exception:
            logger.warning("metric provider failed to shut down", exc_info=True)


def _counter_callback(counter: Counters) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(p["value"], p["attributes"]) for p in counter.points()]

    return observe


class _Point:
    __slots__ = ("attributes", "value")

    def __init__(self, value: float, attributes: dict[str, str]) -> None:
        self.value = value
        self.attributes = attributes


_HELP = {
    n.METRIC_TASK_DURATION: "Total time of a task: created to ended",
    n.METRIC_TASK_QUEUE_DURATION: "Queue wait of a task: resolved to started",
    n.METRIC_TASK_RUN_DURATION: "Run time of a task: started to ended",
    n.METRIC_SESSION_INFO: "The engine session: 1, labelled with its service name and start",
    n.METRIC_WORKFLOW_DURATION: "Workflow duration, scope entry to its last task's end",
    n.METRIC_TASKS_ACTIVE: "Tasks not yet finished, by state",
    n.METRIC_WORKFLOWS_ACTIVE: "Workflows not yet finished",
    n.METRIC_RESOURCE_SLOTS: "Resource slots by kind and state",
    n.METRIC_NODE_CPU: "Node CPU utilisation",
    n.METRIC_NODE_MEMORY: "Node memory utilisation",
    n.METRIC_NODE_GPU: "GPU utilisation",
    n.METRIC_TASK_RETRIES: "Failed task attempts that were tried again",
    n.METRIC_CACHE_LOOKUPS: "Result cache lookups of cached tasks, hits and misses",
}
