"""Run a workflow on an HPC machine with RADICAL-Pilot, through RHAPSODY.

RADICAL-Pilot submits one pilot job to the batch system and places the
tasks inside it: hundreds of tasks, one trip through the queue. RHAPSODY's
RadicalExecutionBackend wraps it. Executable tasks go to the pilot, each
asking for ranks, cores and GPUs with RADICAL-Pilot's own task_description
keys; the Python step that summarises them runs on the login node (function
tasks on RADICAL-Pilot need its Raptor mode).

Steps on the machine's login node:

  1. pip install '.[hpc]' 'rhapsody-py[radical-pilot]'
  2. radical-stack                  # prints the installed RADICAL versions
  3. pick the resource label of your machine from RADICAL-Pilot's resource
     configurations (local.localhost runs the pilot on this node)
  4. python examples/07-radical_pilot.py --resource local.localhost --cores 4
     python examples/07-radical_pilot.py --resource SITE.MACHINE \\
         --project ALLOCATION --queue QUEUE --cores 56 --gpus 8 --runtime 30
  5. the pilot's logs are in a session directory under the current one

Check the workflow's shape first, without RADICAL-Pilot:

  python examples/07-radical_pilot.py --dry-run
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

from asyncflow import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resource", default="local.localhost", help="SITE.MACHINE label")
    parser.add_argument("--project", help="allocation to charge (batch machines)")
    parser.add_argument("--queue", help="batch queue or partition")
    parser.add_argument("--runtime", type=int, default=15, help="pilot wall time, minutes")
    parser.add_argument("--cores", type=int, default=4, help="cores of the pilot")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs of the pilot")
    parser.add_argument("--tasks", type=int, default=4, help="simulation tasks")
    parser.add_argument("--dry-run", action="store_true", help="no-op backend, runs nothing")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[\w-]+\.[\w-]+", args.resource):
        parser.error(f"--resource must look like SITE.MACHINE, not {args.resource!r}")
    for flag, lowest in (("runtime", 1), ("cores", 1), ("gpus", 0), ("tasks", 1)):
        if getattr(args, flag) < lowest:
            parser.error(f"--{flag} must be at least {lowest}")
    return args


async def make_pilot_backend(args: argparse.Namespace) -> Any:
    if args.dry_run:
        return NoopExecutionBackend(name="pilot")
    try:
        import radical.pilot  # noqa: F401 - only to say clearly what is missing
        from rhapsody.backends import RadicalExecutionBackend
    except ImportError:
        sys.exit("RADICAL-Pilot is not installed: pip install 'rhapsody-py[radical-pilot]'")
    keys = ("resource", "runtime", "cores", "gpus", "project", "queue")
    pilot = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    return await RadicalExecutionBackend(resources=pilot, name="pilot")


async def main(args: argparse.Namespace) -> None:
    backends = [await make_pilot_backend(args), await LocalExecutionBackend(name="login")]
    async with await WorkflowEngine.create(backend=backends) as engine:

        @engine.executable_task  # the default backend: the pilot
        async def simulate(index: int) -> str:
            return "hostname"  # stands in for your simulation's command line

        @engine.function_task(backend="login")
        async def summarise(outputs: list[str]) -> str:
            nodes = sorted({out.strip() for out in outputs})
            return f"{len(outputs)} tasks ran on {len(nodes)} node(s): {', '.join(nodes)}"

        per_task = {"ranks": 1, "cores_per_rank": 1, "gpus_per_rank": 1 if args.gpus else 0}
        runs = [simulate(i, task_description=per_task) for i in range(args.tasks)]
        print(await summarise(runs))


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
