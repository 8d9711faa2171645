"""The same workflow on a Dask cluster: a local one, or any scheduler you name.

RHAPSODY's ``DaskExecutionBackend`` plugs into the engine unchanged. Without
``--scheduler`` it starts a local cluster of worker processes on 127.0.0.1
(dashboard on a free loopback port) and stops it at the end. With
``--scheduler tcp://HOST:PORT`` it connects to a running scheduler and leaves
it running. Function tasks travel to the workers with cloudpickle; the
executable task runs ``hostname`` on whichever worker picks it up.

Needs the ``hpc`` extra (``pip install '.[hpc]'`` in a clone). Run it from
a checkout::

    python examples/06-dask_cluster.py --workers 2 --tasks 8

On a cluster (see docs/backends.md), with ``dask scheduler`` on HEAD and
``dask worker tcp://HEAD:8786`` on the compute nodes::

    python examples/06-dask_cluster.py --scheduler tcp://HEAD:8786 --work-dir /shared/runs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from urllib.parse import urlsplit

from asyncflow import WorkflowEngine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a workflow on a Dask cluster.")
    parser.add_argument("--scheduler", help="address of a running scheduler, tcp://HOST:PORT")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (2)")
    parser.add_argument("--tasks", type=int, default=8, help="sampling tasks (default 8)")
    parser.add_argument("--work-dir", default=".", help="shared by all nodes (default .)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.tasks < 1:
        parser.error("--workers and --tasks must be at least 1")
    if args.scheduler:
        address = urlsplit(args.scheduler)
        port = address.netloc.rpartition(":")[2]
        if address.scheme not in ("tcp", "tls") or not address.hostname or not port.isdigit():
            parser.error(f"--scheduler must look like tcp://HOST:PORT, not {args.scheduler!r}")
    return args


async def run(args: argparse.Namespace) -> None:
    try:
        from rhapsody.backends import DaskExecutionBackend
    except ImportError:
        sys.exit("this example needs the 'hpc' extra: pip install '.[hpc]' in a clone of asyncflow")
    if args.scheduler:
        resources = {"address": args.scheduler}
    else:  # worker processes on the loopback interface only
        resources = {
            "n_workers": args.workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
        }
    backend = await DaskExecutionBackend(resources=resources)
    async with await WorkflowEngine.create(backend=backend, work_dir=args.work_dir) as engine:

        @engine.function_task
        async def sample(seed: int, points: int) -> tuple[int, int]:
            rng = random.Random(seed)
            inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1 for _ in range(points))
            return os.getpid(), inside

        @engine.function_task
        async def estimate(parts: list[tuple[int, int]], points: int) -> float:
            return 4 * sum(inside for _, inside in parts) / (points * len(parts))

        @engine.executable_task
        async def where() -> str:
            return "hostname"

        parts = [sample(seed, 20_000) for seed in range(args.tasks)]
        pi = await estimate(parts, 20_000)
        pids = {pid for pid, _ in await asyncio.gather(*parts)}
        print(f"pi is about {pi:.3f}, from {args.tasks} tasks in worker processes {sorted(pids)}")
        print(f"this process is {os.getpid()}; an executable ran on {(await where()).strip()}")


if __name__ == "__main__":  # Dask starts worker processes that import this file
    asyncio.run(run(parse_args()))
