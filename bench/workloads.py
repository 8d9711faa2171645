"""The workloads and the configurations that run them (child side).

A workload is a dependency shape: :func:`build` calls ``node(*deps)`` once per
task, in an order where every dependency exists before its dependents, and
returns the awaitables. Each configuration supplies its own ``node``, so the
plain baselines and the engine run exactly the same graph.

Only the building of the graph and the awaiting of every task are timed;
creating the engine or the pool and shutting it down happen outside the
timed region. :func:`run` checks every result.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asyncflow import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from asyncflow.telemetry import read_checkpoint

__all__ = [
    "ALL_CONFIGS",
    "CONFIGS",
    "DAG_WORKLOADS",
    "DASK_CONFIGS",
    "DASK_WORKLOADS",
    "DEFAULT_WORKLOADS",
    "EXEC_CONFIGS",
    "TELEMETRY_CONFIGS",
    "WORKLOADS",
    "build",
    "configs_for",
    "expected_result",
    "run",
    "task_count",
]

DAG_WORKLOADS = ("independent", "chain", "fanout", "layered")
# "telemetry": the independent workload on plain asyncio and on the engine
# with telemetry off, spans + metrics in memory, and spans + metrics + the
# checkpoint file (N = 100,000 and 1,000,000 for the million-task target).
# "dask-<shape>": the shape on a real local Dask cluster (2 worker processes),
# native Dask futures against the engine; not in the default run (slow).
DASK_WORKLOADS = ("dask-independent", "dask-chain")
WORKLOADS = (*DAG_WORKLOADS, "exec", "telemetry", *DASK_WORKLOADS)
DEFAULT_WORKLOADS = (*DAG_WORKLOADS, "exec", "telemetry")

# Configuration names: the plain baselines, then the engine on its two backends.
ASYNCIO = "asyncio"
THREADS = "threads"
POOL = "pool"
NOOP = "engine-noop"
LOCAL = "engine-local"
CONFIGS = (ASYNCIO, THREADS, NOOP, LOCAL)
EXEC_CONFIGS = (POOL, LOCAL)
# off, in memory, checkpoint file, and the file plus OTLP export to a real
# receiver (bench/otlp_sink.py) over gRPC or HTTP.
TEL_MODES = ("off", "mem", "file", "grpc", "http")
OTLP_MODES = {"grpc": "grpc", "http": "http/protobuf"}
TELEMETRY_CONFIGS = tuple(f"{e}-tel-{m}" for e in (NOOP, LOCAL) for m in TEL_MODES)
DASK_NATIVE = "dask-native"  # client.submit, futures passed along, one gather
ENGINE_DASK = "engine-dask"  # the engine on asyncflow's DaskBackend
ENGINE_RHAPSODY_DASK = "engine-rhapsody-dask"  # the engine on RHAPSODY's DaskExecutionBackend
DASK_CONFIGS = (DASK_NATIVE, ENGINE_DASK, ENGINE_RHAPSODY_DASK)
ALL_CONFIGS = (ASYNCIO, THREADS, POOL, NOOP, LOCAL, *TELEMETRY_CONFIGS, *DASK_CONFIGS)
# The local cluster of the Dask workloads.
DASK_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True}

TRUE = "/bin/true"

Node = Callable[..., Awaitable[Any]]


def configs_for(workload: str) -> tuple[str, ...]:
    """The configurations measured for ``workload``."""
    if workload == "telemetry":
        # Plain asyncio runs the same independent tasks: the reference for
        # the scaling and peak RSS of the engine with telemetry on.
        return (ASYNCIO, *TELEMETRY_CONFIGS)
    if workload in DASK_WORKLOADS:
        return DASK_CONFIGS
    return EXEC_CONFIGS if workload == "exec" else CONFIGS


def layered_shape(n: int) -> tuple[int, int]:
    """``(layers, width)`` of the layered DAG: about sqrt(n) of each, at most n tasks."""
    width = max(1, math.isqrt(n))
    return max(1, n // width), width


def task_count(workload: str, n: int) -> int:
    """How many tasks ``workload`` at size ``n`` creates."""
    if workload == "fanout":
        return n + 2
    if workload == "layered":
        layers, width = layered_shape(n)
        return layers * width
    return n


def build(workload: str, n: int, node: Node) -> list[Awaitable[Any]]:
    """Create the tasks of ``workload`` with ``node(*deps)``; return them in creation order.

    - independent: ``n`` tasks without dependencies.
    - chain: ``n`` tasks, each depending on the previous one.
    - fanout: one root, ``n`` tasks depending on it, one sink depending on all ``n``.
    - layered: about sqrt(n) layers of sqrt(n) tasks; each task past the first
      layer depends on tasks ``j`` and ``j + 1`` (wrapping) of the layer before.
    - exec: ``n`` independent tasks (the node runs ``/bin/true``).
    """
    if workload in ("independent", "exec", "telemetry", "dask-independent"):
        return [node() for _ in range(n)]
    if workload in ("chain", "dask-chain"):
        tasks = [node()]
        for _ in range(n - 1):
            tasks.append(node(tasks[-1]))
        return tasks
    if workload == "fanout":
        root = node()
        middle = [node(root) for _ in range(n)]
        return [root, *middle, node(*middle)]
    if workload == "layered":
        layers, width = layered_shape(n)
        layer = [node() for _ in range(width)]
        tasks = list(layer)
        for _ in range(layers - 1):
            layer = [node(layer[j], layer[(j + 1) % width]) for j in range(width)]
            tasks.extend(layer)
        return tasks
    raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")


def expected_result(config: str, workload: str) -> Any:
    """What every task of ``config`` must return (checked by the child)."""
    if workload == "exec":
        return 0 if config == POOL else ""
    if workload in DASK_WORKLOADS:
        return None  # checked by the run itself: see run_dask
    if config == NOOP or config.startswith(f"{NOOP}-"):
        return "Dummy Output"  # the dry-run backend never runs the function
    return None


# ---------------------------------------------------------------- plain asyncio
async def _noop() -> None:
    return None


async def _after(*deps: Awaitable[Any]) -> None:
    for dep in deps:
        await dep
    return None


async def run_asyncio(workload: str, n: int) -> tuple[float, list[Any]]:
    """Plain ``asyncio``: one task per node, awaiting its dependencies."""
    loop = asyncio.get_running_loop()

    def node(*deps: Awaitable[Any]) -> Awaitable[Any]:
        return loop.create_task(_after(*deps) if deps else _noop())

    start = time.perf_counter()
    results = await asyncio.gather(*build(workload, n, node))
    return time.perf_counter() - start, results


# ---------------------------------------------------------------- plain thread pool
def _sync_noop() -> None:
    return None


async def run_threads(workload: str, n: int) -> tuple[float, list[Any]]:
    """A default ``ThreadPoolExecutor``: ``run_in_executor`` once the dependencies are done."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor()

    async def after(*deps: Awaitable[Any]) -> None:
        for dep in deps:
            await dep
        return await loop.run_in_executor(pool, _sync_noop)

    def node(*deps: Awaitable[Any]) -> Awaitable[Any]:
        if not deps:
            return loop.run_in_executor(pool, _sync_noop)
        return loop.create_task(after(*deps))

    try:
        start = time.perf_counter()
        results = await asyncio.gather(*build(workload, n, node))
        elapsed = time.perf_counter() - start
    finally:
        pool.shutdown(wait=True)
    return elapsed, results


