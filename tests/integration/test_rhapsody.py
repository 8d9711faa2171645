"""The engine on the RHAPSODY backends: the same workflows, real executors.

Every workflow runs on ``ConcurrentExecutionBackend`` (a thread pool) and on
``DaskExecutionBackend`` (a local Dask cluster with worker processes, marker
``dask``) through the parametrised ``backend`` fixture. The two differ in
what they write into the task dict and when they report ``RUNNING``; the
engine must hide those differences.

Task bodies are defined inside the tests on purpose: Dask ships closures by
value with cloudpickle, so the workers never need to import this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # in CI the 'hpc' extra is installed: never skip there
    pytest.importorskip("rhapsody", reason="needs the 'hpc' extra (rhapsody-py[dask])")
    pytest.importorskip("distributed", reason="needs the 'hpc' extra (rhapsody-py[dask])")

from distributed import Client, LocalCluster, Worker
from rhapsody.backends import ConcurrentExecutionBackend, DaskExecutionBackend

from asyncflow import DependencyFailureError, WorkflowEngine
from asyncflow.errors import ExecutableError
from asyncflow.telemetry import names

from .conftest import DESCRIPTION_KEYS

# Worker processes on the loopback interface only, dashboard on a free port.
LOCAL_DASK: dict[str, Any] = {
    "n_workers": 2,
    "threads_per_worker": 1,
    "processes": True,
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:0",
}

PYTHON = sys.executable


def python_command(script: str, *args: str) -> str:
    """A command string that runs ``script`` with this interpreter."""
    return shlex.join([PYTHON, "-c", script, *args])


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


@pytest.fixture(params=["concurrent", pytest.param("dask", marks=pytest.mark.dask)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A RHAPSODY backend; Dask gets a fresh local cluster (about 0.5 s)."""
    if request.param == "concurrent":
        be = await ConcurrentExecutionBackend(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="rhapsody-test")
        )
    else:
        be = await DaskExecutionBackend(resources=LOCAL_DASK)
    try:
        yield be
    finally:
        # Normally a no-op: the engine shut the backend down already.
        await be.shutdown()


