"""Exporter wrappers: a collector that is down costs one warning, not a flood.

The wrapped OTLP exporters already time out and drop what they cannot send;
these wrappers log the first failure of each exporter as one warning, and
the next success at INFO, and keep the SDK's own per-batch retry messages out
of the user's log (they are demoted to DEBUG).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["GuardedMetricExporter", "GuardedSpanExporter", "quiet_sdk_exporter_logs"]

logger = logging.getLogger("asyncflow.telemetry")

_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http",
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


class _Once:
    def __init__(self, kind: str, endpoint: str) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.down = False

    def outcome(self, ok: bool, detail: str = "") -> None:
        if not ok and not self.down:
            self.down = True
            logger.warning(
                "OTLP %s export to %s failed%s; dropping data until it answers",
                self.kind,
                self.endpoint,
                f": {detail}" if detail else "",
            )
        elif ok and self.down:
            self.down = False
            logger.info("OTLP %s export to %s works again", self.kind, self.endpoint)


class GuardedSpanExporter(SpanExporter):
    """A span exporter that never raises and warns once while its endpoint is down."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self._inner = inner
        self._once = _Once("span", endpoint)
        quiet_sdk_exporter_logs()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # noqa: BLE001
            self._once.outcome(False, str(exc))
            return SpanExportResult.FAILURE
        self._once.outcome(result == SpanExportResult.SUCCESS)
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


class GuardedMetricExporter(MetricExporter):
    """A metric exporter that never raises and warns once while its endpoint is down."""

    def __init__(self, inner: MetricExporter, endpoint: str) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._once = _Once("metric", endpoint)
        quiet_sdk_exporter_logs()

    def export(
        self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._once.outcome(False, str(exc))
            return MetricExportResult.FAILURE
        self._once.outcome(result == MetricExportResult.SUCCESS)
        return result

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
