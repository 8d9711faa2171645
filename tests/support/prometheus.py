"""A real Prometheus server for tests, and helpers to read an exposition.

``Prometheus`` runs Debian's ``prometheus`` binary in a subprocess on a free
127.0.0.1 port, scraping one target every second (or with the scrape
configuration a test gives it), and queries it over the HTTP API. The
binaries are required on CI (``CI=true``): without them a test fails there
and is skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from .otlp_receiver import refused_port

__all__ = [
    "JOB",
    "Prometheus",
    "PrometheusError",
    "eventually",
    "exposition",
    "http_get",
    "missing_tool",
    "parse_exposition",
    "prometheus_binaries",
    "value_of",
]

T = TypeVar("T")

JOB = "asyncflow"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def missing_tool(message: str) -> NoReturn:
    """Skip the test for a missing tool, or fail it on CI, where every tool is installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def prometheus_binaries() -> tuple[str, str]:
    """The ``prometheus`` and ``promtool`` executables; skip without them (fail on CI)."""
    server, tool = shutil.which("prometheus"), shutil.which("promtool")
    if server and tool:
        return server, tool
    missing_tool("prometheus/promtool not found: apt-get install prometheus")


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


async def exposition(port: int) -> str:
    """The text the engine serves on ``/metrics``."""
    body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
    return body.decode("utf-8")


def parse_exposition(text: str) -> list[tuple[str, frozenset[tuple[str, str]]]]:
    """Every sample line as (series name, label set); values and timestamps dropped."""
    series = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"unparsable exposition line: {line!r}"
        labels = frozenset(_LABEL.findall(match.group(2) or ""))
        series.append((match.group(1), labels))
    return series


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float) -> T:
    """Poll ``probe`` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = await probe()
        except OSError as exc:  # Prometheus not listening yet, or busy
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s (last: {last!r})")
        await asyncio.sleep(0.2)


class PrometheusError(AssertionError):
    """The Prometheus HTTP API answered with an error (a bad query, for one)."""

    def __init__(self, error_type: str, error: str) -> None:
        super().__init__(f"{error_type}: {error}")
        self.error_type = error_type
        self.error = error


class Prometheus:
    """A Prometheus server in a subprocess, scraping one target every second.

    ``config``, when given, is the whole configuration file to run with
    instead of the built-in one-job configuration.
    """

    def __init__(
        self, binary: str, workdir: Path, target_port: int, config: str | None = None
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.target = f"127.0.0.1:{target_port}"
        self.port = refused_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        if self.config is not None:
            return self.config
        return (
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    scrape_interval: 1s\n"
            "    static_configs:\n"
            f"      - targets: ['{self.target}']\n"
        )

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config_text(), encoding="utf-8")
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {self._process.returncode}:\n"
                + self.log.read_text(errors="replace")[-4000:]
            )

    async def api(self, path: str, **params: str) -> Any:
        self.check_alive()
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            raw = await asyncio.to_thread(http_get, url)
        except urllib.error.HTTPError as exc:  # 400/422: the API says why in JSON
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise exc from None
            raise PrometheusError(body.get("errorType", ""), body.get("error", "")) from None
        body = json.loads(raw)
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        data = await self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    async def until(
        self, promql: str, what: str, accept: Callable[[list[dict[str, Any]]], bool] = bool
    ) -> list[dict[str, Any]]:
        """Run ``promql`` until ``accept(result)``, with a deadline."""

        async def probe() -> list[dict[str, Any]] | None:
            result = await self.query(promql)
            return result if result and accept(result) else None

        return await eventually(probe, f"{what} ({promql})", timeout=60)


def value_of(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])
