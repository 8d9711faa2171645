"""Every reader reads the same run from a layout 1 file and its layout 2 twin.

``tests/data/checkpoint_layout1`` holds a run as the layout 1 writer wrote
it and the records that writer received; rendering those records with
today's writer gives the same run in layout 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from asyncflow.dashboard import open_source
from asyncflow.dashboard.export import chrome_trace
from asyncflow.dashboard.model import Run
from asyncflow.telemetry import names as n
from asyncflow.telemetry import read_checkpoint
from asyncflow.telemetry._render import LineRenderer

DATA = Path(__file__).resolve().parents[1] / "data" / "checkpoint_layout1"
LAYOUT1 = DATA / "layout1.telemetry.jsonl"


def records() -> list[list[Any]]:
    """The fixture's records in today's record layout: its created records
    (as the recorder wrote them before ``Shape`` records) become a ``Shape``
    the first time their kind appears and a short ``Created``."""
    out: list[list[Any]] = []
    shapes: dict[tuple[Any, ...], int] = {}
    for line in (DATA / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record[0] == "C" and len(record) == 14:
            _, uid, base, t_ns, backend, workflow_id, span, parent, *kind = record
            level, name, task_kind, workflow_name, cpus, gpus = kind
            key = (level, name, task_kind, backend, workflow_name, cpus, gpus)
            if key not in shapes:
                shapes[key] = len(shapes)
                out.append(["K", shapes[key], *key])
            record = ["C", uid, base, t_ns, shapes[key], workflow_id, span, parent]
        out.append(record)
    return out


def renderer() -> LineRenderer:
    first = json.loads(LAYOUT1.read_text().splitlines()[0])
    return LineRenderer(first["session_id"], first["node_id"], first["trace_id"])


def layout2_lines() -> list[str]:
    """The run in layout 2: the header, then one line per record."""
    r = renderer()
    return [r.header(), *(r.render(tuple(record)) for record in records())]


def layout1_lines_per_record() -> list[int]:
    """Lines layout 1 wrote per record: two at a task's end, none for an attempt."""
    return [{"F": 2, "T": 0, "K": 0}.get(record[0], 1) for record in records()]


@pytest.fixture
def layout2(tmp_path: Path) -> Path:
    path = tmp_path / "run.telemetry.jsonl"
    path.write_text("".join(layout2_lines()))
    return path


def comparable(run: Run) -> dict[str, Any]:
    """A run's content: all but where it came from and how often it changed."""
    fields = dataclasses.asdict(run)
    for key in ("source", "version"):
        del fields[key]
    return fields


def test_the_fixture_is_layout_1_and_layout_2_is_a_third_of_its_size(layout2: Path) -> None:
    first = json.loads(LAYOUT1.read_text().splitlines()[0])
    assert first[n.SECTION] == n.SECTION_EVENT  # no header: layout 1
    header = json.loads(layout2.read_text().splitlines()[0])
    assert header[n.SECTION] == n.SECTION_HEADER
    assert header[n.HEADER_LAYOUT] == n.CHECKPOINT_LAYOUT == 2
    assert layout2.stat().st_size * 3 < LAYOUT1.stat().st_size


@pytest.mark.parametrize("sections", [None, ["event"], ["span"], ["metric"], ["span", "event"]])
def test_read_checkpoint_gives_the_same_records(layout2: Path, sections: list[str] | None) -> None:
    old = list(read_checkpoint(LAYOUT1, sections))
    assert old  # the fixture has every section
    assert list(read_checkpoint(layout2, sections)) == old


def test_the_dashboard_reads_the_same_run(layout2: Path) -> None:
    old = open_source(LAYOUT1).poll()
    new = open_source(layout2).poll()
    assert comparable(new) == comparable(old)
    # The fixture has what the views draw: failures, attempts, hits, slots, blocks.
    assert {t.state for t in old.tasks} == {"completed", "failed"}
    assert any(t.attempts for t in old.tasks) and any(t.cache == n.CACHE_HIT for t in old.tasks)
    assert any(t.failure for t in old.tasks) and any(t.slots for t in old.tasks)
    assert old.blocks and old.workflows and old.slot_snapshots and old.priorities


@pytest.mark.parametrize("tracks", ["workflow", "slot"])
def test_export_gives_the_same_chrome_trace(layout2: Path, tracks: str) -> None:
    old = chrome_trace(open_source(LAYOUT1).poll(), tracks)
    new = chrome_trace(open_source(layout2).poll(), tracks)
    assert new["traceEvents"] == old["traceEvents"]


def test_a_live_view_of_either_layout_is_the_same_at_every_point(tmp_path: Path) -> None:
    """Cut both files after the same records: the dashboard shows the same run."""
    old_lines = LAYOUT1.read_text().splitlines(keepends=True)
    new_lines = layout2_lines()
    per_record = layout1_lines_per_record()
    old_path, new_path = tmp_path / "old.telemetry.jsonl", tmp_path / "new.telemetry.jsonl"
    live_seen = 0
    for k in range(1, len(per_record) + 1):
        old_path.write_text("".join(old_lines[: sum(per_record[:k])]))
        new_path.write_text("".join(new_lines[: k + 1]))
        old, new = open_source(old_path).poll(), open_source(new_path).poll()
        assert comparable(new) == comparable(old), k
        live_seen += any(t.finished is None for t in new.tasks)
    assert live_seen > 10  # many cuts had tasks waiting or running


def test_a_growing_file_of_either_layout_reads_the_same(tmp_path: Path) -> None:
    """The live dashboard tails the file: both layouts, polled after each record."""
    old_lines = iter(LAYOUT1.read_text().splitlines(keepends=True))
    new_lines = iter(layout2_lines())
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_path = tmp_path / "old" / "run.telemetry.jsonl"
    new_path = tmp_path / "new" / "run.telemetry.jsonl"
    new_path.write_text(next(new_lines))  # the header
    old_path.write_text("")
    old_source, new_source = open_source(old_path.parent), open_source(new_path.parent)
    for count in layout1_lines_per_record():
        with old_path.open("a") as f:
            f.write("".join(next(old_lines) for _ in range(count)))
        with new_path.open("a") as f:
            f.write(next(new_lines))
        assert comparable(new_source.poll()) == comparable(old_source.poll())
    assert new_source.poll().ended


def test_a_torn_or_bad_task_line_is_skipped_and_counted(layout2: Path) -> None:
    text = layout2.read_text()
    layout2.write_text(text + '{"section":"task","uid":42}\n' + '{"section":"task","uid":"task.0')
    run = open_source(layout2).poll()
    assert len(run.tasks) == len(open_source(LAYOUT1).poll().tasks)
    assert any("incomplete" in p for p in run.problems)
    assert any("Skipped 1 line" in p for p in run.problems)
    assert len(list(read_checkpoint(layout2))) == len(list(read_checkpoint(LAYOUT1)))
