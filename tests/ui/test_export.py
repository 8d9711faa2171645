"""``asyncflow export`` of a run recorded by the real engine (no browser)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from asyncflow.cli import main
from asyncflow.telemetry import names, read_checkpoint

from ..unit.test_dashboard_export import validate_trace


@pytest.mark.usefixtures("dashboard_extra")
def test_export_of_a_real_run_has_every_phase(recorded_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    assert main(["export", str(recorded_run), "-o", str(out)]) == 0
    events = validate_trace(json.loads(out.read_text()))
    expected = 0
    for span in read_checkpoint(recorded_run, sections=[names.SECTION_SPAN]):
        if span["attributes"].get(names.LEVEL) != names.LEVEL_TASK:
            continue
        steps = {e["name"] for e in span["events"]}
        # dependency wait and queue wait once resolved, run time once started
        expected += 2 * (names.SPAN_EVENT_RESOLVED in steps) + (names.SPAN_EVENT_STARTED in steps)
    assert len(events["X"]) == expected > 0
    # A task's phases follow each other on its track exactly: no gap, no overlap.
    tracks: dict[tuple[int, int], list[dict[str, float]]] = {}
    for event in events["X"]:
        tracks.setdefault((event["pid"], event["tid"]), []).append(event)
    for phases in tracks.values():
        phases.sort(key=lambda e: e["ts"])
        for before, after in itertools.pairwise(phases):
            assert after["ts"] == pytest.approx(before["ts"] + before["dur"], abs=1e-6)
    slot = tmp_path / "slots.json"
    assert main(["export", str(recorded_run), "--tracks", "slot", "-o", str(slot)]) == 0
    validate_trace(json.loads(slot.read_text()))