def _run_true() -> int:
    # Output captured like the engine does, so both read the same pipes.
    return subprocess.run([TRUE], capture_output=True, check=False).returncode


async def run_pool(workload: str, n: int) -> tuple[float, list[Any]]:
    """Executables on a pool bounded to the CPU count, each a ``subprocess.run``."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        start = time.perf_counter()
        results = await asyncio.gather(
            *build(workload, n, lambda: loop.run_in_executor(pool, _run_true))
        )
        elapsed = time.perf_counter() - start
    finally:
        pool.shutdown(wait=True)
    return elapsed, results


def peak_rss_mb() -> float:
    """This process's peak RSS so far, in MB."""
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# ---------------------------------------------------------------- the engine
# Set by a run with the checkpoint file: its size in bytes, the writer's peak RSS.
FILE_STATS: dict[str, float] = {}


async def run_engine(
    config: str, workload: str, n: int, work_dir: str
) -> tuple[float, list[Any], float, float, int]:
    """The engine on the no-op or the local (threads) backend.

    For the telemetry workload, ``config`` is ``<engine>-tel-<mode>``: mode
    ``off``, ``mem`` (spans and metrics in memory) or ``file`` (plus the
    checkpoint file). Returns ``(seconds, results, seconds creating the
    engine, seconds shutting it down, spans missing from the checkpoint
    file)``; shutting down includes flushing telemetry and closing the
    checkpoint file.
    """
    created = time.perf_counter()
    noop = config == NOOP or config.startswith(f"{NOOP}-")
    backend = NoopExecutionBackend() if noop else await LocalExecutionBackend()
    engine = await WorkflowEngine.create(backend=backend, work_dir=work_dir)
    mode = config.rsplit("-", 1)[-1] if workload == "telemetry" else "off"
    sink = OtlpSink(mode) if mode in OTLP_MODES else None
    if mode == "mem":
        await engine.start_telemetry()
    elif mode == "file":
        await engine.start_telemetry(checkpoint_path=work_dir)
    elif sink is not None:
        await engine.start_telemetry(
            checkpoint_path=work_dir, otlp_endpoint=sink.endpoint, otlp_protocol=OTLP_MODES[mode]
        )
    create_seconds = time.perf_counter() - created
    stop_seconds = 0.0
    try:
        if workload == "exec":

            @engine.executable_task
            async def true() -> str:
                return TRUE

            node: Node = true
        else:

            @engine.function_task
            async def noop(*deps: Any) -> None:
                return None

            node = noop

        start = time.perf_counter()
        futures: list[Any] = build(workload, n, node)
        results = await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
        not_done = [f for f in futures if f.state != "DONE"]
        if not_done:
            raise AssertionError(f"{len(not_done)} engine futures not DONE, e.g. {not_done[0]!r}")
    finally:
        stopping = time.perf_counter()
        await engine.shutdown()
        stop_seconds = time.perf_counter() - stopping
        received = sink.close() if sink is not None else 0
    if sink is not None and received != task_count(workload, n) + 1:
        raise AssertionError(f"the OTLP receiver got {received} spans, not {n + 1}")
    if mode != "off":
        summary = engine.telemetry.summary()
        if summary["tasks_by_state"].get("completed") != task_count(workload, n):
            raise AssertionError(f"telemetry counted {summary['tasks_by_state']}")
    missing = 0
    if mode != "mem" and mode != "off":
        # The run's peak RSS, before the file is read back for the check
        # below (reading a million tasks' file costs memory of its own).
        FILE_STATS["run_peak_rss_mb"] = max(FILE_STATS.get("run_peak_rss_mb", 0.0), peak_rss_mb())
        # The checkpoint file's size and the writer's peak RSS (the telemetry table).
        rss = engine.telemetry.checkpoint_writer_peak_rss
        FILE_STATS.update(
            checkpoint_bytes=float(engine.telemetry.checkpoint_file.stat().st_size),
            writer_peak_rss_mb=max(FILE_STATS.get("writer_peak_rss_mb", 0.0), (rss or 0) / 2**20),
        )
        spans = sum(1 for _ in read_checkpoint(engine.telemetry.checkpoint_file, ["span"]))
        missing = task_count(workload, n) + 1 - spans  # the tasks and the session
        if missing < 0:
            raise AssertionError(f"checkpoint file holds {spans} spans, not {n + 1}")
        # Fewer: the writer process did not keep up and records were dropped
        # (logged). The engine's figures stand; the driver reports the file.
    return elapsed, results, create_seconds, stop_seconds, missing


