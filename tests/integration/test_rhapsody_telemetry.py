"""RHAPSODY's telemetry API, as the older AsyncFlow exposed it, on this engine.

Events from RHAPSODY's ``define_event``/``make_event`` go through
``telemetry.emit`` into the checkpoint file, to a real OTLP receiver and to
subscribers like the engine's own; subscribers read RHAPSODY's fields
(``duration_seconds``, ``resource_scope``, ``gpu_id``, disk and network);
``summary()`` has RHAPSODY's ``tasks``, ``duration`` and ``duration_seconds``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # in CI the 'hpc' extra is installed: never skip there
    pytest.importorskip("rhapsody", reason="needs the 'hpc' extra (rhapsody-py)")

from rhapsody.telemetry import define_event as rhapsody_define_event
from rhapsody.telemetry.events import make_event

from asyncflow import LocalExecutionBackend, WorkflowEngine, define_event
from asyncflow.telemetry import names, read_checkpoint

from ..support.otlp_receiver import GrpcReceiver

StageTimer = rhapsody_define_event("compat.StageTimer", stage=str, duration_ms=float)
Checkpoint = rhapsody_define_event("compat.ModelCheckpoint", step=(int, -1), loss=(float, 9.5))


def test_define_event_reads_rhapsody_field_specs() -> None:
    native = define_event("compat.Native", step=(int, -1), score=float, label=str, n=int, obj=dict)
    event = native()
    assert (event.step, event.score, event.label, event.n, event.obj) == (-1, 0.0, "", 0, None)
    plain = define_event("compat.Plain", tags=("a", "b"), count=3)
    assert plain().tags == ("a", "b") and plain().count == 3  # not a (type, default) pair


async def test_rhapsody_events_land_everywhere_like_native_ones(tmp_path: Path) -> None:
    seen: list[Any] = []
    with GrpcReceiver() as receiver:
        engine = await WorkflowEngine.create(
            backend=await LocalExecutionBackend(), work_dir=tmp_path
        )
        try:
            telemetry = await engine.start_telemetry(
                checkpoint_path=tmp_path / "telemetry",
                otlp_endpoint=receiver.endpoint,
                otlp_protocol="grpc",
            )
            telemetry.subscribe(seen.append)
            recorded = telemetry.emit(
                make_event(
                    StageTimer,
                    session_id=telemetry.session_id,
                    backend="etl",
                    stage="ingest",
                    duration_ms=12.5,
                )
            )
            telemetry.emit(
                make_event(Checkpoint, session_id=telemetry.session_id, backend="train", loss=0.25)
            )
            with pytest.raises(TypeError, match="takes an Event"):
                telemetry.emit({"event_type": "x.Y"})
        finally:
            await engine.shutdown()
        receiver.wait_for(lambda: any(s["name"] == "session" for s in receiver.spans()))
        session = next(s for s in receiver.spans() if s["name"] == "session")

    assert recorded.event_type == "compat.StageTimer" and recorded.stage == "ingest"
    mine = [e for e in seen if e.event_type.startswith("compat.")]
    assert [(e.event_type, e.backend) for e in mine] == [
        ("compat.StageTimer", "etl"),
        ("compat.ModelCheckpoint", "train"),
    ]
    assert mine[0].duration_ms == 12.5 and mine[0].session_id == engine.uid
    assert (mine[1].step, mine[1].loss) == (-1, 0.25)
    assert isinstance(mine[0].event_id, str) and len(mine[0].event_id) == 32  # RHAPSODY's id

    lines = [
        line
        for line in read_checkpoint(tmp_path / "telemetry", sections=[names.SECTION_EVENT])
        if line["name"].startswith("compat.")
    ]
    assert [(line["name"], line.get("stage"), line.get("step")) for line in lines] == [
        ("compat.StageTimer", "ingest", None),
        ("compat.ModelCheckpoint", None, -1),
    ]
    assert lines[0]["duration_ms"] == 12.5 and lines[0]["backend"] == "etl"

    notes = dict(zip(session["events"], session["event_attributes"], strict=True))
    assert notes["compat.StageTimer"]["stage"] == "ingest"
    assert notes["compat.StageTimer"]["duration_ms"] == 12.5
    assert notes["compat.ModelCheckpoint"]["step"] == -1
    assert notes["compat.ModelCheckpoint"]["backend"] == "train"


async def test_subscribers_and_summary_read_rhapsody_fields(tmp_path: Path) -> None:
    seen: list[Any] = []
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    try:
        telemetry = await engine.start_telemetry(resource_poll_interval=0.05)
        telemetry.subscribe(seen.append)

        @engine.function_task
        async def work(seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

        @engine.function_task
        async def explode() -> None:
            raise ValueError("boom")

        assert await asyncio.gather(work(0.2), work(0.3)) == [0.2, 0.3]
        with pytest.raises(ValueError):
            await explode()
        deadline = asyncio.get_running_loop().time() + 20
        while sum(e.event_type == names.EVENT_RESOURCE_UPDATE for e in seen) < 3:
            assert asyncio.get_running_loop().time() < deadline, "no resource samples"
            await asyncio.sleep(0.02)
        summary = telemetry.summary()
        assert summary["tasks"] == {
            "submitted": 3,
            "completed": 2,
            "failed": 1,
            "canceled": 0,
            "running": 0,
        }
        duration = summary["duration"]
        assert set(duration) == {"total_seconds", "mean_seconds", "min_seconds", "max_seconds"}
        assert summary["duration_seconds"] > 0
    finally:
        await engine.shutdown()

    completed = [e for e in seen if e.event_type == names.EVENT_TASK_COMPLETED]
    # From the RUNNING report to the end: a little under the sleep at most.
    assert len(completed) == 2 and all(e.duration_seconds > 0.1 for e in completed)
    failed = next(e for e in seen if e.event_type == names.EVENT_TASK_FAILED)
    assert failed.error_type == "ValueError" and failed.duration_seconds >= 0.0
    # summary()["duration"] is made of the same run times.
    runs = [e.duration_seconds for e in [*completed, failed]]
    assert duration["total_seconds"] == pytest.approx(sum(runs), abs=1e-5)
    assert duration["mean_seconds"] == pytest.approx(sum(runs) / 3, abs=1e-5)
    assert duration["min_seconds"] == pytest.approx(min(runs), abs=1e-5)
    assert duration["max_seconds"] == pytest.approx(max(runs), abs=1e-5)
    ended = next(e for e in seen if e.event_type == names.EVENT_SESSION_ENDED)
    assert ended.duration_seconds >= 0.3  # the two tasks ran side by side
    updates = [e for e in seen if e.event_type == names.EVENT_RESOURCE_UPDATE]
    for update in updates:
        assert update.resource_scope == "per_node" and update.gpu_id is None
        assert update.cpu_percent is not None and update.memory_percent is not None
    later = updates[-1]
    for field in ("disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes"):
        value = getattr(later, field)
        assert value is None or value >= 0.0, field
    assert any(u.net_sent_bytes is not None for u in updates)  # loopback counters exist here
