"""``asyncflow export --format chrome-trace``: the Trace Event Format, checked by its rules."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from asyncflow.cli import main
from asyncflow.dashboard.export import chrome_trace
from asyncflow.telemetry import names as n

from ..ui import records as r
from .test_dashboard_paths import dag

_META = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}


def validate_trace(document: Any) -> dict[str, list[dict[str, Any]]]:
    """Check a Trace Event Format document (JSON object form); returns events by phase.

    The rules Perfetto's and chrome://tracing's importers rely on: an object
    with a ``traceEvents`` list; every event has ``ph``, ``name``, integer
    ``pid`` and ``tid``; complete events (``X``) have a non-negative ``ts``
    and ``dur`` in microseconds; metadata events (``M``) name a process or
    thread or give its sort index; counter events (``C``) carry numbers;
    and complete events on one track nest (two slices are disjoint or one
    holds the other), or a viewer drops or misdraws them.
    """
    assert isinstance(document, dict)
    assert document.get("displayTimeUnit") in ("ms", "ns")
    events = document["traceEvents"]
    assert isinstance(events, list)
    by_phase: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        assert event["ph"] in ("X", "M", "C"), event
        assert isinstance(event["name"], str) and event["name"]
        assert type(event["pid"]) is int and type(event["tid"]) is int
        by_phase[event["ph"]].append(event)
        if event["ph"] == "X":
            assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0
            assert isinstance(event.get("args", {}), dict)
        elif event["ph"] == "M":
            assert event["name"] in _META
            key = "name" if event["name"].endswith("_name") else "sort_index"
            assert key in event["args"]
        else:
            assert event["args"] and all(
                isinstance(v, (int, float)) for v in event["args"].values()
            )
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for event in by_phase["X"]:
        tracks[(event["pid"], event["tid"])].append((event["ts"], event["ts"] + event["dur"]))
    for slices in tracks.values():
        slices.sort(key=lambda s: (s[0], -s[1]))
        open_ends: list[float] = []
        for start, end in slices:
            while open_ends and open_ends[-1] <= start + 1e-3:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1] + 1e-3, (start, end, open_ends)
            open_ends.append(end)
    return by_phase


def test_one_complete_event_per_task_phase() -> None:
    run = dag()
    document = json.loads(json.dumps(chrome_trace(run)))  # loads as plain JSON
    events = validate_trace(document)
    complete = events["X"]
    assert len(complete) == 5 * 3  # every task of the DAG went through the three phases
    by_task: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for event in complete:
        by_task[event["args"]["task"]][event["cat"]] = (event["ts"], event["dur"])
    # C: created 0, resolved 2.1, started 2.5, finished 5 (seconds after the session start)
    assert by_task["C"][n.PHASE_DEPENDENCY_WAIT] == pytest.approx((0.0, 2.1e6), abs=1)
    assert by_task["C"][n.PHASE_QUEUE_WAIT] == pytest.approx((2.1e6, 0.4e6), abs=1)
    assert by_task["C"][n.PHASE_RUN_TIME] == pytest.approx((2.5e6, 2.5e6), abs=1)
    # One track per task, grouped in a process per workflow instance.
    names = {e["name"]: e["args"] for e in events["M"] if e["name"].endswith("_name")}
    assert "process_name" in names and "thread_name" in names
    tracks = {(e["pid"], e["tid"]) for e in complete}
    assert len(tracks) == 5 and len({pid for pid, _ in tracks}) == 1


def test_slot_tracks_and_the_waiting_counter() -> None:
    events = validate_trace(chrome_trace(dag(), tracks="slot"))
    complete = events["X"]
    assert len(complete) == 5  # one run per task, on the slot it held
    lanes = {e["tid"]: [] for e in complete}
    for e in complete:
        lanes[e["tid"]].append(e["args"]["task"])
    assert sorted(sorted(v) for v in lanes.values()) == [["A", "C"], ["B", "D", "E"]]
    assert max(e["args"]["tasks"] for e in events["C"]) == 2
    with pytest.raises(ValueError, match="tracks must be one of"):
        chrome_trace(dag(), tracks="node")


def test_export_command_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / f"run{n.CHECKPOINT_SUFFIX}"
    records = [r.session_span(), *r.campaign_spans()]
    checkpoint.write_text("".join(json.dumps(x) + "\n" for x in records))
    out = tmp_path / "trace.json"
    assert main(["export", str(checkpoint), "--format", "chrome-trace", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    events = validate_trace(json.loads(out.read_text()))
    failed = [e for e in events["X"] if e["args"]["state"] == "failed"]
    assert failed and failed[0]["args"]["error"] == "ValueError: evaluation set is empty"
    garbage = tmp_path / f"garbage{n.CHECKPOINT_SUFFIX}"
    garbage.write_text("nothing\n")
    assert main(["export", str(garbage), "-o", str(tmp_path / "t.json")]) == 1
    assert "not an asyncflow checkpoint file" in capsys.readouterr().err