class OtlpSink:
    """A real OTLP receiver in a process of its own (``bench.otlp_sink``)."""

    def __init__(self, mode: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.otlp_sink", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "port":
            self._proc.kill()
            raise RuntimeError(f"the OTLP receiver did not start: {line}")
        self.endpoint = f"http://127.0.0.1:{line[1]}"

    def close(self) -> int:
        """The number of spans received; ends the receiver."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write("count\n")
            self._proc.stdin.flush()
            answer = self._proc.stdout.readline().split()
            self._proc.stdin.close()
            self._proc.wait(10)
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
        return int(answer[1]) if len(answer) == 2 else -1


# ---------------------------------------------------------------- Dask
def _inc(x: int = 0) -> int:
    return x + 1


async def _ainc(x: int = 0) -> int:
    return x + 1


def _dask_expected(workload: str, n: int) -> list[int]:
    return list(range(1, n + 1)) if workload == "dask-chain" else [1] * n


async def run_dask(
    config: str, workload: str, n: int, work_dir: str
) -> tuple[float, list[Any], float, float]:
    """Native Dask futures, or the engine on a Dask backend, on one local cluster.

    Every task adds one to its dependency's value (0 without one): a chain
    ends at N, independent tasks all give 1.
    """
    from distributed import Client, LocalCluster

    created = time.perf_counter()
    cluster = await LocalCluster(
        asynchronous=True, dashboard_address="127.0.0.1:0", host="127.0.0.1", **DASK_CLUSTER
    )
    client = await Client(cluster, asynchronous=True)
    engine: Any = None
    try:
        if config == DASK_NATIVE:

            def node(*deps: Any) -> Any:
                return client.submit(_inc, *deps, pure=False)

        else:
            if config == ENGINE_DASK:
                from asyncflow.backends import DaskBackend

                backend: Any = await DaskBackend(client=client)
            else:
                from rhapsody.backends.execution.dask_parallel import DaskExecutionBackend

                backend = await DaskExecutionBackend(client=client)
            engine = await WorkflowEngine.create(backend=backend, work_dir=work_dir)
            node = engine.function_task(_ainc)
        create_seconds = time.perf_counter() - created
        start = time.perf_counter()
        tasks = build(workload, n, node)
        if config == DASK_NATIVE:
            # The futures chain on the cluster; the client fetches every value.
            results = await client.gather(tasks)
        else:
            results = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    finally:
        stopping = time.perf_counter()
        if engine is not None:
            await engine.shutdown()
        await client.close()
        await cluster.close()
        stop_seconds = time.perf_counter() - stopping
    if list(results) != _dask_expected(workload, n):
        raise AssertionError(f"{config}/{workload}: wrong results, e.g. {list(results)[-3:]}")
    return elapsed, list(results), create_seconds, stop_seconds


async def run(config: str, workload: str, n: int, work_dir: str) -> dict[str, float]:
    """Run one repetition and check it; return its timings (and the spans
    missing from a checkpoint file whose writer dropped records).

    Raises:
        AssertionError: a task is missing or returned the wrong value.
    """
    create_seconds = stop_seconds = 0.0
    missing = 0
    if workload in DASK_WORKLOADS:
        if config not in DASK_CONFIGS:
            raise ValueError(f"{workload} runs only {', '.join(DASK_CONFIGS)}")
        elapsed, results, create_seconds, stop_seconds = await run_dask(
            config, workload, n, work_dir
        )
        return {"seconds": elapsed, "create_seconds": create_seconds, "stop_seconds": stop_seconds}
    if config == ASYNCIO:
        elapsed, results = await run_asyncio(workload, n)
    elif config == THREADS:
        elapsed, results = await run_threads(workload, n)
    elif config == POOL:
        elapsed, results = await run_pool(workload, n)
    elif config in (NOOP, LOCAL) or config in TELEMETRY_CONFIGS:
        elapsed, results, create_seconds, stop_seconds, missing = await run_engine(
            config, workload, n, work_dir
        )
    else:
        raise ValueError(f"unknown configuration {config!r}")
    expected_count = task_count(workload, n)
    if len(results) != expected_count:
        raise AssertionError(f"{config}/{workload}: {len(results)} results, not {expected_count}")
    expected = expected_result(config, workload)
    wrong = sum(1 for r in results if r != expected)
    if wrong:
        sample = next(r for r in results if r != expected)
        raise AssertionError(
            f"{config}/{workload}: {wrong} of {len(results)} results are not {expected!r}, "
            f"e.g. {sample!r}"
        )
    return {
        "seconds": elapsed,
        "create_seconds": create_seconds,
        "stop_seconds": stop_seconds,
        "spans_missing": missing,
    }
