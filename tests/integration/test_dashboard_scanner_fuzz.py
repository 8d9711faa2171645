"""The compiled scanner on damaged files: never a crash, always the Python reader's run.

A real run's checkpoint file gets one random edit in one of its task lines
(bytes deleted, inserted or replaced with the characters that matter to
JSON). Whatever the edit, reading the file with the scanner gives the run
read without it: the scanner either takes the line as the Python reader
would or declines the file.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.dashboard import _finished, open_source

from .test_dashboard_scanner import comparable

pytestmark = pytest.mark.skipif(
    _finished.SCANNER is None and os.environ.get("CI") != "true",
    reason="the compiled scanner is not built here (no C compiler at install)",
)

SIGNIFICANT = b'"\\{}[],:-.0123456789eEtnu ax\x01\xc3\xff'


async def small_run(tmp_path: Path) -> Path:
    backend = await LocalExecutionBackend(cpus=2)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "run")

        @engine.function_task
        async def step(*_: Any) -> int:
            return 1

        @engine.function_task
        async def broken(*_: Any) -> int:
            raise ValueError("no")

        pending: list[Any] = []
        for i in range(3):
            async with engine.workflow_scope(name=f"w{i}"):
                pending.append(step(step(), broken(step())))
        await asyncio.gather(*pending, return_exceptions=True)
    assert tel.checkpoint_file is not None
    return Path(tel.checkpoint_file)


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = asyncio.run(small_run(tmp_path_factory.mktemp("fuzz")))
    return path.read_bytes().splitlines(keepends=True)


def read(path: Path, scanner: bool) -> dict[str, Any]:
    kept = _finished.SCANNER
    try:
        if not scanner:
            _finished.SCANNER = None
        return comparable(open_source(path).poll())
    finally:
        _finished.SCANNER = kept


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_an_edited_task_line_reads_the_same(
    lines: list[bytes], tmp_path: Path, data: st.DataObject
) -> None:
    tasks = [i for i, line in enumerate(lines) if line.startswith(b'{"section":"task"')]
    index = data.draw(st.sampled_from(tasks), label="line")
    line = lines[index]
    at = data.draw(st.integers(0, len(line) - 1), label="at")
    kind = data.draw(st.sampled_from(["delete", "insert", "replace"]), label="edit")
    byte = bytes([data.draw(st.sampled_from(SIGNIFICANT), label="byte")])
    size = data.draw(st.integers(1, 4), label="size")
    if kind == "delete":
        edited = line[:at] + line[at + size :]
    elif kind == "insert":
        edited = line[:at] + byte * size + line[at:]
    else:
        edited = line[:at] + byte * size + line[at + size :]
    path = tmp_path / f"edited-{index}-{at}.telemetry.jsonl"
    path.write_bytes(b"".join([*lines[:index], edited, *lines[index + 1 :]]))
    assert read(path, scanner=True) == read(path, scanner=False)
