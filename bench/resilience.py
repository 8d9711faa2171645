"""Retries, caching, resume and progress: what they cost.

``python -m bench.resilience`` (``--quick`` for a smoke run) measures, each
in fresh child processes, rounds interleaved, medians reported:

- ``cache``: the independent and chain workloads at 10,000 tasks on the
  engine with the local (threads) backend, without the cache, with
  ``cache=True`` and a cold (empty) store, and with a warm store (every task
  a hit), as ratios to the run without cache.
- ``resume``: a store holding the results of 100,000 tasks; a rerun of the
  campaign (those tasks plus 1,000 new ones) with ``resume=``: seconds from
  the start (engine creation) to the first new task running, and to the last
  cache hit.
- ``progress``: the telemetry workload (independent tasks, telemetry with the
  checkpoint file) at 10,000 and 100,000 tasks, with the progress reporter
  on (log mode, an update every 0.5 s) against without it.

Every run is checked (task count and every value).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from asyncflow import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from asyncflow.cache import ResultCache, code_digest, task_key

CACHE_MODES = ("nocache", "cold", "warm")
NEW_TASKS = 1000


async def work(i: int, *deps: Any) -> int:
    """Every task of these workloads: its value is its index."""
    return i


def _build(engine: WorkflowEngine, workload: str, n: int) -> list[Any]:
    task = engine.function_task(work)
    if workload == "independent":
        return [task(i) for i in range(n)]
    futures = [task(0)]
    for i in range(1, n):
        futures.append(task(i, futures[-1]))
    return futures


async def _campaign(work_dir: str, workload: str, n: int, **create: Any) -> float:
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=work_dir, **create
    )
    try:
        start = time.perf_counter()
        results = await asyncio.gather(*_build(engine, workload, n))
        elapsed = time.perf_counter() - start
    finally:
        await engine.shutdown()
    if results != list(range(n)):
        raise AssertionError(f"{workload} {n}: wrong results")
    return elapsed


async def measure_cache(workload: str, n: int, mode: str, work_dir: str) -> float:
    if mode == "nocache":
        return await _campaign(work_dir, workload, n)
    if mode == "warm":  # fill the store first, untimed
        await _campaign(work_dir, workload, n, cache=True)
    return await _campaign(work_dir, workload, n, cache=True)


async def measure_resume(n: int, work_dir: str) -> dict[str, float]:
    store = ResultCache.open(work_dir)
    code = code_digest(work)
    store.put_many((task_key("work", code, (i,), {}), "work", i, "earlier", "t") for i in range(n))
    store.close()
    first_new: list[float] = []
    t0 = time.perf_counter()

    async def new_work(i: int) -> int:
        if not first_new:
            first_new.append(time.perf_counter())
        return i

    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=work_dir, resume=work_dir
    )
    try:
        old = engine.function_task(work)
        new = engine.function_task(new_work)
        hits = [old(i) for i in range(n)]
        hits_done = time.perf_counter()
        fresh = [new(n + i) for i in range(NEW_TASKS)]
        results = await asyncio.gather(*hits, *fresh)
        total = time.perf_counter() - t0
    finally:
        await engine.shutdown()
    if results != list(range(n + NEW_TASKS)) or engine.task_counts().cached != n:
        raise AssertionError("resume: wrong results or hits")
    return {
        "first_new_s": first_new[0] - t0,
        "hits_s": hits_done - t0,
        "total_s": total,
    }


async def measure_progress(n: int, backend: str, progress: bool, work_dir: str) -> float:
    be = NoopExecutionBackend() if backend == "noop" else await LocalExecutionBackend()
    engine = await WorkflowEngine.create(backend=be, work_dir=work_dir)
    await engine.start_telemetry(checkpoint_path=work_dir)
    task = engine.function_task(work)
    sink = io.StringIO()
    try:
        start = time.perf_counter()
        if progress:
            async with engine.progress(stream=sink, tty=False, interval=0.5):
                results = await asyncio.gather(*(task(i) for i in range(n)))
        else:
            results = await asyncio.gather(*(task(i) for i in range(n)))
        elapsed = time.perf_counter() - start
    finally:
        await engine.shutdown()
    expected = ["Dummy Output"] * n if backend == "noop" else list(range(n))
    if results != expected or (progress and "asyncflow progress" not in sink.getvalue()):
        raise AssertionError("progress: wrong results or no report")
    return elapsed


def child(argv: list[str]) -> None:
    """``python -m bench.resilience --child KIND ...``: one measurement, JSON on stdout."""
    kind, *rest = argv
    with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as work_dir:
        if kind == "cache":
            out: Any = asyncio.run(measure_cache(rest[0], int(rest[1]), rest[2], work_dir))
        elif kind == "resume":
            out = asyncio.run(measure_resume(int(rest[0]), work_dir))
        else:
            out = asyncio.run(measure_progress(int(rest[0]), rest[1], rest[2] == "on", work_dir))
    print(json.dumps(out))


def _run_child(args: list[str], timeout: float) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "bench.resilience", "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resilience", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    rounds = 2 if args.quick else args.rounds
    cache_n = 2000 if args.quick else 10_000
    resume_n = 10_000 if args.quick else 100_000
    progress_ns = (5000,) if args.quick else (10_000, 100_000)
    data: dict[str, Any] = {"cache": {}, "resume": [], "progress": {}}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", file=sys.stderr)
        for workload in ("independent", "chain"):
            modes = CACHE_MODES[r % 3 :] + CACHE_MODES[: r % 3]  # rotate the order
            for mode in modes:
                t = _run_child(["cache", workload, str(cache_n), mode], 600)
                data["cache"].setdefault(f"{workload}/{mode}", []).append(t)
        data["resume"].append(_run_child(["resume", str(resume_n)], 900))
        for n in progress_ns:
            for backend in ("noop", "local"):
                for state in ("off", "on") if r % 2 else ("on", "off"):
                    t = _run_child(["progress", str(n), backend, state], 900)
                    data["progress"].setdefault(f"{backend}/{n}/{state}", []).append(t)
    _report(data, cache_n, resume_n)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    return 0


def _ratio(data: dict[str, list[float]], key: str, base: str) -> str:
    ratios = [a / b for a, b in zip(data[key], data[base], strict=True)]
    return f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"


def _report(data: dict[str, Any], cache_n: int, resume_n: int) -> None:
    print(f"\nResult cache, engine-local, N = {cache_n:,} (median s; ratio to nocache, per round)")
    for workload in ("independent", "chain"):
        cells = data["cache"]
        base = f"{workload}/nocache"
        for mode in CACHE_MODES:
            key = f"{workload}/{mode}"
            print(
                f"  {workload:<12} {mode:<8} {statistics.median(cells[key]):8.3f} s"
                f"   x{_ratio(cells, key, base)}"
            )
    print(f"\nResume from a store of {resume_n:,} results (+{NEW_TASKS:,} new tasks), median s")
    for field in ("first_new_s", "hits_s", "total_s"):
        values = [m[field] for m in data["resume"]]
        spread = f"[{min(values):.3f}-{max(values):.3f}]"
        print(f"  {field:<12} {statistics.median(values):8.3f}  {spread}")
    print("\nProgress reporter on (log mode, every 0.5 s), telemetry with checkpoint file")
    cells = data["progress"]
    for key in sorted({k.rsplit("/", 1)[0] for k in cells}):
        on, off = f"{key}/on", f"{key}/off"
        print(
            f"  {key:<14} off {statistics.median(cells[off]):7.3f} s  on "
            f"{statistics.median(cells[on]):7.3f} s   x{_ratio(cells, on, off)}"
        )


if __name__ == "__main__":
    sys.exit(main())
