"""A real headless Chromium and real ``asyncflow dashboard`` servers for the UI tests.

The browser tests skip when Chromium, its driver or selenium is missing,
except in CI (``CI=true``), where they fail: there they must run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .campaign import record_campaign

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ASYNCFLOW_TEST_ARTIFACTS", ROOT / "tests" / "ui" / "artifacts"))
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something true, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(0.05)


def _missing_or_skip(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs them)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dashboard_extra() -> None:
    """The servers under test need the ``dashboard`` extra."""
    try:
        import dash  # noqa: F401
    except ImportError:
        _missing_or_skip("needs the dashboard extra")


@pytest.fixture(scope="session")
def browser(dashboard_extra: None) -> Iterator[Any]:
    """Headless Debian Chromium driven through chromedriver."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        _missing_or_skip("needs Debian's chromium and chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing_or_skip("needs selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--enable-unsafe-swiftshader",  # WebGL in software, without a warning per page
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An ``asyncflow dashboard`` process."""

    def __init__(self, args: list[str], host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.url = f"http://{host}:{self.port}/"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.output = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asyncflow.cli", "dashboard", *args, "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def answers(self, path: str = "") -> bool:
        """The server answers ``path`` with 200."""
        if self.proc.poll() is not None:
            assert self.proc.stdout is not None
            raise AssertionError(f"the server died:\n{self.proc.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self) -> Server:
        wait_for(self.answers, 60, f"the dashboard at {self.url}")
        return self

    def stop(self) -> None:
        """Stop the server; what it printed is then in :attr:`output`."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.output = self.proc.stdout.read().decode(errors="replace")
            self.proc.stdout.close()


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    """Start dashboard servers (``servers(args...)``); all are stopped at the end."""
    started: list[Server] = []

    def start(*args: str, host: str = "127.0.0.1") -> Server:
        server = Server(list(args), host)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint file of a small campaign run on the real engine."""
    return asyncio.run(record_campaign(tmp_path_factory.mktemp("campaign")))


@pytest.fixture(scope="session")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose every task failed."""
    return asyncio.run(record_campaign(tmp_path_factory.mktemp("failed"), fail_all=True))
