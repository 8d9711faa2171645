"""OpenTelemetry SDK glue: resource, span processors, meter provider, exporters.

The engine never installs global providers: each engine owns its processors
and its ``MeterProvider``, so two engines in one process keep separate
telemetry. Spans are built as SDK ``ReadableSpan`` objects from the
recorder's finished-span dicts and handed to the processors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .._version import __version__
from . import names as n

__all__ = ["Instruments", "SpanBridge", "make_resource", "otlp_exporters"]

logger = logging.getLogger("asyncflow.telemetry")

SCOPE = InstrumentationScope("asyncflow", __version__)

_STATUS = {
    "OK": trace_api.StatusCode.OK,
    "ERROR": trace_api.StatusCode.ERROR,
    "UNSET": trace_api.StatusCode.UNSET,
}
_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)


def make_resource(resource: Resource | None, session_id: str) -> Resource:
    """The engine's resource: the caller's, or one from the environment.

    ``service.name`` comes from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``
    when set, else ``"asyncflow"``; ``service.instance.id`` is the session id.
    """
    if resource is not None:
        return resource
    attributes: dict[str, Any] = {n.SERVICE_INSTANCE_ID: session_id}
    env_attrs = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not os.environ.get(n.ENV_SERVICE_NAME) and "service.name=" not in env_attrs:
        attributes[n.SERVICE_NAME] = n.DEFAULT_SERVICE_NAME
    return Resource.create(attributes)


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
            events=[SpanEvent(e["name"], timestamp=e["time_ns"]) for e in span["events"]],
            kind=trace_api.SpanKind.INTERNAL,
            instrumentation_scope=SCOPE,
            status=trace_api.Status(
                _STATUS[span["status_code"]], span["status_description"] or None
            )
            if span["status_code"] == "ERROR"
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
    protocol = (protocol or "grpc").strip().lower()
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
    raise ValueError(f"unknown OTLP protocol {protocol!r}: use 'grpc' or 'http/protobuf'")


class Instruments:
    """The engine's metric instruments on its own ``MeterProvider``."""

    def __init__(
        self,
        resource: Resource,
        readers: Iterable[MetricReader],
        active_tasks: Callable[[], dict[tuple[str, str], int]],
        active_workflows: Callable[[], dict[str, int]],
        slots: Callable[[], dict[tuple[str, str, str], int]],
        node: Callable[[], dict[str, Any]],
    ) -> None:
        self.memory_reader = InMemoryMetricReader()
        buckets = ExplicitBucketHistogramAggregation(boundaries=n.DURATION_BUCKETS)
        views = [
            View(instrument_name=name, aggregation=buckets) for name in sorted(n.HISTOGRAM_METRICS)
        ]
        self.provider = MeterProvider(
            resource=resource, metric_readers=[self.memory_reader, *readers], views=views
        )
        meter = self.provider.get_meter("asyncflow", __version__)
        self._task_duration = meter.create_histogram(
            n.METRIC_TASK_DURATION,
            unit=n.UNIT_SECONDS,
            description="Task duration, registration to end",
        )
        self._queue_duration = meter.create_histogram(
            n.METRIC_TASK_QUEUE_DURATION,
            unit=n.UNIT_SECONDS,
            description="Time a task waited on its backend, submitted to started",
        )
        self._workflow_duration = meter.create_histogram(
            n.METRIC_WORKFLOW_DURATION, unit=n.UNIT_SECONDS, description="Workflow scope duration"
        )
        self._attrs: dict[tuple[str, ...], dict[str, str]] = {}

        def observe_tasks(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(v, {n.TASK_STATE: state, n.BACKEND: backend})
                for (state, backend), v in list(active_tasks().items())
            ]

        def observe_workflows(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(v, {n.WORKFLOW_NAME: name})
                for name, v in list(active_workflows().items())
            ]

        def observe_slots(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(v, {n.BACKEND: be, n.RESOURCE_KIND: kind, n.SLOT_STATE: state})
                for (be, kind, state), v in list(slots().items())
            ]

        def gauge(key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def observe(_: CallbackOptions) -> Iterable[Observation]:
                sample = node()
                host = sample.get("node", "")
                value = sample.get(key)
                if key == "gpu":
                    return [
                        Observation(v, {n.NODE: host, n.GPU: str(i)})
                        for i, v in enumerate(value or ())
                    ]
                return [] if value is None else [Observation(value, {n.NODE: host})]

            return observe

        meter.create_observable_up_down_counter(
            n.METRIC_TASKS_ACTIVE,
            [observe_tasks],
            unit=n.UNIT_TASKS,
            description="Tasks not yet finished",
        )
        meter.create_observable_up_down_counter(
            n.METRIC_WORKFLOWS_ACTIVE,
            [observe_workflows],
            unit=n.UNIT_WORKFLOWS,
            description="Workflow scopes open",
        )
        meter.create_observable_up_down_counter(
            n.METRIC_RESOURCE_SLOTS,
            [observe_slots],
            unit=n.UNIT_SLOTS,
            description="Resource slots",
        )
        meter.create_observable_gauge(
            n.METRIC_NODE_CPU,
            [gauge("cpu")],
            unit=n.UNIT_PERCENT,
            description="Node CPU utilisation",
        )
        meter.create_observable_gauge(
            n.METRIC_NODE_MEMORY,
            [gauge("memory")],
            unit=n.UNIT_PERCENT,
            description="Node memory utilisation",
        )
        meter.create_observable_gauge(
            n.METRIC_NODE_GPU, [gauge("gpu")], unit=n.UNIT_PERCENT, description="GPU utilisation"
        )

    def task_done(
        self,
        seconds: float,
        name: str,
        kind: str,
        result: str,
        backend: str,
        workflow: str,
        error_type: str,
    ) -> None:
        key = (name, kind, result, backend, workflow, error_type)
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = self._attrs[key] = {
                n.TASK_NAME: name,
                n.TASK_TYPE: kind,
                n.TASK_RESULT: result,
                n.BACKEND: backend,
                n.WORKFLOW_NAME: workflow,
            }
            if error_type:
                attrs[n.ERROR_TYPE] = error_type
        self._task_duration.record(seconds, attrs)

    def queued(self, seconds: float, backend: str, workflow: str) -> None:
        key = ("\0queue", backend, workflow)
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = self._attrs[key] = {n.BACKEND: backend, n.WORKFLOW_NAME: workflow}
        self._queue_duration.record(seconds, attrs)

    def workflow_done(self, seconds: float, name: str, result: str) -> None:
        self._workflow_duration.record(seconds, {n.WORKFLOW_NAME: name, n.WORKFLOW_RESULT: result})

    def read(self) -> list[dict[str, Any]]:
        """Every current data point as plain dicts."""
        data = self.memory_reader.get_metrics_data()
        out: list[dict[str, Any]] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        entry: dict[str, Any] = {
                            "name": metric.name,
                            "unit": metric.unit,
                            "attributes": dict(point.attributes or {}),
                        }
                        if isinstance(point, HistogramDataPoint):
                            entry.update(
                                count=point.count,
                                sum=point.sum,
                                bucket_counts=list(point.bucket_counts),
                                explicit_bounds=list(point.explicit_bounds),
                            )
                        elif isinstance(point, NumberDataPoint):
                            entry["value"] = point.value
                        out.append(entry)
        return out

    def shutdown(self) -> None:
        try:
            self.provider.shutdown(timeout_millis=10_000)
        except Exception:
            logger.warning("metric provider failed to shut down", exc_info=True)