@pytest.fixture
async def engine(backend: Any, tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    eng = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:
        yield eng
    finally:
        await eng.shutdown()


# ---------------------------------------------------------------------- values


async def test_function_chain_and_fan_in(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def square(x: int) -> int:
        return x * x

    @engine.function_task
    async def add(a: int, b: int) -> int:
        return a + b

    @engine.function_task
    async def combine(values: list[int], *, scale: int, extra: dict[str, int]) -> dict[str, int]:
        return {"sum": sum(values) * scale, "extra": extra["k"]}

    a = square(3)  # 9
    b = add(a, 1)  # 10
    c = add(b, a)  # 19, the fan-in of a diamond
    d = combine([a, b, c], scale=c, extra={"k": b})

    assert await d == {"sum": (9 + 10 + 19) * 19, "extra": 10}
    assert [await f for f in (a, b, c)] == [9, 10, 19]
    assert [f.state for f in (a, b, c, d)] == ["DONE"] * 4
    deps = engine.components[d.uid]["description"]["metadata"]["dependencies"]
    assert {dep["uid"] for dep in deps} == {a.uid, b.uid, c.uid}


async def test_executable_gets_exact_argv(engine: WorkflowEngine) -> None:
    args = ["plain", "two words", 'say "hi"', "it's", "$HOME", "*", ""]

    @engine.function_task
    async def produce() -> int:
        return 42

    @engine.executable_task
    async def show_argv(value: int) -> str:
        return python_command(
            "import json, sys; print(json.dumps(sys.argv[1:]))", *args, str(value)
        )

    fut = show_argv(produce())
    out = await fut

    assert isinstance(out, str)
    assert json.loads(out) == [*args, "42"]
    desc = engine.components[fut.uid]["description"]
    assert desc["executable"] == PYTHON
    assert desc["arguments"][2:] == [*args, "42"]


async def test_awaited_values_are_normalised(engine: WorkflowEngine, backend: Any) -> None:
    @engine.function_task
    async def give(value: Any) -> Any:
        return value

    @engine.executable_task
    async def silent() -> str:
        return python_command("pass")

    # Falsy returns must come through as themselves, not as the stdout text
    # some backends write next to them.
    values: list[Any] = [None, 0, "", [], {"nested": [1, 2.5, "x"]}]
    futures = [give(v) for v in values]
    quiet = silent()

    assert await asyncio.gather(*futures) == values
    assert await quiet == ""
    for fut, value in zip(futures, values, strict=True):
        desc = engine.components[fut.uid]["description"]
        assert desc.keys() >= DESCRIPTION_KEYS
        assert desc["uid"] == fut.uid
        assert desc["name"] == "give"
        assert desc["args"] == (value,)
        assert desc["executable"] is None
        assert desc["target_backend"] is None
        assert desc["capture_stdio"] is False
        assert desc["return_value"] == value
    exec_desc = engine.components[quiet.uid]["description"]
    assert exec_desc.keys() >= DESCRIPTION_KEYS
    assert exec_desc["executable"] == PYTHON
    assert exec_desc["exit_code"] == 0
    # The difference the engine hides: Dask writes no exit code for functions.
    first = engine.components[futures[0].uid]["description"]
    if isinstance(backend, DaskExecutionBackend):
        assert first.get("exit_code") is None
    else:
        assert first["exit_code"] == 0


# ---------------------------------------------------------------------- failures


async def test_failing_function(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def explode(x: int) -> int:
        raise ValueError(f"bad value {x}")

    @engine.function_task
    async def after(x: int) -> int:
        return x

    boom = explode(7)
    child = after(boom)
    grandchild = after(child)

    with pytest.raises(ValueError, match="bad value 7"):
        await boom
    with pytest.raises(DependencyFailureError) as info:
        await child
    assert str(info.value) == "Cannot execute 'after' due to dependency failure"
    assert info.value.failed_dependencies == ["explode"]
    assert isinstance(info.value.root_cause, ValueError)
    assert info.value.root_cause is boom.exception()
    with pytest.raises(DependencyFailureError) as nested:
        await grandchild
    assert nested.value.original_exception is boom.exception()
    assert [f.state for f in (boom, child, grandchild)] == ["FAILED"] * 3


async def test_failing_executable(engine: WorkflowEngine) -> None:
    @engine.executable_task
    async def fail(code: int) -> str:
        return python_command(f"import sys; print('partial'); sys.exit('bad input {code}')")

    @engine.function_task
    async def after(x: str) -> str:
        return x

    bad = fail(3)
    child = after(bad)

    with pytest.raises(ExecutableError) as info:
        await bad
    assert info.value.exit_code == 1  # sys.exit(<str>) prints it and exits with 1
    assert "bad input 3" in info.value.stderr
    with pytest.raises(DependencyFailureError) as dep:
        await child
    assert dep.value.root_cause is info.value


async def test_failing_executable_exit_code(engine: WorkflowEngine) -> None:
    @engine.executable_task
    async def fail() -> str:
        return python_command("import sys; sys.stderr.write('no such input\\n'); sys.exit(3)")

    with pytest.raises(ExecutableError) as info:
        await fail()
    assert info.value.exit_code == 3
    assert info.value.stderr == "no such input\n"


# ---------------------------------------------------------------------- cancellation


async def test_cancel_pending_task(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @engine.function_task
    async def add_one(x: float) -> float:
        return x + 1

    slow = nap(0.3)
    pending = add_one(slow)
    after = add_one(pending)
    assert pending.state == "PENDING"

    assert pending.cancel()

    # Nothing reached a backend: both are cancelled at once, not later.
    assert pending.cancelled()
    assert after.cancelled()
    assert await slow == 0.3  # the upstream task is not affected
    with pytest.raises(asyncio.CancelledError):
        await after


async def test_cancel_running_function(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @engine.function_task
    async def add_one(x: float) -> float:
        return x + 1

    # Neither backend interrupts a function that already runs, so it only
    # naps for a second: nothing is left running once the engine shuts down.
    running = nap(1.0)
    dependent = add_one(running)
    await wait_until(lambda: running.state == "RUNNING")

    assert running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running
    with pytest.raises(asyncio.CancelledError):
        await dependent
    assert running.state == "CANCELLED"
    assert dependent.state == "CANCELLED"
    # The backend confirmed the cancellation; the engine did not just wait
    # for the nap to end and drop its result.
    assert "return_value" not in engine.components[running.uid]["description"]
    # The engine keeps working after a cancellation.
    assert await add_one(1) == 2


# ---------------------------------------------------------------------- files


async def test_capture_stdio(engine: WorkflowEngine, tmp_path: Path) -> None:
    @engine.executable_task(capture_stdio=True)
    async def report(label: str) -> str:
        return python_command(
            "import sys; print('result', sys.argv[1]); print('warning', file=sys.stderr)", label
        )

    fut = report("one two")
    path = await fut

    expected = tmp_path / engine.uid / f"{fut.uid}.stdout"
    assert path == str(expected)
    assert expected.read_text() == "result one two\n"
    assert (tmp_path / engine.uid / f"{fut.uid}.stderr").read_text() == "warning\n"
    assert engine.components[fut.uid]["description"]["capture_stdio"] is True


async def test_capture_stdio_failure(engine: WorkflowEngine, tmp_path: Path) -> None:
    @engine.executable_task(capture_stdio=True)
    async def fail() -> str:
        return python_command("import sys; sys.stderr.write('bad input\\n'); sys.exit(3)")

    fut = fail()
    with pytest.raises(ExecutableError) as info:
        await fut

    stderr_file = tmp_path / engine.uid / f"{fut.uid}.stderr"
    assert stderr_file.read_text() == "bad input\n"
    assert info.value.exit_code == 3
    # The error carries the text (or nothing, as LocalExecutionBackend does),
    # never the path some backends write into the task's stderr field.
    assert info.value.stderr in ("", "bad input\n")
    assert info.value.stdout == ""


# ---------------------------------------------------------------------- Dask topologies


@pytest.mark.dask
async def test_dask_existing_scheduler(tmp_path: Path) -> None:
    async with LocalCluster(asynchronous=True, **{**LOCAL_DASK, "n_workers": 1}) as cluster:
        backend = await DaskExecutionBackend(resources={"address": cluster.scheduler_address})
        async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

            @engine.function_task
            async def where() -> int:
                return os.getpid()

            @engine.executable_task
            async def echo(pid: int) -> str:
                return python_command("import sys; print(sys.argv[1])", str(pid))

            pid = await where()
            assert pid != os.getpid()  # ran in a worker process
            assert (await echo(pid)).strip() == str(pid)

        # The backend only connected to the scheduler: the cluster outlives it.
        async with Client(cluster, asynchronous=True) as client:
            assert await client.submit(pow, 2, 10) == 1024


@pytest.mark.dask
async def test_routing_between_concurrent_and_dask(tmp_path: Path) -> None:
    remote = await DaskExecutionBackend(resources=LOCAL_DASK)
    local = await ConcurrentExecutionBackend(ThreadPoolExecutor(max_workers=2))
    async with await WorkflowEngine.create(backend=[local, remote], work_dir=tmp_path) as engine:

        @engine.function_task
        async def here() -> int:
            return os.getpid()

        @engine.function_task(backend="dask")
        async def there(parent: int) -> tuple[int, int]:
            return parent, os.getpid()

        routed = there(here())
        parent, worker = await routed

        assert parent == os.getpid()  # the default backend runs threads of this process
        assert worker != os.getpid()
        assert engine.backend is local
        assert engine.components[routed.uid]["description"]["target_backend"] == "dask"


@pytest.mark.dask
async def test_dask_two_engines_share_a_scheduler(tmp_path: Path) -> None:
    """Two sessions on one long-lived scheduler each get their own results.

    Both engines number their tasks from ``task.000001``, and RHAPSODY uses
    the task uid as the Dask key unless told otherwise.
    """
    async with LocalCluster(asynchronous=True, **LOCAL_DASK) as cluster:
        engines = [
            await WorkflowEngine.create(
                backend=await DaskExecutionBackend(
                    resources={"address": cluster.scheduler_address}
                ),
                work_dir=tmp_path,
            )
            for _ in range(2)
        ]
        try:
            futures = []
            for engine, tag in zip(engines, ["first", "second"], strict=True):

                @engine.function_task
                async def label(value: str) -> str:
                    await asyncio.sleep(0.3)
                    return value

                futures.append(label(tag))
            assert futures[0].uid == futures[1].uid

            assert await asyncio.gather(*futures) == ["first", "second"]
        finally:
            await asyncio.gather(*(engine.shutdown() for engine in engines))


@pytest.mark.dask
async def test_dask_engine_resource_keys(tmp_path: Path) -> None:
    """Campaign code moves to Dask unchanged: ``gpus`` becomes Dask resources.

    One worker advertises a GPU, one does not. A ``gpus: 1`` task lands on the
    GPU worker, ``cpus`` never reaches the function as a keyword argument, and
    asking for more GPUs than any worker has fails that task with Dask's
    message while the others go on.
    """
    no_workers = {**LOCAL_DASK, "n_workers": 0}
    async with (
        LocalCluster(asynchronous=True, **no_workers) as cluster,
        Worker(cluster.scheduler_address, nthreads=1, resources={"GPU": 1}, host="127.0.0.1"),
        Worker(cluster.scheduler_address, nthreads=1, host="127.0.0.1"),
    ):
        backend = await DaskExecutionBackend(resources={"address": cluster.scheduler_address})
        engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
        tel = await engine.start_telemetry()
        try:

            @engine.function_task
            async def gpu_resources() -> dict[str, float]:
                from distributed import get_worker

                return dict(get_worker().state.total_resources)

            placed = [gpu_resources(task_description={"gpus": 1, "cpus": 2}) for _ in range(4)]
            too_big = gpu_resources(task_description={"gpus": 2})
            results = await asyncio.gather(*placed, too_big, return_exceptions=True)
        finally:
            await engine.shutdown()

    assert results[:4] == [{"GPU": 1}] * 4
    assert isinstance(results[4], Exception) and "{'GPU': 2}" in str(results[4])
    sent = engine.components[placed[0].uid]["description"]["task_backend_specific_kwargs"]
    assert sent["resources"] == {"GPU": 1} and "cpus" not in sent and "gpus" not in sent
    # The task's own description, and so its span, keeps the engine's keys.
    assert placed[0].task_description == {"gpus": 1, "cpus": 2}
    span = next(s for s in tel.task_spans() if s["attributes"][names.TASK_UID] == placed[0].uid)
    assert span["attributes"][names.TASK_GPUS] == 1
