"""The command contract of executable tasks, on every backend that runs them.

A string runs through ``/bin/sh -c`` exactly as written; a list is an exact
argv; ``task_description={"shell": False}`` runs a string as its
``shlex.split`` argv. Checked on ``LocalExecutionBackend`` (threads and
processes), on ``DaskBackend`` and on RHAPSODY's Concurrent and Dask
backends, with real processes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine

BACKENDS = [
    "local-threads",
    "local-processes",
    "rhapsody-concurrent",
    pytest.param("rhapsody-dask", marks=pytest.mark.dask),
    pytest.param("asyncflow-dask", marks=pytest.mark.dask),
]

# Shell syntax of every kind the contract names: a variable, a pipe, a
# redirect, '&&', a glob and quoted arguments with spaces.
SHELL_LINE = (
    "printf '%s\\n' \"$GREETING\" | tr a-z A-Z > shout.txt && cat shout.txt"
    " && echo *.dat && printf '[%s]\\n' \"two  spaces\" 'single quoted'"
)
SHELL_OUTPUT = "HELLO WORLD\na.dat b.dat\n[two  spaces]\n[single quoted]\n"


async def make_backend(kind: str) -> Any:
    if kind == "local-threads":
        return await LocalExecutionBackend()
    if kind == "local-processes":
        return await LocalExecutionBackend(ProcessPoolExecutor(max_workers=1))
    if kind == "asyncflow-dask":
        from asyncflow.backends import DaskBackend

        return await DaskBackend(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
    from rhapsody.backends import ConcurrentExecutionBackend, DaskExecutionBackend

    if kind == "rhapsody-concurrent":
        return await ConcurrentExecutionBackend(ThreadPoolExecutor(max_workers=2))
    return await DaskExecutionBackend(
        resources={
            "n_workers": 1,
            "threads_per_worker": 2,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
        }
    )


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    backend = await make_backend(str(request.param))
    eng = await WorkflowEngine.create(backend=backend, work_dir=tmp_path / "session")
    try:
        yield eng
    finally:
        await eng.shutdown()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.dat").write_text("a")
    (data / "b.dat").write_text("b")
    return data


def options(workdir: Path, **extra: Any) -> dict[str, Any]:
    # RHAPSODY backends replace the environment rather than extend it.
    env = {**os.environ, "GREETING": "hello world"}
    return {"cwd": str(workdir), "env": env, **extra}


async def test_a_string_is_a_shell_line_run_as_written(
    engine: WorkflowEngine, workdir: Path
) -> None:
    @engine.executable_task
    async def shout() -> str:
        return SHELL_LINE

    fut = shout(task_description=options(workdir))
    assert await fut == SHELL_OUTPUT
    assert (workdir / "shout.txt").read_text() == "HELLO WORLD\n"
    desc = engine.components[fut.uid]["description"]
    assert desc["executable"] == "printf"
    assert desc["arguments"][:2] == ["%s\\n", "$GREETING"]
    assert desc["command"] == SHELL_LINE and desc["shell"] is True


async def test_a_list_is_an_exact_argv_without_a_shell(
    engine: WorkflowEngine, workdir: Path
) -> None:
    argv = ["printf", "[%s]\\n", "$GREETING", "two  spaces", "*.dat", "&&", ">", "it's"]

    @engine.executable_task
    async def literal() -> list[str]:
        return argv

    fut = literal(task_description=options(workdir))
    assert await fut == "[$GREETING]\n[two  spaces]\n[*.dat]\n[&&]\n[>]\n[it's]\n"
    desc = engine.components[fut.uid]["description"]
    assert [desc["executable"], *desc["arguments"]] == argv
    assert desc["command"] is None and desc["shell"] is False
    assert not (workdir / "shout.txt").exists()


async def test_shell_false_runs_the_shlex_argv(engine: WorkflowEngine, workdir: Path) -> None:
    @engine.executable_task
    async def split() -> str:
        return "printf '[%s]\\n' \"$GREETING\" \"two  spaces\" *.dat '>' out.txt"

    out = await split(task_description=options(workdir, shell=False))
    assert out == "[$GREETING]\n[two  spaces]\n[*.dat]\n[>]\n[out.txt]\n"
    assert not (workdir / "out.txt").exists()


async def test_a_failing_shell_line_reports_its_exit_code(
    engine: WorkflowEngine, workdir: Path
) -> None:
    from asyncflow.errors import ExecutableError

    @engine.executable_task
    async def fail() -> str:
        return "echo partial && echo broken >&2 && exit 3"

    with pytest.raises(ExecutableError) as err:
        await fail(task_description=options(workdir))
    assert err.value.exit_code == 3
    assert err.value.stderr == "broken\n"
