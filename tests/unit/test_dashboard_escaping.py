"""Every user string reaches Plotly escaped exactly once: names, labels and
custom data by the figure-wide escaping, hover texts by their builders
(which write them as a little HTML: bold, line breaks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from asyncflow.dashboard import figures, open_source
from asyncflow.dashboard._plot import escape_figure
from asyncflow.dashboard.model import Run
from asyncflow.telemetry import names as n
from tests.ui import records as r

LINK = '<a href="https://evil.example/">click me</a>'


def texts(fig: Any) -> tuple[list[str], list[str]]:
    """The hover texts of ``fig``, and every other text it carries."""
    hovers: list[str] = []
    others: list[str] = []
    for trace in fig.data:
        hover = getattr(trace, "hovertext", None)
        if isinstance(hover, str):
            hovers.append(hover)
        elif hover is not None:
            hovers.extend(str(v) for v in hover)
        for prop in ("name", "text", "customdata"):
            value = getattr(trace, prop, None)
            if isinstance(value, str):
                others.append(value)
            elif value is not None:
                others.extend(str(v) for v in value)
    for key in list(fig.layout):
        if key.startswith(("xaxis", "yaxis")) and fig.layout[key].ticktext is not None:
            others.extend(str(v) for v in fig.layout[key].ticktext)
    others.append(str(fig.layout.title.text or ""))
    others.append(str(fig.layout.title.subtitle.text or ""))
    return hovers, others


def hostile_run(tmp_path: Path) -> Run:
    """A run whose task names and workflow ids are a link."""
    spans = [r.session_span()]
    spans += [
        r.task_span(
            f"task.00000{i}", f"wf-{i} {LINK}", "type", 0, None, 1.0 + i, 2.0 + i, name=LINK
        )
        for i in range(1, 4)
    ]
    path = tmp_path / f"hostile{n.CHECKPOINT_SUFFIX}"
    path.write_text("".join(json.dumps(s) + "\n" for s in spans))
    return open_source(path).poll()


def test_user_strings_are_escaped_once_in_every_figure(tmp_path: Path) -> None:
    run = hostile_run(tmp_path)
    wf = next(iter({t.workflow_id for t in run.tasks}))
    built = [
        figures.campaign_figure(run),
        figures.gantt_figure(run, wf),
        figures.slots_figure(run),
    ]
    seen_hover = seen_label = False
    for fig in built:
        hovers, others = texts(fig)
        for text in hovers + others:
            assert "<a " not in text, text  # never live markup
            assert "&amp;lt;" not in text, text  # never escaped twice
        seen_hover |= any("&lt;a href" in h and "<br>" in h for h in hovers)
        seen_label |= any("&lt;a href" in o for o in others)
    assert seen_hover and seen_label  # the hostile strings were there, escaped


def test_titles_are_text_and_the_critical_path_a_subtitle(tmp_path: Path) -> None:
    """A title holds user strings escaped and no markup of the builders' own (it
    was escaped with them: the page showed ``<br><sup>``); the critical path is
    the subtitle, which Plotly draws as a smaller second line."""
    run = hostile_run(tmp_path)
    gantt = figures.gantt_figure(run, f"wf-1 {LINK}")
    assert gantt.layout.title.text.startswith(f"Workflow wf-1 {figures.escape_text(LINK)}: ")
    for fig in (figures.campaign_figure(run), figures.slots_figure(run)):
        title = fig.layout.title
        assert "<" not in title.text and "&lt;" not in title.text, title.text
        assert title.subtitle.text.startswith("Critical path: makespan 3.500 s along 1 task")


# A name that is markup and holds a Plotly template field.
TEMPLATED = '<a href="https://evil.example/">gpu-%{y}</a>'


def test_backend_and_host_names_reach_hover_templates_as_text(tmp_path: Path) -> None:
    """A hover template is the builders' own markup and is filled in by Plotly: a
    backend or host name put in one is escaped there, ``%`` included."""
    spans: list[dict[str, Any]] = [r.session_span()]
    for i in range(1, 3):
        span = r.task_span(f"task.00000{i}", "wf", "type", 0, ["cpu:0"], 1.0 + i, 2.0 + i)
        span["attributes"][n.BACKEND] = TEMPLATED
        spans.append(span)
    spans += [
        {
            "section": n.SECTION_EVENT,
            "name": n.EVENT_RESOURCE_UPDATE,
            "event_time": r.T0 + t,
            "node_id": TEMPLATED,
            "cpu_percent": 50.0,
            "memory_percent": 40.0,
        }
        for t in (1.0, 2.0)
    ]
    path = tmp_path / f"hostile{n.CHECKPOINT_SUFFIX}"
    path.write_text("".join(json.dumps(s) + "\n" for s in spans))
    fig = figures.utilisation_figure(open_source(path).poll())
    templates = [t.hovertemplate for t in fig.data if t.hovertemplate]
    as_text = '&lt;a href="https://evil.example/"&gt;gpu-&#37;{y}&lt;/a&gt;'
    assert any(f"<extra>{as_text} CPU</extra>" in t for t in templates)  # the backend
    assert any(f"<extra>{as_text}</extra>" in t for t in templates)  # the host
    for template in templates:
        assert "<a " not in template and "gpu-%{y}" not in template


def test_arrays_mixing_numbers_and_text_are_escaped_and_number_arrays_kept() -> None:
    """Arrays of numbers are passed over without a walk (the figures' largest);
    any string among numbers, in nested lists or in a table's columns is
    still escaped."""
    numbers = [0.5, 1, None, True]
    fig = go.Figure(
        [
            go.Scatter(
                x=numbers,
                y=(1.0, 2.0, 3.0, 4.0),
                text=["<b>x</b>", "plain", None, "1"],
                customdata=[1, "<b>x</b>", None, 2.5, [0, "a&b"], [1, "plain"]],
                name="<i>type</i>",
            ),
            go.Table(cells={"values": [[1, 2], ["<s>", "ok"]]}, header={"values": ["n", "&"]}),
        ]
    )
    escape_figure(fig)
    scatter, table = fig.data
    assert list(scatter.x) == numbers and list(scatter.y) == [1.0, 2.0, 3.0, 4.0]
    assert list(scatter.text) == ["&lt;b&gt;x&lt;/b&gt;", "plain", None, "1"]
    custom = [list(v) if isinstance(v, (list, tuple)) else v for v in scatter.customdata]
    assert custom == [1, "&lt;b&gt;x&lt;/b&gt;", None, 2.5, [0, "a&amp;b"], [1, "plain"]]
    assert scatter.name == "&lt;i&gt;type&lt;/i&gt;"
    assert [list(v) for v in table.cells.values] == [[1, 2], ["&lt;s&gt;", "ok"]]
    assert list(table.header.values) == ["n", "&amp;"]
