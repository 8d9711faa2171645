"""Bad input gets a clear error naming the problem, at construction or call.

Flags take only ``bool``; counts only non-negative ``int``; workflow ids and
names only ``str``; a uid cannot escape its directory; more executables than
the open-file limit allows wait instead of failing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine

from .conftest import expected

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("uid", ["../outside", "a/b", "/tmp/abs", "..", ""])
async def test_a_uid_that_is_a_path_is_rejected(uid: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uid"):
        await WorkflowEngine.create(dry_run=True, uid=uid, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["dry_run", "implicit_data"])
async def test_engine_flags_take_only_bool(option: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=option):
        await WorkflowEngine.create(work_dir=tmp_path, **{option: "false"})


@pytest.mark.parametrize(
    ("cpus", "error"),
    [(1.7, TypeError), ("2", TypeError), (True, TypeError), (-1, ValueError)],
)
async def test_task_cpus_and_gpus_are_non_negative_integers_on_every_backend(
    engine: WorkflowEngine, cpus: Any, error: type[Exception]
) -> None:
    @engine.function_task
    async def t(task_description: dict[str, Any] | None = None) -> int:
        return 1

    for key in ("cpus", "gpus"):
        with pytest.raises(error, match=key):
            await t(task_description={key: cpus})
    with pytest.raises(error, match="cpus"):

        @engine.function_task
        async def bad(task_description: dict[str, Any] | None = {"cpus": cpus}) -> None:  # noqa: B006
            pass


async def test_task_flags_take_only_bool(engine: WorkflowEngine) -> None:
    with pytest.raises(TypeError, match="capture_stdio"):

        @engine.executable_task(capture_stdio="false")  # type: ignore[call-overload]
        async def t() -> str:
            return "true"


class _Tag(str):
    """A str subclass (as numpy's strings are)."""


@pytest.mark.parametrize(("option", "value"), [("workflow_id", 42), ("name", 5), ("name", b"x")])
async def test_workflow_ids_and_names_take_only_strings(
    engine: WorkflowEngine, option: str, value: Any
) -> None:
    @engine.function_task
    async def t() -> int:
        return 1

    with pytest.raises(TypeError, match=f"workflow_scope\\(\\) {option} must be a string"):
        async with engine.workflow_scope(**{option: value}):
            pytest.fail("the scope opened")
    # A call's workflow_id is held to the same rule: that task fails.
    with pytest.raises(TypeError, match="workflow_id for 't' must be a string, not int 43"):
        await t(workflow_id=43)
    async with engine.workflow_scope(_Tag("wf-tagged"), name=_Tag("tagged")) as wf_id:
        fut = t()
    assert type(wf_id) is str and wf_id == "wf-tagged"
    assert type(fut.workflow_name) is str
    assert await fut == expected(engine, 1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_executables": True}, TypeError),
        ({"max_executables": 2.5}, TypeError),
        ({"max_executables": 0}, ValueError),
        ({"kill_grace": "3"}, TypeError),
        ({"kill_grace": -1}, ValueError),
        ({"kill_grace": float("nan")}, ValueError),
        ({"cpus": 1.7}, TypeError),
        ({"cpus": -2}, ValueError),
        ({"gpus": "1"}, TypeError),
    ],
)
def test_backend_options_are_checked_at_construction(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match=next(iter(kwargs))):
        LocalExecutionBackend(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"prometheus_port": "9464"}, TypeError),
        ({"prometheus_port": 70000}, ValueError),
        ({"prometheus_port": True}, TypeError),
        ({"span_buffer": 0}, ValueError),
        ({"resource_poll_interval": -1}, ValueError),
    ],
)
async def test_telemetry_options_are_checked_before_anything_starts(
    kwargs: dict[str, Any], error: type[Exception], tmp_path: Path
) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        with pytest.raises(error, match=next(iter(kwargs))):
            await engine.start_telemetry(**kwargs)
        assert engine.telemetry is None
    finally:
        await engine.shutdown()


FD_LIMITED = textwrap.dedent(
    """
    import asyncio, resource
    from asyncflow import LocalExecutionBackend, WorkflowEngine

    async def main():
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
        backend = await LocalExecutionBackend(max_executables=500)
        engine = await WorkflowEngine.create(backend=backend)

        @engine.executable_task
        async def t():
            return "sleep 0.2"

        results = await asyncio.gather(*[t() for _ in range(150)], return_exceptions=True)
        await engine.shutdown()
        failed = [r for r in results if isinstance(r, BaseException)]
        print(len(failed), repr(failed[:1]))

    asyncio.run(main())
    """
)


def test_more_executables_than_file_descriptors_wait_instead_of_failing(tmp_path: Path) -> None:
    script = tmp_path / "fd_limited.py"
    script.write_text(FD_LIMITED)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "0", done.stdout
