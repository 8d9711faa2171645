"""OTLP span export from the telemetry process: batches, transports, a dead endpoint.

Runs in the checkpoint writer process (``_writer_main``), never in the
engine's: encoded spans (``_span_assembly``) queue up and a thread of their
own sends them in batches over OTLP/gRPC or OTLP/HTTP. The queue is bounded:
while the endpoint takes batches, a full queue waits for room (a collector
slower than the run slows the run, as a slow disk does, and loses nothing);
an endpoint that is down, or took nothing for ``STALL_SECONDS``, gets its
spans dropped and counted instead. A failed send is tried once more,
and an endpoint that stays down is reported once (``say("otlp down ...")``,
which the engine logs as its one warning for that endpoint) and then costs
nothing: batches are dropped at once, with a probe every few seconds.

The engine's metrics come here too, as whole encoded
``ExportMetricsServiceRequest`` bodies (``put_metrics``): the same thread
sends them, on the same connection, so the engine's process needs no OTLP
client of its own.

The standard variables ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]HEADERS`` and
``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]COMPRESSION`` (``gzip``) are honoured.
"""

from __future__ import annotations

import gzip
import http.client
import os
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["EXPORT_TIMEOUT", "SpanSender", "Transport", "make_transport"]

# Seconds one export may take (the SDK exporters' default here too).
EXPORT_TIMEOUT = 5.0

# Spans per request, and the longest a finished span waits to be sent.
BATCH_SPANS = 512
BATCH_DELAY = 0.5

# Encoded bytes waiting to be sent; beyond, a span waits for room.
QUEUE_BYTES = 16 << 20

# Seconds a full queue waits for an endpoint that sends nothing before its
# spans are dropped (less than the engine's own stall limit for this
# process, so the checkpoint file never waits on a stalled collector).
STALL_SECONDS = 1.0

# Seconds between probes of an endpoint that is down.
PROBE_EVERY = 5.0

