"""The HPC Campaign Manager: 24 workflow instances of 4 types on one GPU node.

A campaign on one node with (by default) 4 GPUs and 8 CPUs. Every workflow
instance runs in its own ``workflow_scope``; the engine's resource-aware
local backend hands out the GPU and CPU slots:

    workflow type   instances  resource  depends on
    simulate            4      GPU       -
    analyze             4      GPU       its simulate
    train               8      GPU       -
    evaluate            8      CPU       its train

Telemetry goes to a checkpoint file in ``--out`` (and to an OTLP collector
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set). Open the result with::

    asyncflow dashboard OUT_DIR

Run it: ``python examples/01-workflow_grouping.py --out campaign-run``
(``--scale 10`` for a campaign ten times the size, ``--duration 0.1`` for a
quick one; ``--resume`` to store every result in ``--out`` and, after a
kill, rerun only what had not finished). ``asyncflow demo`` runs this same file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncflow import LocalExecutionBackend, WorkflowEngine, current_slots, define_event
from asyncflow.cli import command_name

# One event per workflow instance, when its first task got its slots.
CampaignAssigned = define_event(
    "campaign.ResourceAssigned", workflow_type="", instance="", resource="", priority=0
)


@dataclass(frozen=True)
class WorkflowType:
    """One kind of workflow in the campaign."""

    name: str
    instances: int
    gpus: int
    cpus: int
    priority: int
    seconds: float  # run time of its main task at --duration 1
    depends_on: str | None = None


CAMPAIGN = (
    WorkflowType("simulate", 4, gpus=1, cpus=1, priority=3, seconds=4.0),
    WorkflowType("analyze", 4, gpus=1, cpus=1, priority=2, seconds=2.0, depends_on="simulate"),
    WorkflowType("train", 8, gpus=1, cpus=1, priority=1, seconds=3.0),
    WorkflowType("evaluate", 8, gpus=0, cpus=1, priority=0, seconds=1.0, depends_on="train"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the HPC campaign example with telemetry.")
    parser.add_argument("--out", type=Path, default=Path("asyncflow-demo"), help="output directory")
    parser.add_argument("--gpus", type=int, default=4, help="GPU slots on the node (default 4)")
    parser.add_argument("--cpus", type=int, default=8, help="CPU slots on the node (default 8)")
    parser.add_argument(
        "--scale", type=int, default=1, help="multiply the number of instances (default 1)"
    )
    parser.add_argument(
        "--duration", type=float, default=1.0, help="task time scale (default 1: under a minute)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the results a previous run stored in --out: after a kill, only what had "
        "not finished runs again",
    )
    args = parser.parse_args(argv)
    for flag in ("gpus", "cpus", "scale"):
        if getattr(args, flag) < (0 if flag == "gpus" else 1):
            parser.error(f"--{flag} must be at least {0 if flag == 'gpus' else 1}")
    if args.duration < 0:
        parser.error("--duration must not be negative")
    needed = max(t.gpus for t in CAMPAIGN)
    if args.gpus < needed:
        parser.error(f"--gpus must be at least {needed}: GPU workflows need a GPU slot")
    return args


async def run_campaign(args: argparse.Namespace) -> Path:
    """Run the campaign; returns the checkpoint file."""
    args.out.mkdir(parents=True, exist_ok=True)
    backend = await LocalExecutionBackend(cpus=args.cpus, gpus=args.gpus, name="node")
    # With --resume every task's result is stored in --out's result cache,
    # and a rerun takes what a killed run had finished from there.
    engine = await WorkflowEngine.create(
        backend=backend, work_dir=args.out, resume=args.out if args.resume else None
    )
    tel = await engine.start_telemetry(
        checkpoint_path=args.out, checkpoint_interval=1.0, resource_poll_interval=1.0
    )

    # One campaign.ResourceAssigned per workflow instance, from the engine's
    # own assignment events.
    announced: set[str] = set()
    kinds = {}  # workflow id -> workflow type

    def announce(event: Any) -> None:
        if event.event_type != "asyncflow.ResourceAssigned":
            return
        instance = event.attributes.get("asyncflow.workflow_id", "")
        kind = kinds.get(instance)
        if kind is None or instance in announced:
            return
        gpus = [s for s in event.slots if s.startswith("gpu")]
        if kind.gpus and not gpus:
            return  # its CPU-only preparation step: wait for the main task
        announced.add(instance)
        tel.emit(
            CampaignAssigned(
                workflow_type=kind.name,
                instance=instance,
                resource=",".join(gpus or event.slots),
                priority=kind.priority,
                attributes={"asyncflow.workflow_id": instance},
            )
        )

    tel.subscribe(announce)
    scale = args.duration

    @engine.function_task
    async def prepare(kind: str, index: int, upstream: Any) -> dict[str, Any]:
        # A dependent workflow starts only when the one it depends on ended.
        await asyncio.sleep(0.05 * scale)
        return {"kind": kind, "index": index, "slots": current_slots(), "upstream": upstream}

    @engine.executable_task
    async def md_run(inputs: dict[str, Any], seconds: float) -> str:
        # A stand-in for an MD engine: it sees only its own GPU.
        code = (
            "import os, time; "
            f"time.sleep({seconds!r}); "
            "print(os.environ.get('CUDA_VISIBLE_DEVICES', ''))"
        )
        return f'{sys.executable} -c "{code}"'

    @engine.function_task
    async def gpu_job(inputs: Any, seconds: float) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"slots": current_slots(), "inputs": inputs["kind"]}

    @engine.function_task
    async def cpu_job(inputs: Any, seconds: float) -> dict[str, Any]:
        time.sleep(seconds)  # noqa: ASYNC251 - stands in for CPU-bound work: it holds its worker thread
        return {"slots": current_slots(), "inputs": inputs["kind"]}

    async def instance(kind: WorkflowType, index: int, upstream: Any) -> Any:
        wf_id = f"{kind.name}-{index:03d}"
        kinds[wf_id] = kind
        slots = {"cpus": kind.cpus, "gpus": kind.gpus, "priority": kind.priority}
        async with engine.workflow_scope(workflow_id=wf_id, name=kind.name):
            inputs = prepare(kind.name, index, upstream, task_description={"cpus": 1, "gpus": 0})
            seconds = kind.seconds * scale
            if kind.name == "simulate":
                return md_run(inputs, seconds, task_description=slots)
            job = gpu_job if kind.gpus else cpu_job
            return job(inputs, seconds, task_description=slots)

    finals: dict[str, list[Any]] = {}
    for kind in CAMPAIGN:
        count = kind.instances * args.scale
        ups = finals.get(kind.depends_on or "", [None] * count)
        finals[kind.name] = [await instance(kind, i, ups[i % len(ups)]) for i in range(count)]
    try:
        async with engine.progress():  # a live bar on a terminal, log lines in a batch job
            outcomes = await asyncio.gather(
                *(f for fs in finals.values() for f in fs), return_exceptions=True
            )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            print(f"{len(failed)} workflow(s) failed, e.g. {failed[0]!r}", file=sys.stderr)
    finally:
        await engine.shutdown()
    checkpoint = tel.checkpoint_file
    assert checkpoint is not None
    return Path(checkpoint)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        print(f"exporting telemetry to {os.environ['OTEL_EXPORTER_OTLP_ENDPOINT']}")
    started = time.monotonic()
    checkpoint = asyncio.run(run_campaign(args))
    print(f"campaign finished in {time.monotonic() - started:.1f} s")
    print(f"checkpoint file: {checkpoint}")
    asyncflow = command_name()  # the command as this environment has it, so hints work
    print(f"open the dashboard: {asyncflow} dashboard {args.out}")
    print(f"or a static report: {asyncflow} report {args.out} -o {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
