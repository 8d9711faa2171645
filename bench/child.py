"""One measurement cell in a fresh process: ``python -m bench.child CONFIG WORKLOAD N``.

Runs the workload ``--repeat`` times and prints one JSON object on stdout:
the time of each repetition, the engine creation times, and the peak RSS of
this process. Every repetition is checked (task count, every result); a
failed check exits non-zero with the traceback on stderr, which the driver
prints, and the measurement counts as failed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
from typing import Any

from .workloads import ALL_CONFIGS, FILE_STATS, WORKLOADS, peak_rss_mb, run


async def _measure(
    config: str, workload: str, n: int, repeat: int, work_dir: str
) -> dict[str, Any]:
    seconds: list[float] = []
    create_seconds: list[float] = []
    stop_seconds: list[float] = []
    missing = 0
    for _ in range(repeat):
        gc.collect()
        timing = await run(config, workload, n, work_dir)
        seconds.append(timing["seconds"])
        create_seconds.append(timing["create_seconds"])
        stop_seconds.append(timing["stop_seconds"])
        missing += int(timing.get("spans_missing", 0))
    return {
        "seconds": seconds,
        "create_seconds": create_seconds,
        "stop_seconds": stop_seconds,
        "spans_missing": missing,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, check, and print the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.child", description=__doc__)
    parser.add_argument("config", choices=ALL_CONFIGS)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("n", type=int)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work-dir", help="parent of the engine's session directory")
    args = parser.parse_args(argv)
    base_rss = peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="asyncflow-bench-", dir=args.work_dir) as work_dir:
        out = asyncio.run(_measure(args.config, args.workload, args.n, args.repeat, work_dir))
    out.update(FILE_STATS)
    out.update(
        config=args.config,
        workload=args.workload,
        n=args.n,
        base_rss_mb=base_rss,
        # With a checkpoint file: the peak before it was read back to check it.
        peak_rss_mb=FILE_STATS.get("run_peak_rss_mb") or peak_rss_mb(),
    )
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
