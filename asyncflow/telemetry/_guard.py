"""Exporter wrappers: a collector that is down costs one warning, not a flood.

The wrapped OTLP exporters time out and drop what they cannot send; these
wrappers log the first failure of an endpoint as one warning (for spans and
metrics together), drop data at once while it stays down (a probe every 30
s), so a dead collector costs neither time nor memory, and keep the SDK's
own per-batch retry messages out of the user's log (demoted to DEBUG).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "EndpointHealth",
    "ForwardedMetricExporter",
    "GuardedMetricExporter",
    "GuardedSpanExporter",
    "quiet_sdk_exporter_logs",
]

logger = logging.getLogger("asyncflow.telemetry")

_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk.trace.export",
)


class _Demote(logging.Filter):
    """Rewrites the SDK exporters' warnings and errors as DEBUG records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            record.levelno = logging.DEBUG
            record.levelname = "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_demote = _Demote()


def quiet_sdk_exporter_logs() -> None:
    """Demote the OTel exporters' own retry warnings (idempotent)."""
    for name in _SDK_LOGGERS:
        log = logging.getLogger(name)
        if _demote not in log.filters:
            log.addFilter(_demote)


class EndpointHealth:
    """Whether an OTLP endpoint answers, shared by its span and metric exporters.

    The first failure logs one warning for the endpoint. While it is down,
    exports are dropped at once (no connection attempt, no timeout to wait
    out), except one probe every ``probe_interval`` seconds; the first
    success logs that it works again.
    """

    def __init__(self, endpoint: str, probe_interval: float = 30.0) -> None:
        self.endpoint = endpoint
        self.probe_interval = probe_interval
        self.down = False
        self._last_try = 0.0
        self._lock = threading.Lock()

    def should_try(self) -> bool:
        with self._lock:
            if not self.down:
                return True
            now = time.monotonic()
            if now - self._last_try >= self.probe_interval:
                self._last_try = now
                return True
            return False

    def outcome(self, ok: bool, detail: str = "") -> None:
        with self._lock:
            if not ok and not self.down:
                self.down = True
                self._last_try = time.monotonic()
                logger.warning(
                    "OTLP export to %s failed%s; dropping telemetry until it answers",
                    self.endpoint,
                    f": {detail}" if detail else "",
                )
            elif ok and self.down:
                self.down = False
                logger.info("OTLP export to %s works again", self.endpoint)


class GuardedSpanExporter(SpanExporter):
    """A span exporter that never raises and warns once while its endpoint is down."""

    def __init__(self, inner: SpanExporter, health: EndpointHealth) -> None:
        self._inner = inner
        self._health = health
        quiet_sdk_exporter_logs()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self._health.should_try():
            return SpanExportResult.FAILURE
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - reported once per endpoint
            self._health.outcome(False, str(exc))
            return SpanExportResult.FAILURE
        self._health.outcome(result == SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        try:
            self._inner.shutdown()
        except Exception:
            logger.debug("span exporter shutdown failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            return bool(self._inner.force_flush(timeout_millis))
        except Exception:  # noqa: BLE001
            return False


class ForwardedMetricExporter(MetricExporter):
    """Encodes each export as an OTLP ``ExportMetricsServiceRequest`` and
    hands the bytes to the telemetry process, which sends them with the
    spans: this process needs no OTLP client (gRPC alone is about 10 MB).

    Temporality and histogram aggregation follow the same variables as the
    SDK's OTLP exporters. Until :meth:`attach` an export fails quietly. The
    endpoint's health is the telemetry process's to report.
    """

    forwards = True

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import (
            OTLPMetricExporterMixin,
        )

        mixin = OTLPMetricExporterMixin()
        super().__init__(
            preferred_temporality=mixin._get_temporality({}),
            preferred_aggregation=mixin._get_aggregation({}),
        )
        self._put: Callable[[tuple[Any, ...]], None] | None = None

    def attach(self, put: Callable[[tuple[Any, ...]], None]) -> None:
        """Send through ``put``: the telemetry process's record queue."""
        self._put = put

    def export(
        self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        from ._records import METRICS_REQUEST

        put = self._put
        if put is None:
            return MetricExportResult.FAILURE
        put((METRICS_REQUEST, encode_metrics(metrics_data).SerializeToString()))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._put = None


class GuardedMetricExporter(MetricExporter):
    """A metric exporter that never raises and warns once while its endpoint is down.

    Around a :class:`ForwardedMetricExporter` it only adds the extra
    metrics and skips exports while the endpoint is known to be down: the
    telemetry process reports the endpoint's health.
    """

    def __init__(self, inner: MetricExporter, health: EndpointHealth) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._health = health
        self._forward_failed = False
        # Metrics made outside the SDK, added to every export (see Instruments).
        self.extra: Callable[[], list[Any]] | None = None
        quiet_sdk_exporter_logs()

    def export(
        self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if not self._health.should_try():
            return MetricExportResult.FAILURE
        if self.extra is not None:
            metrics_data = _with_metrics(metrics_data, self.extra())
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # reported once per endpoint, or once when forwarded
            if self.forwarded:
                if not self._forward_failed:
                    self._forward_failed = True
                    logger.warning(
                        "OTLP metrics not handed to the telemetry process: %s: %s (said once)",
                        type(exc).__name__,
                        exc,
                        exc_info=True,
                    )
            else:
                self._health.outcome(False, str(exc))
            return MetricExportResult.FAILURE
        if not self.forwarded:
            self._health.outcome(result == MetricExportResult.SUCCESS)
        return result

    @property
    def forwarded(self) -> bool:
        """Whether the telemetry process sends these metrics (see ForwardedMetricExporter)."""
        return getattr(self._inner, "forwards", False) is True

    def attach(self, put: Callable[[tuple[Any, ...]], None]) -> None:
        """Forward through ``put`` (a ForwardedMetricExporter inside)."""
        attach = getattr(self._inner, "attach", None)
        if attach is not None:
            attach(put)

    def use(self, inner: MetricExporter) -> None:
        """Export through ``inner`` from now on (the same preferences)."""
        self._inner = inner

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        try:
            return bool(self._inner.force_flush(timeout_millis))
        except Exception:  # noqa: BLE001
            return False

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        try:
            self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
        except Exception:
            logger.debug("metric exporter shutdown failed", exc_info=True)


def _with_metrics(metrics_data: Any, extra: list[Any]) -> Any:
    """``metrics_data`` with ``extra`` metrics in its first scope."""
    if not extra or not metrics_data.resource_metrics:
        return metrics_data
    first = metrics_data.resource_metrics[0]
    if not first.scope_metrics:
        return metrics_data
    scope = first.scope_metrics[0]
    scope = dataclasses.replace(scope, metrics=[*scope.metrics, *extra])
    first = dataclasses.replace(first, scope_metrics=[scope, *first.scope_metrics[1:]])
    return dataclasses.replace(
        metrics_data, resource_metrics=[first, *metrics_data.resource_metrics[1:]]
    )
