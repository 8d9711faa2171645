"""Several independent workflows at once, each in its own ``workflow_scope``.

Every sample goes through the same three-step pipeline (fetch, clean,
analyse); a quality-control workflow of another type runs beside them. Each
workflow instance is a plain coroutine that opens
``engine.workflow_scope(name=...)``, and ``asyncio.gather`` runs them all
concurrently: the run takes about as long as one pipeline, not the sum.

``name`` is the workflow's *type* (a few distinct values; it becomes a metric
label), the id is per instance. Every task registered inside a scope records
its workflow id, even when several scopes are open at the same time.

Run it from a checkout::

    python examples/03-concurrent_workflows.py --samples 6 --seconds 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

from asyncflow import WorkflowEngine


async def main(samples: int, seconds: float) -> None:
    async with await WorkflowEngine.create() as engine:

        @engine.function_task
        async def fetch(sample: int) -> list[float]:
            await asyncio.sleep(seconds)  # stands in for I/O
            return [float(sample * i) for i in range(10)]

        @engine.function_task
        async def clean(values: list[float]) -> list[float]:
            await asyncio.sleep(seconds)
            return [v for v in values if v > 0]

        @engine.function_task
        async def analyse(values: list[float]) -> float:
            await asyncio.sleep(seconds)
            return sum(values) / len(values)

        async def pipeline(sample: int) -> dict[str, Any]:
            async with engine.workflow_scope(name="pipeline") as wf_id:
                mean = await analyse(clean(fetch(sample)))
            return {"workflow": wf_id, "sample": sample, "mean": mean}

        async def quality_control() -> dict[str, Any]:
            async with engine.workflow_scope(workflow_id="qc-nightly", name="qc") as wf_id:
                checks = await asyncio.gather(*(fetch(i) for i in range(3)))
            return {"workflow": wf_id, "checks": len(checks)}

        started = time.monotonic()
        results = await asyncio.gather(
            quality_control(), *(pipeline(i + 1) for i in range(samples))
        )
        elapsed = time.monotonic() - started

        for result in results:
            print(result)
        # Each task recorded its workflow instance and type.
        descriptions = [c["description"] for c in engine.components.values()]
        per_type = Counter(d["metadata"]["workflow_name"] for d in descriptions)
        instances = {d["workflow_id"] for d in descriptions}
        print(f"tasks per workflow type: {dict(per_type)}; {len(instances)} instances")
        print(
            f"{len(results)} workflows in {elapsed:.2f} s "
            f"(one pipeline alone takes about {3 * seconds:.2f} s)"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="pipeline instances (default 4)")
    parser.add_argument("--seconds", type=float, default=0.2, help="time per step (default 0.2)")
    args = parser.parse_args()
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    if args.seconds < 0:
        parser.error("--seconds must not be negative")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    asyncio.run(main(arguments.samples, arguments.seconds))
