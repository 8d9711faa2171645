"""The campaign timeline read as columns is the timeline of the records.

``CheckpointSource.timeline()`` reads a layout 2 file straight into columns
(``_scan``), taking most lines by one pattern and the others one by one;
``timeline_of(run)`` makes the columns of the records the other views read.
Both must give the same columns and the same figure, whatever the file
holds and however it is cut into blocks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io as pio
import pytest

from asyncflow.dashboard import figures as f
from asyncflow.dashboard import open_source
from asyncflow.dashboard._columns import Timeline, timeline_of
from asyncflow.dashboard._scan import TimelineScanner
from asyncflow.dashboard.model import RunBuilder
from asyncflow.dashboard.sources import CheckpointSource, read_timeline

from .test_checkpoint_layouts import LAYOUT1, layout2_lines

# Figures drawn from both: aggregated (bar_limit 0) as a large run is, filtered, zoomed.
VIEWS: list[dict[str, Any]] = [
    {},
    {"states": ["completed", "running"]},
    {"states": ["failed", "dependency-failed", "waiting", "queued"]},
    {"types": ["(no workflow)", ""]},
    {"window": (0.05, 0.4)},
]


def columns(tl: Timeline) -> dict[str, Any]:
    """Everything a timeline holds, comparable across the two ways of reading."""
    used = sorted(set(tl.key_of.tolist()))
    return {
        "uids": list(tl.uids),
        "times": [getattr(tl, k).tolist() for k in ("created", "resolved", "started", "finished")],
        "status": tl.status.tolist(),
        "slots": (tl.cpus.tolist(), tl.gpus.tolist(), tl.slots),
        "rows": [tl.keys[k] for k in tl.key_of.tolist()],
        "row types": {tl.keys[k]: tl.key_types[k] for k in used},
        "edges": sorted(zip(tl.edges[0].tolist(), tl.edges[1].tolist(), strict=True)),
        "run": [
            getattr(tl.run, k)
            for k in ("start", "end", "ended", "stopped", "problems", "workflows", "blocks")
        ]
        + [tl.run.slot_snapshots, tl.run.priorities, tl.run.samples],
    }


def figure(source: Timeline | Any, **view: Any) -> Any:
    return json.loads(pio.to_json(f.campaign_figure(source, bar_limit=0, **view), validate=False))


def assert_columns(got: Timeline, want: Timeline) -> None:
    a, b = columns(got), columns(want)
    for key in b:
        if key == "times":  # NaN != NaN: compared as arrays
            for x, y in zip(a[key], b[key], strict=True):
                assert np.array_equal(x, y, equal_nan=True), key
        else:
            assert a[key] == b[key], key


def assert_same(
    path: Path, chunk: int | None = None, views: list[dict[str, Any]] = VIEWS
) -> Timeline:
    scanned = read_timeline(path, **({"chunk": chunk} if chunk else {}))
    assert scanned is not None  # layout 2: read as columns
    recorded = timeline_of(open_source(path).poll())
    assert_columns(scanned, recorded)
    for view in views:
        assert figure(scanned, **view) == figure(recorded, **view), view
    return scanned


@pytest.fixture
def layout2(tmp_path: Path) -> Path:
    path = tmp_path / "run.telemetry.jsonl"
    path.write_text("".join(layout2_lines()))
    return path


@pytest.mark.parametrize("chunk", [None, 200, 997])
def test_the_fixture_run_reads_the_same_as_columns(layout2: Path, chunk: int | None) -> None:
    """Failures and their cascade, a retried task, a block, slots, cache hits, workflows."""
    tl = assert_same(layout2, chunk)
    assert len(tl) == len(open_source(layout2).poll().tasks) > 10
    assert tl.slots and len(tl.edges[0]) and tl.run.blocks and tl.run.workflows


def test_every_cut_of_the_run_reads_the_same(layout2: Path, tmp_path: Path) -> None:
    """A live view: tasks waiting, queued and running at every point of the run."""
    lines = layout2_lines()
    cut = tmp_path / "cut.telemetry.jsonl"
    live = 0
    for k in range(2, len(lines), 2):
        cut.write_text("".join(lines[:k]))
        tl = assert_same(cut, 300, VIEWS[:1] if k % 3 else VIEWS[2:3])
        live += int(np.isnan(tl.finished).sum())
    assert live > 25


def test_a_torn_last_line_and_a_bad_line(layout2: Path) -> None:
    text = layout2.read_text()
    layout2.write_text(text + "not json\n" + '{"section":"task","uid":"task.0')
    tl = assert_same(layout2, 500)
    assert any("incomplete" in p for p in tl.run.problems)
    assert any("Skipped 1 line" in p for p in tl.run.problems)


def test_a_layout_1_file_is_read_into_records_first() -> None:
    assert read_timeline(LAYOUT1) is None
    tl = CheckpointSource(LAYOUT1).timeline()
    assert_columns(tl, timeline_of(open_source(LAYOUT1).poll()))
    assert figure(tl) == figure(open_source(LAYOUT1).poll())


def test_a_small_timeline_is_drawn_as_bars_from_the_records(layout2: Path) -> None:
    tl = CheckpointSource(layout2).timeline()
    run = open_source(layout2).poll()
    bars = f.campaign_figure(tl)
    assert {t.type for t in bars.data} >= {"bar"}
    assert pio.to_json(bars) == pio.to_json(f.campaign_figure(run))


def test_each_line_alone_takes_its_own_way(layout2: Path) -> None:
    """Fed one line a block: plain lines (steps, slots, plain ends, workflow
    spans) take the fast way, the others the slow one; the same columns."""
    run = open_source(layout2).poll()
    scanner = TimelineScanner(RunBuilder(str(layout2)))
    for line in layout2.read_bytes().splitlines(keepends=True):
        scanner.feed(line)
    assert scanner.blocks["fast"] > scanner.blocks["slow"] > 0
    assert_columns(scanner.timeline(full=lambda: run), timeline_of(run))
