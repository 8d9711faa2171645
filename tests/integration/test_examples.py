"""Every example runs to completion; the campaign keeps its promises."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from asyncflow.telemetry import names, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def started_at(span: dict[str, Any]) -> int:
    return int(next(e["time_ns"] for e in span["events"] if e["name"] == "started"))


def max_overlap(intervals: list[tuple[int, int, int]]) -> int:
    points = sorted(
        [(start, count) for start, _, count in intervals]
        + [(end, -count) for _, end, count in intervals]
    )
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    return peak


def test_campaign_example(tmp_path: Path) -> None:
    out = tmp_path / "campaign"
    done = run_example(
        "01-workflow_grouping.py", "--out", str(out), "--duration", "0.02", "--gpus", "2"
    )
    assert done.returncode == 0, done.stderr
    assert "checkpoint file:" in done.stdout and f"asyncflow dashboard {out}" in done.stdout
    (checkpoint,) = out.glob("*.telemetry.jsonl")
    spans = list(read_checkpoint(checkpoint, ["span"]))
    workflows = [s for s in spans if s["attributes"][names.LEVEL] == names.LEVEL_WORKFLOW]
    assert Counter(s["attributes"][names.WORKFLOW_NAME] for s in workflows) == {
        "simulate": 4,
        "analyze": 4,
        "train": 8,
        "evaluate": 8,
    }
    assert all(s["attributes"][names.WORKFLOW_RESULT] == "completed" for s in workflows)
    tasks = [s for s in spans if s["attributes"][names.LEVEL] == names.LEVEL_TASK]
    # The GPU busy slots never exceed the capacity (2 here).
    runs = []
    for span in tasks:
        started = started_at(span)
        gpus = [s for s in span["attributes"][names.TASK_SLOTS] if s.startswith("gpu")]
        runs.append((started, span["end_ns"], len(gpus)))
    assert max_overlap(runs) <= 2
    assert max(count for *_, count in runs) == 1
    # analyze/evaluate instances never start before the instance they depend on ended.
    by_wf: dict[str, list[dict[str, Any]]] = {}
    for span in tasks:
        by_wf.setdefault(span["attributes"][names.WORKFLOW_ID], []).append(span)
    for downstream, upstream in (("analyze", "simulate"), ("evaluate", "train")):
        count = 4 if downstream == "analyze" else 8
        for i in range(count):
            up_end = max(s["end_ns"] for s in by_wf[f"{upstream}-{i:03d}"])
            first_start = min(s["start_ns"] for s in by_wf[f"{downstream}-{i:03d}"])
            down_started = min(started_at(s) for s in by_wf[f"{downstream}-{i:03d}"])
            assert down_started >= up_end, (downstream, i)
            assert first_start <= up_end  # registered early, waiting on its dependency
    events = Counter(r["name"] for r in read_checkpoint(checkpoint, ["event"]))
    assert events["campaign.ResourceAssigned"] == 24
    metrics = list(read_checkpoint(checkpoint, ["metric"]))
    assert metrics[0]["resource_slots"]["node/gpu/idle"] == 2


def test_campaign_example_checks_its_arguments() -> None:
    bad = run_example("01-workflow_grouping.py", "--gpus", "0")
    assert bad.returncode == 2 and "--gpus must be at least 1" in bad.stderr
    bad = run_example("01-workflow_grouping.py", "--scale", "0")
    assert bad.returncode == 2 and "--scale must be at least 1" in bad.stderr
