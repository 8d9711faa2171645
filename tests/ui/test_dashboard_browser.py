"""The Dash app in a real headless Chromium, served by the real ``asyncflow dashboard``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .campaign import FAILING_MESSAGE, task_count
from .conftest import ARTIFACTS, Server, free_port, wait_for

BARS = "#campaign-graph .barlayer .point path"


def severe_console_entries(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def elements(browser: Any, css: str) -> list[Any]:
    return list(browser.find_elements("css selector", css))


def text_of(browser: Any, css: str, attempts: int = 20) -> str:
    """The text of every element ``css`` matches, read again if Plotly redraws meanwhile.

    A graph re-rendered between finding its elements and reading them leaves
    stale references: the read starts over, as a user's eyes would.
    """
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(attempts - 1):
        try:
            return " ".join(e.text for e in elements(browser, css))
        except StaleElementReferenceException:
            time.sleep(0.05)
    return " ".join(e.text for e in elements(browser, css))


def open_tab(browser: Any, label: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException

    def opened() -> bool:
        try:
            (tab,) = [t for t in elements(browser, ".tab") if t.text.strip() == label]
            tab.click()
        except StaleElementReferenceException:
            return False  # the tab bar was re-rendered: find it again
        return True

    wait_for(opened, what=f"the {label!r} tab")


def gantt_title(browser: Any) -> str:
    return text_of(browser, "#workflow-graph .gtitle")


def click(browser: Any, element: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).move_to_element(element).click().perform()


def ended_tasks(browser: Any) -> int:
    """How many tasks the timeline draws as ended (-1 before it is drawn)."""
    return int(
        browser.execute_script(
            "var p = document.querySelector('#campaign-graph .js-plotly-plot');"
            "if (!p || !p.data) { return -1; }"
            "var n = 0; p.data.forEach(function (t) {"
            "  if (t.name === 'critical path') { return; }"
            "  (t.customdata || []).forEach(function (c) {"
            "    if (['completed', 'failed', 'dependency-failed', 'canceled'].includes(c[2])) {"
            "      n += 1;"
            "    }"
            "  });"
            "}); return n;"
        )
    )


def test_campaign_timeline_workflow_gantt_utilisation(
    browser: Any, recorded_run: Path, servers: Callable[..., Server]
) -> None:
    server = servers(str(recorded_run)).wait_ready()
    browser.get(server.url)
    browser.get_log("browser")  # start the console record here

    # The campaign timeline: one bar per task.
    bars = wait_for(
        lambda: len(elements(browser, BARS)) == task_count() and elements(browser, BARS),
        what="one bar per task",
    )
    assert all(b.get_attribute("d") for b in bars)
    assert f"{task_count()} tasks in 8 workflow instances" in text_of(browser, "#campaign-graph")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-campaign.png"))

    # Clicking a bar opens that workflow's Gantt; another bar, another workflow.
    click(browser, bars[0])
    first = wait_for(
        lambda: "Workflow wf-" in gantt_title(browser) and gantt_title(browser),
        what="the Gantt of the clicked workflow",
    )
    assert wait_for(lambda: elements(browser, "#workflow-graph .barlayer .point path"))
    open_tab(browser, "Campaign timeline")
    bars = wait_for(lambda: elements(browser, BARS), what="the timeline again")
    click(browser, bars[-1])
    wait_for(lambda: gantt_title(browser) not in ("", first), what="the Gantt of another workflow")

    # Utilisation: busy slots and capacities per backend, node samples.
    open_tab(browser, "Utilisation")
    wait_for(
        lambda: len(elements(browser, "#utilisation-graph .scatterlayer .trace")) >= 3,
        what="the utilisation traces",
    )
    legend = text_of(browser, "#utilisation-graph .legend")
    assert "GPU busy" in legend and "CPU %" in legend

    # Slot lanes: a row per slot with its tasks, the critical path in the subtitle.
    open_tab(browser, "Slots")
    wait_for(
        lambda: len(elements(browser, "#slots-graph .barlayer .point path")) == task_count(),
        what="a bar per task in the slot lanes",
    )
    title = text_of(browser, "#slots-graph .gtitle")
    assert " task spans" in title and "<" not in title, title
    assert text_of(browser, "#slots-graph .gtitle-subtitle").startswith("Critical path: makespan")
    wait_for(lambda: "gpu:0" in text_of(browser, "#slots-graph .ytick"), what="a gpu:0 lane")

    open_tab(browser, "Summary")
    wait_for(lambda: FAILING_MESSAGE in text_of(browser, "#summary-tables"), what="the summary")
    # The failures table links its example task to the task panel.
    click(browser, elements(browser, "#summary-tables .task-link")[0])
    wait_for(lambda: FAILING_MESSAGE in text_of(browser, "#task-panel"), what="the task panel")

    # Clock time: the time axes become dates; the header says when the session started.
    assert "session started 20" in text_of(browser, ".header")
    open_tab(browser, "Campaign timeline")
    (clock,) = [e for e in elements(browser, "#axis label") if "clock" in e.text]
    clock.click()
    wait_for(
        lambda: browser.execute_script(
            "var p = document.querySelector('#campaign-graph .js-plotly-plot');"
            "return p && p._fullLayout && p._fullLayout.xaxis.type === 'date';"
        ),
        what="a clock-time axis",
    )
    assert severe_console_entries(browser) == []


def test_a_live_run_refreshes_without_reloading(
    browser: Any, recorded_run: Path, servers: Callable[..., Server], tmp_path: Path
) -> None:
    data = recorded_run.read_bytes()
    live = tmp_path / recorded_run.name
    cut = data.index(b'{"section":"span"', len(data) // 3) + 25  # mid-line: a torn last line
    live.write_bytes(data[:cut])
    server = servers(str(live), "--refresh", "0.3").wait_ready()
    browser.get(server.url)
    browser.get_log("browser")
    wait_for(lambda: "incomplete" in text_of(browser, "#status"), what="the torn-line message")
    wait_for(lambda: ended_tasks(browser) >= 0, what="the tasks drawn")
    assert ended_tasks(browser) < task_count()
    browser.execute_script("window.stillTheSamePage = true;")
    with live.open("ab") as f:
        f.write(data[cut:])
    wait_for(lambda: ended_tasks(browser) == task_count(), what="the rest of the run")
    assert len(elements(browser, BARS)) == task_count()
    assert browser.execute_script("return window.stillTheSamePage === true;")
    wait_for(lambda: "incomplete" not in text_of(browser, "#status"), what="the message to go")
    assert severe_console_entries(browser) == []


def _bad_inputs(
    tmp: Path, recorded_run: Path, failed_run: Path
) -> dict[str, tuple[list[str], str]]:
    empty = tmp / "empty.telemetry.jsonl"
    empty.write_text("")
    garbage = tmp / "garbage.telemetry.jsonl"
    garbage.write_bytes(os.urandom(4000).replace(b"\n", b"?") + b"\nnot json\n")
    torn = tmp / "torn.telemetry.jsonl"
    data = recorded_run.read_bytes()
    torn.write_bytes(data[: len(data) - 30])
    return {
        "empty file": ([str(empty)], "is empty: no telemetry recorded yet"),
        "garbage": ([str(garbage)], "is not an asyncflow checkpoint file"),
        "torn last line": ([str(torn)], "The last line of torn.telemetry.jsonl is incomplete"),
        "only failed tasks": ([str(failed_run)], "Every task of this run failed"),
        "unreachable Jaeger": (
            ["--jaeger", f"http://127.0.0.1:{free_port()}"],
            "Cannot reach Jaeger at http://127.0.0.1:",
        ),
    }


def test_bad_input_shows_a_message_and_the_server_keeps_serving(
    browser: Any,
    recorded_run: Path,
    failed_run: Path,
    servers: Callable[..., Server],
    tmp_path: Path,
) -> None:
    cases = _bad_inputs(tmp_path, recorded_run, failed_run)
    started = {name: servers(*args) for name, (args, _) in cases.items()}  # start all at once
    for name, (_, message) in cases.items():
        server = started[name].wait_ready()
        for _ in range(2):  # the page again: the server still serves, the message is still there
            browser.get(server.url)
            browser.get_log("browser")
            wait_for(lambda m=message: m in text_of(browser, "#status"), what=f"{name}: {message}")
            assert "Traceback" not in browser.page_source
            assert server.answers("_dash-layout") and server.proc.poll() is None
        assert severe_console_entries(browser) == [], name


@pytest.mark.usefixtures("dashboard_extra")
def test_binds_to_localhost_unless_told(recorded_run: Path, servers: Callable[..., Server]) -> None:
    import psutil

    default = servers(str(recorded_run))
    other = servers(str(recorded_run), "--host", "127.0.0.2", host="127.0.0.2")
    for server, address in ((default, "127.0.0.1"), (other, "127.0.0.2")):
        server.wait_ready()
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {(address, server.port)}


async def _large_run(directory: Path, tasks: int = 3_000) -> Path:
    """A dry run of ``tasks`` tasks in chains of 10: more than the timeline draws as bars."""
    from asyncflow import WorkflowEngine

    engine = await WorkflowEngine.create(dry_run=True, work_dir=directory)
    tel = await engine.start_telemetry(checkpoint_path=directory)

    @engine.function_task
    async def step(*deps: Any) -> None:
        return None

    futures = []
    for w in range(tasks // 10):
        async with engine.workflow_scope(name=("sim", "train")[w % 2]):
            previous = step()
            futures.append(previous)
            for _ in range(9):
                previous = step(previous)
                futures.append(previous)
        if w % 20 == 19:  # let the clock move between batches of instances
            await asyncio.gather(*futures)
    await asyncio.gather(*futures)
    await engine.shutdown()
    assert tel.checkpoint_file is not None
    return Path(tel.checkpoint_file)


def segment_count(browser: Any) -> int:
    title = text_of(browser, "#campaign-graph .gtitle")
    match = re.search(r"(\d+) segments", title)
    return int(match.group(1)) if match else -1


def test_zooming_a_large_timeline_draws_the_window_in_detail(
    browser: Any, servers: Callable[..., Server], tmp_path: Path
) -> None:
    path = asyncio.run(_large_run(tmp_path))
    server = servers(str(path)).wait_ready()
    browser.get(server.url)
    browser.get_log("browser")
    whole = wait_for(lambda: segment_count(browser) > 0 and segment_count(browser), what="WebGL")
    span = browser.execute_script(  # where the tasks are, in seconds from the start
        "var p = document.querySelector('#campaign-graph .js-plotly-plot');"
        "var xs = [];"
        "p._fullData.filter(t => t.type === 'scattergl' && t.mode === 'lines')"
        "  .forEach(t => Array.from(t.x).forEach(x => { if (isFinite(x)) xs.push(x); }));"
        "return [Math.min(...xs), Math.max(...xs)];"
    )
    low, high = float(span[0]), float(span[1])
    # The first fortieth of the run, where the first batch of instances ran
    # (a dry run is bursty: the middle may hold no task at all).
    middle, width = low + (high - low) / 80, (high - low) / 80
    browser.execute_script(
        "var p = document.querySelector('#campaign-graph .js-plotly-plot');"
        "Plotly.relayout(p, {'xaxis.range': [arguments[0], arguments[1]]});",
        middle - width,
        middle + width,
    )
    title = wait_for(
        lambda: (
            "zoomed to" in text_of(browser, "#campaign-graph .gtitle")
            and text_of(browser, "#campaign-graph .gtitle")
        ),
        what="the timeline aggregated again for the zoomed window",
    )
    assert f"zoomed to {middle - width:.3f}" in title
    assert 0 < segment_count(browser) != whole
    # A double click (autorange) goes back to the whole run.
    browser.execute_script(
        "var p = document.querySelector('#campaign-graph .js-plotly-plot');"
        "Plotly.relayout(p, {'xaxis.autorange': true});"
    )
    wait_for(
        lambda: (
            "zoomed" not in text_of(browser, "#campaign-graph .gtitle")
            and segment_count(browser) == whole
        ),
        what="the whole run again",
    )
    assert severe_console_entries(browser) == []


@pytest.mark.usefixtures("dashboard_extra")
def test_the_server_prints_its_url_once_and_no_access_log(
    recorded_run: Path, servers: Callable[..., Server]
) -> None:
    import urllib.request

    server = servers(str(recorded_run)).wait_ready()
    for path in ("", "_dash-layout", "_dash-dependencies", "no-such-page"):
        with contextlib.suppress(OSError):  # the 404 of the last one
            urllib.request.urlopen(server.url + path, timeout=10).close()
    server.stop()
    assert server.proc.stdout is None or server.proc.stdout.closed
    output = server.output
    urls = [line for line in output.splitlines() if "http://" in line]
    assert urls == [f"asyncflow dashboard on {server.url} (Ctrl-C stops it)"], output
    for noise in ("Serving Flask", "Debug mode", "development server", ".env", "GET /", "HTTP/1"):
        assert noise not in output, output
