"""The Jaeger and Tempo adapters: HTTP GETs (standard library), parsing in ``_otlp``.

Live Jaeger and Tempo servers are exercised only by the stack smoke script;
the tests feed these adapters response bodies in the APIs' documented
formats from a local HTTP server.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from asyncflow.telemetry import names as n

from . import _otlp
from ._base import FetchedSource, SourceError
from .model import Run

__all__ = ["JaegerSource", "TempoSource", "get_json"]

SEARCH_LIMIT = 20  # traces a search returns; the newest is shown


def get_json(url: str, params: dict[str, str], what: str, timeout: float) -> Any:
    """GET ``url`` with ``params`` and decode the JSON answer.

    Raises:
        SourceError: unreachable, an error status, or not JSON; the message
            names ``what`` (``"Jaeger"``) and the server.
    """
    full = f"{url}?{urllib.parse.urlencode(params)}" if params else url
    server = url.split("/api/", 1)[0]
    request = urllib.request.Request(full, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = _otlp.api_error(json.loads(exc.read() or b"null"))
        except (ValueError, OSError):
            detail = ""
        raise SourceError(
            f"{what} at {server} answered {exc.code} {exc.reason}"
            + (f": {detail}." if detail else ".")
        ) from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise SourceError(
            f"Cannot reach {what} at {server}: {reason}. Is it running, and is the URL right?"
        ) from None
    except TimeoutError:
        raise SourceError(f"{what} at {server} did not answer within {timeout:g} s.") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"Cannot reach {what} at {server}: {exc}.") from None
    try:
        return json.loads(body)
    except ValueError:
        raise SourceError(f"{what} at {server} answered with something that is not JSON.") from None


def _spans_of(answer: Any, what: str) -> list[dict[str, Any]]:
    try:
        return _otlp.spans_from_document(answer)
    except ValueError as exc:
        raise SourceError(f"{what} answered with something that is not a trace: {exc}.") from None


def _key(spans: list[dict[str, Any]], *extra: Any) -> tuple[Any, ...]:
    return (*extra, len(spans), max((s["end_ns"] for s in spans), default=0))


class _Remote(FetchedSource):
    what = ""
    refresh_seconds = 10.0

    def __init__(
        self,
        url: str,
        service: str = n.DEFAULT_SERVICE_NAME,
        trace_id: str | None = None,
        lookback_hours: float = 24.0,
        timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.service = service
        self.trace_id = trace_id
        self.lookback_hours = lookback_hours
        self.timeout = timeout
        self.label = f"{self.what} {self.url} (service {service})"

    def _none_found(self) -> SourceError:
        return SourceError(
            f"{self.what} at {self.url} has no traces of service {self.service!r} in the last "
            f"{self.lookback_hours:g} hours (the engine's service.name comes from "
            f"{n.ENV_SERVICE_NAME}, default {n.DEFAULT_SERVICE_NAME!r})."
        )


class JaegerSource(_Remote):
    """Jaeger v2's HTTP query API (``/api/v3``): the newest trace of a service, or one by id.

    Args:
        url: the query service, e.g. ``http://localhost:16686``.
        service: the ``service.name`` the engine reports.
        trace_id: show this trace instead of the newest one.
        lookback_hours: how far back the search for the newest trace goes.
        timeout: seconds per request.
    """

    what = "Jaeger"

    def poll(self) -> Run:
        """Fetch the trace again."""
        if self.trace_id:
            url = f"{self.url}/api/v3/traces/{self.trace_id}"
            spans = _spans_of(get_json(url, {}, self.what, self.timeout), self.what)
            return self._run(spans, _key(spans))
        now = dt.datetime.now(dt.timezone.utc)
        low = (now - dt.timedelta(hours=self.lookback_hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        high = (now + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        depth = str(SEARCH_LIMIT)
        # The canonical parameter names and their older snake_case forms:
        # releases before and after the rename each read the ones they know.
        params = {
            "query.serviceName": self.service,
            "query.service_name": self.service,
            "query.startTimeMin": low,
            "query.start_time_min": low,
            "query.startTimeMax": high,
            "query.start_time_max": high,
            "query.searchDepth": depth,
            "query.num_traces": depth,
        }
        try:
            answer = get_json(f"{self.url}/api/v3/traces", params, self.what, self.timeout)
        except SourceError as exc:
            if " 404 " in str(exc):  # Jaeger answers 404 "No traces found"
                raise self._none_found() from None
            raise
        spans = _otlp.newest_trace(_spans_of(answer, self.what))
        if not spans:
            raise self._none_found()
        return self._run(spans, _key(spans))


class TempoSource(_Remote):
    """Tempo's HTTP API: a TraceQL search for the service's newest trace, then that trace.

    Args:
        url: Tempo's query frontend, e.g. ``http://localhost:3200``.
        service: the ``service.name`` the engine reports.
        trace_id: show this trace instead of the newest one.
        lookback_hours: how far back the search goes.
        timeout: seconds per request.
    """

    what = "Tempo"

    def poll(self) -> Run:
        """Search (unless a trace id was given), then fetch the trace."""
        trace_id = self.trace_id
        if not trace_id:
            now = int(time.time())
            params = {
                "q": f'{{ resource.{n.SERVICE_NAME} = "{self.service}" }}',
                "limit": str(SEARCH_LIMIT),
                "start": str(now - int(self.lookback_hours * 3600)),
                "end": str(now + 60),
            }
            answer = get_json(f"{self.url}/api/search", params, self.what, self.timeout)
            try:
                ids = _otlp.tempo_trace_ids(answer)
            except ValueError as exc:
                raise SourceError(
                    f"Tempo at {self.url} answered the search oddly: {exc}."
                ) from None
            if not ids:
                raise self._none_found()
            trace_id = ids[0]
        answer = get_json(f"{self.url}/api/traces/{trace_id}", {}, self.what, self.timeout)
        spans = _spans_of(answer, self.what)
        return self._run(spans, _key(spans, trace_id))
