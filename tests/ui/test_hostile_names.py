"""User strings reach Plotly as text, never as markup: a task or workflow
named ``<a href=...>`` is not a link, ``<span style=...>`` styles nothing, in
the app and in the report (a real Chromium renders both)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.cli import main
from asyncflow.dashboard import open_source
from asyncflow.telemetry import names as n

from . import records as r
from .conftest import Server, wait_for

LINK = '<a href="https://evil.example/">click me</a>'
STYLED = '<span style="color:red">styled</span>'


def hostile_run(tmp_path: Path) -> Path:
    """A checkpoint file whose task names, workflow ids and types are markup."""
    spans = [r.session_span()]
    spans += [
        r.task_span(
            f"task.00000{i}", f"wf-{i} {LINK}", STYLED, 0, None, 1.0 + i, 2.0 + i, name=LINK
        )
        for i in range(1, 4)
    ]
    path = tmp_path / f"hostile{n.CHECKPOINT_SUFFIX}"
    path.write_text("".join(json.dumps(s) + "\n" for s in spans))
    return path


def rendered(browser: Any, graph: str) -> tuple[int, str]:
    """Links drawn inside ``graph``, and the text its figures draw."""
    links = browser.execute_script(
        "return document.querySelectorAll(arguments[0] + ' svg a').length;", graph
    )
    text = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' svg text'))"
        ".map(t => t.textContent).join(' ');",
        graph,
    )
    return int(links), str(text)


def test_markup_in_names_is_shown_as_text_in_the_app(
    browser: Any, servers: Callable[..., Server], tmp_path: Path
) -> None:
    server = servers(str(hostile_run(tmp_path))).wait_ready()
    browser.get(server.url)
    wait_for(
        lambda: browser.find_elements("css selector", "#campaign-graph .barlayer .point path"),
        what="the timeline's bars",
    )
    links, text = rendered(browser, "#campaign-graph")
    assert links == 0
    assert STYLED in text  # the legend shows the workflow type as written
    assert LINK in text  # and the axis the instance ids
    styled = browser.execute_script(
        "return Array.from(document.querySelectorAll('#campaign-graph tspan'))"
        ".filter(t => (t.getAttribute('style') || '').includes('red')).length;"
    )
    assert styled == 0


def open_report(browser: Any, tmp_path: Path, selector: str, what: str) -> None:
    """``asyncflow report`` of the hostile run, open in ``browser`` once ``selector`` shows."""
    report = tmp_path / "report.html"
    assert main(["report", str(hostile_run(tmp_path)), "-o", str(report)]) == 0
    browser.get(report.as_uri())
    wait_for(lambda: browser.find_elements("css selector", selector), what=what)


def test_markup_in_names_is_shown_as_text_in_the_report(browser: Any, tmp_path: Path) -> None:
    open_report(browser, tmp_path, ".js-plotly-plot .barlayer .point path", "the report's timeline")
    links, text = rendered(browser, "body")
    assert links == 0
    assert STYLED in text and LINK in text


def test_titles_show_names_as_written_and_the_critical_path_below(
    browser: Any, tmp_path: Path
) -> None:
    """A title's user strings show as written; the critical path is the smaller
    line under the timeline's and slot lanes' titles, not ``<br><sup>`` text."""
    open_report(browser, tmp_path, "#slots .gtitle", "the report's slot lanes")

    def text(css: str) -> str:
        return str(
            browser.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]))"
                ".map(t => t.textContent).join(' ');",
                css,
            )
        )

    for figure in ("#campaign", "#slots"):
        title = text(f"{figure} .gtitle")
        assert "task" in title and "<" not in title, title
        assert text(f"{figure} .gtitle-subtitle").startswith("Critical path: makespan")
    assert text("#workflow-0 .gtitle").startswith(f"Workflow wf-1 {LINK}: ")
    assert browser.execute_script("return document.querySelectorAll('.gtitle a').length;") == 0


TEMPLATED = '<a href="https://evil.example/">gpu-%{y}</a>'  # markup and a template field


async def run_on_a_hostile_backend(directory: Path) -> Path:
    """A real run on a backend named ``TEMPLATED``, with two node samples of a
    host of that name (as another machine's file could hold); its checkpoint file."""
    backend = await LocalExecutionBackend(cpus=2, name=TEMPLATED)
    engine = await WorkflowEngine.create(backend=backend, work_dir=directory)
    await engine.start_telemetry(checkpoint_path=directory)

    @engine.function_task
    async def step(i: int) -> int:
        return i

    await asyncio.gather(*(step(i) for i in range(4)))
    await engine.shutdown()
    (path,) = directory.glob(f"*{n.CHECKPOINT_SUFFIX}")
    start = open_source(path).poll().start
    with path.open("a") as f:
        for t in (start, start + 0.01):
            sample = {
                "section": n.SECTION_EVENT,
                "name": n.EVENT_RESOURCE_UPDATE,
                "event_time": t,
                "node_id": TEMPLATED,
                "cpu_percent": 50.0,
                "memory_percent": 40.0,
            }
            f.write(json.dumps(sample, separators=(",", ":")) + "\n")
    return path


def test_backend_and_host_names_show_as_written_in_hovers(browser: Any, tmp_path: Path) -> None:
    """Plotly fills in a hover template, then renders it as a little HTML: a name
    in one shows as written, ``%{y}`` not filled in, ``<a>`` no link."""
    report = tmp_path / "report.html"
    run = asyncio.run(run_on_a_hostile_backend(tmp_path))
    assert main(["report", str(run), "-o", str(report)]) == 0
    browser.get(report.as_uri())
    wait_for(
        lambda: browser.find_elements("css selector", "#utilisation .scatterlayer .trace"),
        what="the report's utilisation figure",
    )
    traces = browser.execute_script(
        "return document.getElementById('utilisation').data"
        ".map(t => [t.name, (t.xaxis || 'x') + (t.yaxis || 'y')]);"
    )
    busy = [i for i, (name, _) in enumerate(traces) if name.endswith(" CPU busy")]
    sampled = [i for i, (name, _) in enumerate(traces) if name.endswith(" CPU %")]
    assert busy and sampled
    for index in (busy[0], sampled[0]):
        hover = browser.execute_script(
            "const gd = document.getElementById('utilisation');"
            "Plotly.Fx.unhover(gd);"
            "Plotly.Fx.hover(gd, [{curveNumber: arguments[0], pointNumber: 0}], arguments[1]);"
            "const layer = gd.querySelector('.hoverlayer');"
            "return [layer.querySelectorAll('a').length,"
            " Array.from(layer.querySelectorAll('text')).map(t => t.textContent)];",
            index,
            traces[index][1],
        )
        links, texts = hover
        assert links == 0
        assert any(TEMPLATED in text for text in texts), texts
