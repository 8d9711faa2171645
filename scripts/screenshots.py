"""Make the screenshots of docs/img/ (and so of the README) from the real app and the demo.

Runs the demo campaign (``examples/01-workflow_grouping.py``, as ``asyncflow
demo`` does), serves its dashboard with ``asyncflow dashboard``, and takes
each view in headless Chromium (Debian's ``chromium`` and
``chromium-driver``)::

    python scripts/screenshots.py                 # writes docs/img/dashboard-*.png
    python scripts/screenshots.py --img /tmp/img --duration 0.1

Run it again whenever a view changes, and commit the pictures with the change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
# The file names the docs and the README refer to, and the tab each shows.
SHOTS = {
    "dashboard-campaign.png": "Campaign timeline",
    "dashboard-workflow.png": "Workflow",
    "dashboard-slots.png": "Slots",
    "dashboard-utilisation.png": "Utilisation",
    "dashboard-summary.png": "Summary",
}


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 120.0) -> T:
    """Poll ``predicate`` until it returns something true, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise SystemExit("screenshots: needs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1500,1100",
        "--enable-unsafe-swiftshader",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def _run_campaign(out: Path, duration: float) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "01-workflow_grouping.py"),
            "--out",
            str(out),
            "--duration",
            str(duration),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # its progress bar
        timeout=900,
    )


def _text(browser: Any, css: str) -> str:
    return " ".join(e.text for e in browser.find_elements("css selector", css))


def _open_tab(browser: Any, label: str) -> None:
    tab = wait_for(
        lambda: next(
            (t for t in browser.find_elements("css selector", ".tab") if t.text.strip() == label),
            None,
        ),
        f"the {label} tab",
    )
    tab.click()


def take(run_dir: Path, img: Path) -> list[Path]:
    """Serve ``run_dir`` and save a screenshot of every view into ``img``."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    server = subprocess.Popen(  # from its parent: the header names it as `make demo` does
        [sys.executable, "-m", "asyncflow.cli", "dashboard", run_dir.name, "--port", str(port)],
        env=env,
        cwd=run_dir.parent,
        stdout=subprocess.DEVNULL,
    )
    browser = None
    written = []
    try:
        wait_for(lambda: _answers(url), "the dashboard answering")
        browser = _browser()
        browser.get(url)
        img.mkdir(parents=True, exist_ok=True)
        graphs = {
            "Campaign timeline": "#campaign-graph .barlayer .point",
            "Workflow": "#workflow-graph .barlayer .point",
            "Slots": "#slots-graph .barlayer .point",
            "Utilisation": "#utilisation-graph .scatterlayer .trace",
            "Summary": "#summary-tables table",
        }
        for name, tab in SHOTS.items():
            _open_tab(browser, tab)
            wait_for(
                lambda css=graphs[tab]: browser.find_elements("css selector", css),
                f"the {tab} view drawn",
            )
            path = img / name
            browser.save_screenshot(str(path))
            written.append(path)
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the demo campaign and take the screenshots; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img", help="where to write")
    parser.add_argument(
        "--duration", type=float, default=1.0, help="the demo's task time scale (default 1.0)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="asyncflow-screenshots-") as tmp:
        run_dir = Path(tmp) / "asyncflow-demo"
        _run_campaign(run_dir, args.duration)
        for path in take(run_dir, args.img):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
