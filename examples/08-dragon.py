"""Run a workflow on the Dragon distributed runtime, through RHAPSODY.

Dragon runs Python functions and processes across the nodes of an
allocation; RHAPSODY's DragonExecutionBackend hands it the engine's tasks
through Dragon's batch API. Function tasks run natively on Dragon's workers,
executables as Dragon processes, and a task whose task_description has
process_templates runs as a parallel job of that many ranks.

The whole program runs under the Dragon launcher, not plain python:

  1. pip install '.[hpc]' 'rhapsody-py[dragon]'
  2. get an allocation, e.g. salloc --nodes 2 --time 30 (Slurm); Dragon
     finds the nodes of the allocation by itself
  3. dragon examples/08-dragon.py --nodes 2 --tasks 16 --ranks 4
     (on a single machine: dragon examples/08-dragon.py --nodes 1)
  4. if a run dies half-way, clean up its processes with dragon-cleanup

Check the workflow's shape first, without Dragon:

  python examples/08-dragon.py --dry-run
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from typing import Any

from asyncflow import NoopExecutionBackend, WorkflowEngine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, help="nodes to use (default: the allocation)")
    parser.add_argument("--tasks", type=int, default=8, help="function tasks (default 8)")
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the parallel job (2)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per task (600)")
    parser.add_argument("--dry-run", action="store_true", help="no-op backend, runs nothing")
    args = parser.parse_args(argv)
    for flag in ("nodes", "tasks", "ranks"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


async def make_backend(args: argparse.Namespace) -> Any:
    if args.dry_run:
        return NoopExecutionBackend(name="dragon")
    if importlib.util.find_spec("dragon") is None:
        sys.exit("Dragon is not installed: pip install 'rhapsody-py[dragon]'")
    from rhapsody.backends import DragonExecutionBackend

    batch = {"num_nodes": args.nodes} if args.nodes else {}
    try:
        return await DragonExecutionBackend(batch_kwargs=batch)
    except (RuntimeError, OSError) as exc:
        sys.exit(f"Dragon did not start ({exc}); run this file with: dragon {sys.argv[0]}")


async def main(args: argparse.Namespace) -> None:
    async with await WorkflowEngine.create(backend=await make_backend(args)) as engine:
        limits = {"timeout": args.timeout}

        @engine.function_task
        async def score(candidate: int) -> float:
            return (candidate * 7919 % 1000) / 1000

        @engine.executable_task
        async def rank_hosts(scores: list[float]) -> str:
            return "hostname"  # one process per rank: each prints its node

        scores = [score(i, task_description=limits) for i in range(args.tasks)]
        job = {**limits, "process_templates": [(args.ranks, {})]}
        hosts = await rank_hosts(scores, task_description=job)
        best = max(await asyncio.gather(*scores))
        print(f"best of {args.tasks} scores: {best}; the {args.ranks}-rank job said {hosts!r}")


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
