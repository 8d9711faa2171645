"""One parametrised engine fixture: every behavioural test runs on both
built-in backends (the way anyio's ``anyio_backend`` fixture works)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncflow import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine

from ..support.otlp_receiver import GrpcReceiver, HttpReceiver, OTLPReceiver

# Every engine of the integration tests (and of the programs they start)
# checks each graph transition against the transition table, as dask's
# worker state machine tests do.
os.environ["ASYNCFLOW_VALIDATE_GRAPH"] = "1"

DUMMY = "Dummy Output"

# The fields API.md promises in engine.components[uid]["description"]; the
# declared TaskDescription must have them all (test_engine checks it).
DESCRIPTION_KEYS = frozenset(
    {
        "uid",
        "name",
        "function",
        "args",
        "kwargs",
        "executable",
        "arguments",
        "prompt",
        "is_service",
        "task_backend_specific_kwargs",
        "target_backend",
        "capture_stdio",
        "workflow_id",
        "metadata",
    }
)


@pytest.fixture(params=["noop", "local"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def engine(backend_kind: str, tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    backend: Any
    if backend_kind == "noop":
        backend = NoopExecutionBackend()
    else:
        backend = await LocalExecutionBackend()
    eng = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:
        yield eng
    finally:
        await eng.shutdown()


@pytest.fixture
async def local_engine(tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    eng = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    try:
        yield eng
    finally:
        await eng.shutdown()


def expected(engine: WorkflowEngine, value: Any) -> Any:
    """What a function task returns: its value, or the no-op backend's dummy."""
    return DUMMY if isinstance(engine.backend, NoopExecutionBackend) else value


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------- OTLP receivers


@pytest.fixture(params=["grpc", "http/protobuf"])
def protocol(request: pytest.FixtureRequest) -> str:
    """Each OTLP protocol in turn (the OTLP tests speak both)."""
    return str(request.param)


@pytest.fixture
def receiver(protocol: str) -> Iterator[OTLPReceiver]:
    """A real OTLP receiver on 127.0.0.1 for ``protocol``, stopped after the test."""
    rec: OTLPReceiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    with rec:
        yield rec
