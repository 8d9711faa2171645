"""Custom events with RHAPSODY's define_event/make_event, emitted through the
engine's telemetry (the older AsyncFlow's ``00-telemetry_subscribe_basic.py``,
fewer and shorter stages)."""

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor

from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.telemetry import define_event
from rhapsody.telemetry.events import make_event

from asyncflow import WorkflowEngine

StageTimer = define_event(
    "etl.StageTimer",
    stage=str,
    duration_ms=float,
)


async def main():
    backend = await ConcurrentExecutionBackend(ProcessPoolExecutor(max_workers=2))
    flow = await WorkflowEngine.create(backend)
    telemetry = await flow.start_telemetry(
        resource_poll_interval=0.5,
        checkpoint_path="telemetry-output",
    )
    timers = []
    telemetry.subscribe(lambda e: timers.append(e) if e.event_type == "etl.StageTimer" else None)

    @flow.function_task
    async def ingest(source: str) -> dict:
        await asyncio.sleep(0.05)
        return {"source": source, "rows": list(range(200))}

    @flow.function_task
    async def validate(data: dict) -> dict:
        return {**data, "valid_rows": [r for r in data["rows"] if r % 3 != 0]}

    @flow.function_task
    async def report(validated: dict) -> dict:
        return {"source": validated["source"], "count": len(validated["valid_rows"])}

    async def run_workflow(wf_id: int) -> dict:
        t = time.time()
        raw = ingest(f"source_{wf_id}")
        val = validate(raw)
        result = await report(val)
        telemetry.emit(
            make_event(
                StageTimer,
                session_id=telemetry.session_id,
                backend="etl",
                stage="workflow_total",
                duration_ms=(time.time() - t) * 1000,
            )
        )
        return result

    n = 5
    results = await asyncio.gather(*(run_workflow(i) for i in range(n)))
    print(f"counts: {sorted({r['count'] for r in results})}")

    summary = telemetry.summary()
    print(f"Tasks — {summary['tasks']}")
    if summary.get("duration"):
        d = summary["duration"]
        print(
            f"mean and max known: {d['mean_seconds'] > 0 and d['max_seconds'] >= d['mean_seconds']}"
        )
    print(f"stage timers seen: {len(timers)} {sorted({t.stage for t in timers})}")

    await flow.shutdown()
    await telemetry.stop()

    from pathlib import Path

    jsonl = next(Path("telemetry-output").glob("*.jsonl"))
    lines = [line for line in jsonl.read_text().splitlines() if '"etl.StageTimer"' in line]
    print(f"stage timer lines in the checkpoint: {len(lines)}")


if __name__ == "__main__":
    asyncio.run(main())
