"""A live campaign, mid-run, in a real headless Chromium: true states, hovers, the task panel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncflow.telemetry import names, read_checkpoint

from .conftest import ROOT, Server, wait_for
from .live_campaign import FAILURE, READY
from .test_dashboard_browser import click, elements, severe_console_entries, text_of

PLOT = "document.querySelector('#campaign-graph .js-plotly-plot')"
EXPECTED = {
    "known": {"completed"},
    "broken": {"failed"},
    "after": {"dependency-failed"},
    "hold": {"running", "queued"},
    "later": {"waiting"},
}
UNFINISHED = {"running", "queued", "waiting"}
FAILURE_TRACES = {"failed, never ran", "skipped: a dependency failed", "canceled, never ran"}


@pytest.fixture
def live_campaign(tmp_path: Path) -> Iterator[Path]:
    """The checkpoint directory of a campaign still running (stopped at the end)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ui.live_campaign", str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == READY
        yield tmp_path
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the campaign releases its tasks and shuts down
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def spans_by_name(directory: Path) -> dict[str, dict[str, Any]]:
    return {
        s["attributes"][names.TASK_NAME]: s
        for s in read_checkpoint(directory, sections=[names.SECTION_SPAN])
        if s["attributes"].get(names.LEVEL) == names.LEVEL_TASK
    }


def drawn_tasks(browser: Any) -> list[dict[str, Any]]:
    """Every task point of the timeline: trace, point, trace name, uid, name, state."""
    found = browser.execute_script(
        f"var p = {PLOT}; var out = [];"
        "if (!p || !p.data) { return '[]'; }"
        "p.data.forEach(function (t, i) {"
        "  if (t.name === 'critical path') { return; }"
        "  (t.customdata || []).forEach(function (c, j) {"
        "    out.push({curve: i, point: j, trace: t.name, type: t.type,"
        "              uid: c[0], name: c[1], state: c[2]});"
        "  });"
        "});"
        "return JSON.stringify(out);"
    )
    return list(json.loads(found))


def test_a_live_run_mid_campaign_tells_the_truth(
    browser: Any, live_campaign: Path, servers: Callable[..., Server]
) -> None:
    done = wait_for(
        lambda: (
            (spans := spans_by_name(live_campaign)).keys() >= {"known", "broken", "after"} and spans
        ),
        what="the first tasks' spans in the checkpoint file",
        timeout=60,
    )
    server = servers(str(live_campaign), "--refresh", "0.5").wait_ready()
    browser.get(server.url)
    browser.get_log("browser")

    # Every task is drawn, in the state it is in now; none unfinished is a failure.
    tasks = wait_for(
        lambda: len(drawn := drawn_tasks(browser)) == 7 and drawn,
        what="the seven tasks drawn",
        timeout=60,
    )
    states: dict[str, set[str]] = {}
    for task in tasks:
        states.setdefault(task["name"], set()).add(task["state"])
        if task["state"] in UNFINISHED:
            assert task["trace"] not in FAILURE_TRACES, task
    assert states["hold"] == {"running", "queued"}, states
    assert {k: v for k, v in states.items() if k != "hold"} == {
        k: v for k, v in EXPECTED.items() if k != "hold"
    }
    chips = text_of(browser, "#chips")
    assert "1 failed" in chips and "1 dependency-failed" in chips and "2 running" in chips
    assert "1 waiting" in chips and "1 queued" in chips

    # The hover of a known task gives its exact run time, from its recorded span.
    known = done["known"]
    steps = {e["name"]: e["time_ns"] for e in known["events"]}
    run_time = (known["end_ns"] - steps[names.SPAN_EVENT_STARTED]) / 1e9
    hover = wait_for(lambda: _hover(browser, "known"), what="the hover label of the known task")
    assert f"run time: {run_time:.3f} s" in hover, hover
    assert "state: completed" in hover and "queue wait:" in hover

    # Clicking the failed task opens its panel with its traceback.
    panel = wait_for(
        lambda: _until_shown(browser, lambda: _click_bar(browser, "broken"), "broken failed"),
        what="the task panel with the traceback",
        timeout=60,
    )
    assert "Traceback (most recent call last)" in panel
    assert "in check_input" in panel and f"ValueError: {FAILURE}" in panel
    assert done["broken"]["attributes"][names.TASK_UID] in panel and "Dependents" in panel
    # Its dependent (the cascade) is a link away.
    wait_for(
        lambda: _until_shown(
            browser, lambda: _click(browser, "#task-panel .task-link"), "dependency-failed"
        ),
        what="the dependent's panel",
        timeout=60,
    )
    assert severe_console_entries(browser) == []


# The page redraws as the live run writes: what is found may be replaced
# before it is used, so each of these is tried again until it holds.


_last_click = [0.0]


def _until_shown(browser: Any, act: Callable[[], bool], wanted: str) -> str:
    """The task panel's text once it holds ``wanted``; until then ``act`` (a click)
    every second: a click that lands while the page redraws is lost."""
    text = text_of(browser, "#task-panel")
    if wanted in text:
        return text
    if time.monotonic() - _last_click[0] > 1.0:
        _last_click[0] = time.monotonic()
        act()
    return ""


def _hover(browser: Any, name: str) -> str:
    """Hover task ``name`` (through Plotly's own hover) and return the label's text."""
    (point,) = [t for t in drawn_tasks(browser) if t["name"] == name]
    text = browser.execute_script(
        f"var p = {PLOT}; Plotly.Fx.hover(p, [{{curveNumber: arguments[0], "
        "pointNumber: arguments[1]}]);"
        "var h = document.querySelector('#campaign-graph .hoverlayer');"
        "var t = h ? h.textContent : ''; Plotly.Fx.unhover(p); return t;",
        point["curve"],
        point["point"],
    )
    return str(text or "")


def _click_bar(browser: Any, name: str) -> bool:
    """A real mouse click on the bar of task ``name``."""
    from selenium.common.exceptions import StaleElementReferenceException

    found = [t for t in drawn_tasks(browser) if t["name"] == name]
    if len(found) != 1:
        return False  # between two drawings
    (task,) = found
    bar_traces = [i for i, t in enumerate(_trace_types(browser)) if t == "bar"]
    nth = bar_traces.index(task["curve"]) + 1
    css = (
        f"#campaign-graph .barlayer .trace:nth-of-type({nth}) "
        f".point:nth-of-type({task['point'] + 1}) path"
    )
    from selenium.webdriver.common.action_chains import ActionChains

    try:
        bar = elements(browser, css)[0]
        # Near its start: at its end is the cross of the task that depended on it.
        left = -int(bar.size["width"] / 2) + 4
        ActionChains(browser).move_to_element_with_offset(bar, left, 0).click().perform()
    except (StaleElementReferenceException, IndexError):
        return False
    return True


def _click(browser: Any, css: str) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        (found,) = elements(browser, css)
        click(browser, found)
    except (StaleElementReferenceException, ValueError):
        return False
    return True


def _trace_types(browser: Any) -> list[str]:
    return list(
        browser.execute_script(f"return {PLOT}.data.map(function (t) {{ return t.type; }});")
    )