# The two signals sent, and what each is sent to.
TRACES = "traces"
METRICS = "metrics"
_GRPC_METHODS = {
    TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
_HTTP_PATHS = {TRACES: "/v1/traces", METRICS: "/v1/metrics"}

# Encoded metrics requests waiting to be sent; beyond, the oldest is dropped
# (each holds every metric's current value, so the newest says the most).
QUEUE_METRICS = 4


class Transport(Protocol):
    """Sends one encoded export request of a signal; raises on failure."""

    def send(self, body: bytes, signal: str = TRACES) -> None: ...

    def close(self) -> None: ...


def _env(name: str, signal: str = TRACES) -> str:
    """An exporter setting: the signal's own variable (``_TRACES_``,
    ``_METRICS_``), else the general one."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}") or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{name}", ""
    )


def _gzip(signal: str) -> bool:
    return _env("COMPRESSION", signal).strip().lower() == "gzip"


def _headers(signal: str = TRACES) -> list[tuple[str, str]]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``key=value`` pairs, comma separated, URL-encoded."""
    out = []
    for item in _env("HEADERS", signal).split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out.append(
                (urllib.parse.unquote(key.strip()).lower(), urllib.parse.unquote(value.strip()))
            )
    return out


class _HttpTransport:
    """OTLP/HTTP with protobuf bodies, on one kept-alive connection."""

    def __init__(self, endpoint: str) -> None:
        url = urllib.parse.urlsplit(endpoint.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTLP/HTTP endpoint {endpoint!r} is not an http(s) URL")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        # Per signal: (path, whether gzip, headers).
        self._signals: dict[str, tuple[str, bool, dict[str, str]]] = {}
        for signal, path in _HTTP_PATHS.items():
            compress = _gzip(signal)
            headers = {"Content-Type": "application/x-protobuf", **dict(_headers(signal))}
            if compress:
                headers["Content-Encoding"] = "gzip"
            self._signals[signal] = (url.path + path, compress, headers)
        self._conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes, signal: str = TRACES) -> None:
        path, compress, headers = self._signals[signal]
        if compress:
            body = gzip.compress(body, compresslevel=5)
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            conn = self._conn
            if conn is None:
                cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                conn = self._conn = cls(self._host, self._port, timeout=EXPORT_TIMEOUT)
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
                continue
            except Exception:
                self.close()
                raise
            if response.status >= 300:
                raise OSError(f"HTTP {response.status} {response.reason}")
            return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _GrpcTransport:
    """OTLP/gRPC: the ``TraceService/Export`` call with the encoded request as is."""

    def __init__(self, endpoint: str) -> None:
        import grpc  # type: ignore[import-untyped]

        url = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if not url.hostname:
            raise ValueError(f"OTLP/gRPC endpoint {endpoint!r} has no host")
        target = f"{url.hostname}:{url.port or 4317}"
        if url.scheme == "https":
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        else:
            self._channel = grpc.insecure_channel(target)
        # Per signal: (the call, its compression, its metadata). No
        # serializers: the request is already bytes, the reply is not read.
        self._signals: dict[str, tuple[Callable[..., Any], Any, Any]] = {
            signal: (
                self._channel.unary_unary(method),
                grpc.Compression.Gzip if _gzip(signal) else None,
                _headers(signal) or None,
            )
            for signal, method in _GRPC_METHODS.items()
        }

    def send(self, body: bytes, signal: str = TRACES) -> None:
        call, compression, metadata = self._signals[signal]
        call(body, timeout=EXPORT_TIMEOUT, metadata=metadata, compression=compression)

    def close(self) -> None:
        self._channel.close()


def make_transport(endpoint: str, protocol: str) -> Transport:
    """The transport for ``protocol`` (``grpc`` or ``http/protobuf``)."""
    protocol = (protocol or "grpc").strip().lower()
    if protocol == "grpc":
        return _GrpcTransport(endpoint)
    if protocol in ("http/protobuf", "http"):
        return _HttpTransport(endpoint)
    raise ValueError(f"unknown OTLP protocol {protocol!r}: use 'grpc' or 'http/protobuf'")


class SpanSender:
    """Queues encoded spans and sends them in batches from a thread.

    Args:
        request: wraps a list of encoded spans into one request body.
        transport: sends a request body.
        say: reports to the engine: ``otlp down <why>``, ``otlp up``,
            ``otlp sent <n>`` (progress, for close deadlines) and
            ``otlp dropped <n>``.
    """

    def __init__(
        self,
        request: Callable[[list[bytes]], bytes],
        transport: Transport,
        say: Callable[[str], None],
    ) -> None:
        self._request = request
        self._transport = transport
        self._say = say
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._metrics: deque[bytes] = deque(maxlen=QUEUE_METRICS)
        self._cond = threading.Condition()
        self._closing = False
        self.sent = 0
        self.dropped = 0
        self.down = False
        self._stalled = False  # a full queue waited in vain: drop until it sends
        self._last_try = 0.0
        self._thread = threading.Thread(target=self._run, name="asyncflow-otlp", daemon=True)
        self._thread.start()

    def put(self, span: bytes) -> None:
        """Queue one encoded span.

        With the queue full, it waits while the endpoint takes batches; it
        drops and counts the span when the endpoint is down or sent nothing
        for ``STALL_SECONDS`` (then every span, until it sends again).
        """
        with self._cond:
            if self._queued_bytes + len(span) > QUEUE_BYTES and not self._room(len(span)):
                self.dropped += 1
                return
            self._queue.append(span)
            self._queued_bytes += len(span)
            if len(self._queue) >= BATCH_SPANS:
                self._cond.notify()

    def put_metrics(self, request: bytes) -> None:
        """Queue one encoded ``ExportMetricsServiceRequest`` (sent before the
        next batch of spans). Never waits: past ``QUEUE_METRICS`` the oldest
        goes."""
        with self._cond:
            self._metrics.append(request)
            self._cond.notify()

    def _room(self, size: int) -> bool:
        """Wait (the lock held) until ``size`` bytes fit; False: drop instead."""
        sent, since = self.sent, time.monotonic()
        while self._queue and self._queued_bytes + size > QUEUE_BYTES:
            if self.down or self._closing or self._stalled:
                return False
            if self.sent != sent:
                sent, since = self.sent, time.monotonic()
            elif time.monotonic() - since > STALL_SECONDS:
                self._stalled = True
                return False
            self._cond.notify()  # a full batch is there: the sender may be waiting
            self._cond.wait(0.05)
        return True

    def _take(self) -> list[bytes] | None:
        """The next batch, waiting up to ``BATCH_DELAY`` for a full one; None: done."""
        with self._cond:
            if len(self._queue) < BATCH_SPANS and not self._closing and not self._metrics:
                self._cond.wait(BATCH_DELAY)
            if not self._queue:
                return None if self._closing else []
            count = min(BATCH_SPANS, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._queued_bytes -= sum(map(len, batch))
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            while self._metrics:
                with self._cond:
                    request = self._metrics.popleft() if self._metrics else None
                if request is not None:
                    self._export_metrics(request)
            if batch is None:
                return
            if batch:
                self._export(batch)

    def _export_metrics(self, request: bytes) -> None:
        if self.down and time.monotonic() - self._last_try < PROBE_EVERY:
            return  # a dead endpoint costs nothing; the next request says it all again
        self._last_try = time.monotonic()
        error = self._send(request, METRICS)
        if error is None:
            if self.down:
                self.down = False
                self._say("otlp up")
        elif not self.down:
            self.down = True
            self._say(f"otlp down {_describe(error)}")

    def _send(self, body: bytes, signal: str) -> Exception | None:
        """Send one request, once more after a failure that is not a time-out."""
        error: Exception | None = None
        for attempt in (1, 2):
            try:
                self._transport.send(body, signal)
            except Exception as exc:  # noqa: BLE001 - any failure: reported once
                error = exc
                if self.down or self._closing or _is_timeout(exc):
                    break  # a probe, the end, or a black hole: not once more
                if attempt == 1:
                    time.sleep(0.5)
                continue
            return None
        return error

    def _export(self, batch: list[bytes]) -> None:
        now = time.monotonic()
        if self.down and now - self._last_try < PROBE_EVERY:
            self.dropped += len(batch)  # a dead endpoint costs nothing
            return
        self._last_try = now
        body = self._request(batch)
        error = self._send(body, TRACES)
        if error is None:
            with self._cond:
                self.sent += len(batch)
                self._stalled = False
                self._cond.notify_all()  # room for a put that waits
            if self.down:
                self.down = False
                self._say("otlp up")
            self._say(f"otlp sent {self.sent}")
            return
        self.dropped += len(batch)
        if not self.down:
            self.down = True
            self._say(f"otlp down {_describe(error)}")

    def close(self, deadline: float) -> None:
        """Send what is queued (not to an endpoint that is down), within
        ``deadline`` seconds of no progress; then report what was dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        last, since = -1, time.monotonic()
        while self._thread.is_alive():
            self._thread.join(0.1)
            if self.sent != last:
                last, since = self.sent, time.monotonic()
            elif time.monotonic() - since > deadline:
                break
        with self._cond:
            self.dropped += len(self._queue)
            self._queue.clear()
        if not self._thread.is_alive():
            self._transport.close()
        if self.dropped:
            self._say(f"otlp dropped {self.dropped}")


def _is_timeout(exc: Exception) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    code = getattr(exc, "code", None)
    try:
        return bool(code is not None and callable(code) and code().name == "DEADLINE_EXCEEDED")
    except Exception:  # noqa: BLE001 - not a gRPC error after all
        return False


def _describe(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    if callable(details):
        try:
            return f"{exc.code().name}: {details()}"  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            pass
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")
